"""Overviews of a project: its scans filtered for the project page, an experiment's grid, MIQA's task
overview with per-reviewer counts, progress per project and decisions per day; each in a fixed number
of queries whatever the project's size."""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload, selectinload

from app.db import Decision, Experiment, Frame, Membership, ModelVersion, Project, Scan, User, db, utcnow
from app.services import decisions, vocabulary
from app.services.errors import InvalidInput
from app.services.review.states import (
    Settled, latest_decisions, latest_settled, present_keys, scan_states, scans_with_present, settled_counts,
    state_of,
)
from app.services.review.suggestions import SUGGESTION_THRESHOLD, Suggestion, champion, latest_evaluations, suggestion

FILTERS = ("state", "scan_type", "decision", "artifact", "suggestion", "experiment")


@dataclass
class ScanRow:
    scan: Scan
    state: str
    latest: Decision | None
    present: list[str]
    suggestion: Suggestion | None


@dataclass
class ProjectOverview:
    """One page of the project's experiments (those with a scan the filters match), their matching scans,
    and the whole project's counts."""

    project: Project
    experiments: list[Experiment]
    rows: dict[int, list[ScanRow]]
    counts: Counter
    total: int
    shown: int
    champion: ModelVersion | None
    page: int
    pages: int
    per_page: int
    experiments_matched: int
    scan_types: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Light:
    """A scan as the filters first read it: plain values, for every scan of the project."""

    scan_id: int
    experiment_id: int
    scan_type: str | None
    settled: Settled | None

    @property
    def state(self) -> str:
        return state_of(self.settled)


def project_overview(project: Project, filters: dict[str, str], page: int | str = 1,
                     per_page: int = 25) -> ProjectOverview:
    """Page ``page`` of the experiments with a scan matching ``filters`` (every experiment without filters),
    each with its matching scans, states, latest decisions and the champion's suggestions.

    Every scan of the project is first read as plain values (state, type, decision key) to count and
    filter; scan objects, decisions and suggestions are loaded for the page's experiments only (the
    ``suggestion`` filter also reads every scan's newest evaluation)."""
    unknown = set(filters) - set(FILTERS)
    if unknown:
        raise InvalidInput(f"unknown filter(s): {', '.join(sorted(unknown))}")
    if not re.fullmatch(r"[0-9]{1,9}", str(page)) or int(page) < 1:
        raise InvalidInput(f"page must be a positive whole number, not {str(page)[:20]!r}", field="page")
    page, per_page = int(page), max(1, per_page)
    live = select(Scan.id).join(Experiment).where(Experiment.project_id == project.id, Scan.archived_at.is_(None))
    settled = latest_settled(live)
    light = [_Light(scan_id, experiment_id, scan_type, settled.get(scan_id)) for scan_id, experiment_id, scan_type
             in db.session.execute(select(Scan.id, Scan.experiment_id, Scan.scan_type).join(Experiment)
                                   .where(Experiment.project_id == project.id, Scan.archived_at.is_(None))
                                   .order_by(Experiment.name, Scan.name, Scan.id))]
    model = champion(project.id)
    keys = [entry.key for entry in vocabulary.artifact_entries(project.id)]
    matching = [row for row in light if _matches_light(row, filters)]
    if filters.get("artifact"):
        present = scans_with_present(live, filters["artifact"])
        matching = [row for row in matching if row.scan_id in present]
    if filters.get("suggestion"):
        evaluations = latest_evaluations(model, live)
        matching = [row for row in matching if _suggests(
            suggestion(model, evaluations[row.scan_id], keys) if row.scan_id in evaluations else None,
            filters["suggestion"])]
    # the experiments to list, in name order: with filters, those holding a matching scan
    listed = list(db.session.scalars(select(Experiment.id).where(Experiment.project_id == project.id)
                                     .order_by(Experiment.name)))
    if filters:
        holding = {row.experiment_id for row in matching}
        listed = [experiment_id for experiment_id in listed if experiment_id in holding]
    pages = max(1, -(-len(listed) // per_page))
    if page > pages:
        raise InvalidInput(f"page {page} does not exist: the list has {pages} page(s)", field="page")
    on_page = listed[(page - 1) * per_page:page * per_page]
    by_id = {experiment.id: experiment for experiment in db.session.scalars(
        select(Experiment).where(Experiment.id.in_(on_page)).options(joinedload(Experiment.lock_owner)))}
    experiments = [by_id[experiment_id] for experiment_id in on_page]
    # the page's scans by their experiments (a handful of ids, however many scans they hold)
    page_scans = select(Scan.id).where(Scan.experiment_id.in_(on_page), Scan.archived_at.is_(None))
    scans = {scan.id: scan for scan in db.session.scalars(
        select(Scan).where(Scan.id.in_(page_scans)).options(selectinload(Scan.frames)))}
    latest = latest_decisions(page_scans, with_artifacts=True)
    evaluations = latest_evaluations(model, page_scans)
    rows: dict[int, list[ScanRow]] = defaultdict(list)
    for row in matching:
        if row.scan_id in scans:
            scan, decision, evaluation = scans[row.scan_id], latest.get(row.scan_id), evaluations.get(row.scan_id)
            rows[scan.experiment_id].append(ScanRow(scan, decisions.scan_state(decision), decision,
                                                    present_keys(decision),
                                                    suggestion(model, evaluation, keys) if evaluation else None))
    return ProjectOverview(project, experiments, rows, Counter(row.state for row in light), len(light),
                           len(matching), model, page, pages, per_page, len(listed),
                           sorted({row.scan_type for row in light if row.scan_type}))


def _matches_light(row: _Light, filters: dict[str, str]) -> bool:
    if filters.get("experiment") and str(row.experiment_id) != filters["experiment"]:
        return False
    if filters.get("state") and row.state != filters["state"]:
        return False
    if filters.get("scan_type") and row.scan_type != filters["scan_type"]:
        return False
    if filters.get("decision") and (row.settled.key if row.settled else "none") != filters["decision"]:
        return False
    return True


def _suggests(found: Suggestion | None, wanted: str) -> bool:
    if found is None:
        return wanted == "none"
    if wanted == "usable":
        return found.usable is not None and found.usable >= SUGGESTION_THRESHOLD
    if wanted == "unusable":
        return found.usable is not None and found.usable < SUGGESTION_THRESHOLD
    artifact = found.artifacts.get(wanted)
    return artifact is not None and artifact.state == "present"


@dataclass
class GridCell:
    scan: Scan
    state: str
    latest: Decision | None
    present: list[str]
    frame: Frame | None  # the first frame: its middle axial slice is the thumbnail


def experiment_grid(experiment: Experiment) -> tuple[list[GridCell], Counter]:
    """The experiment's scans in name order, each with its state, latest decision (artifacts
    present) and first frame, and the count per state; a fixed number of queries for any size."""
    scans = list(db.session.scalars(
        select(Scan).where(Scan.experiment_id == experiment.id, Scan.archived_at.is_(None))
        .order_by(Scan.name).options(selectinload(Scan.frames))))
    latest = latest_decisions(select(Scan.id).where(Scan.experiment_id == experiment.id), with_artifacts=True)
    cells = []
    for scan in scans:
        decision = latest.get(scan.id)
        cells.append(GridCell(scan, decisions.scan_state(decision), decision, present_keys(decision),
                              scan.frames[0] if scan.frames else None))
    return cells, Counter(cell.state for cell in cells)


# ---------------------------------------------------------------- task overview, progress, timeline

@dataclass(frozen=True)
class Reviewer:
    id: int
    username: str  # "?" for a deleted account
    name: str


@dataclass(frozen=True)
class ReviewerStats:
    user: Reviewer
    role: str | None
    decisions: int
    scans: int
    latest_on: int  # scans whose latest decision is this reviewer's
    last_decision: datetime | None


@dataclass(frozen=True)
class TaskOverview:
    total_scans: int
    my_project_role: str | None
    scan_states: dict[int, str]
    state_counts: dict[str, int]
    reviewers: list[ReviewerStats]


def task_overview(project: Project, role: str | None) -> TaskOverview:
    """MIQA's task overview (states per scan, the caller's role) plus per-reviewer counts."""
    live = select(Scan.id).join(Experiment).where(Experiment.project_id == project.id, Scan.archived_at.is_(None))
    states = scan_states(live)
    counts = Counter(states.values())
    query = (select(Decision.creator_id, func.count(Decision.id), func.count(func.distinct(Decision.scan_id)),
                    func.max(Decision.created_at))
             .join(Scan).join(Experiment).where(Experiment.project_id == project.id, Decision.creator_id.isnot(None))
             .group_by(Decision.creator_id))
    stats = {row[0]: row[1:] for row in db.session.execute(query)}
    people = {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(list(stats))))} if stats else {}
    roles = dict(db.session.execute(select(Membership.user_id, Membership.role)
                                    .where(Membership.project_id == project.id)).all())
    settled_by = settled_counts(live)
    reviewers = []
    for user_id, (n_decisions, n_scans, last) in sorted(stats.items(), key=lambda item: -item[1][0]):
        user = people.get(user_id)
        reviewers.append(ReviewerStats(Reviewer(user_id, user.username if user else "?",
                                                user.display_name if user else "?"),
                                       roles.get(user_id), n_decisions, n_scans, settled_by.get(user_id, 0), last))
    return TaskOverview(len(states), role, states, {state: counts.get(state, 0) for state in decisions.SCAN_STATES},
                        reviewers)


def progress(project_ids: list[int]) -> dict[int, Counter]:
    """Project id -> Counter of scan states, for the projects page (three queries in all)."""
    if not project_ids:
        return {}
    scans = list(db.session.execute(select(Scan.id, Experiment.project_id).join(Experiment)
                                    .where(Experiment.project_id.in_(project_ids), Scan.archived_at.is_(None))))
    settled = latest_settled(select(Scan.id).join(Experiment).where(Experiment.project_id.in_(project_ids)))
    result: dict[int, Counter] = {project_id: Counter() for project_id in project_ids}
    for scan_id, project_id in scans:
        result[project_id][state_of(settled.get(scan_id))] += 1
    return result


@dataclass(frozen=True)
class Timeline:
    """A project's decisions per reviewer (or "imported") per day; ``days`` are ISO dates, oldest first."""

    days: list[str]
    series: dict[str, list[int]]


def timeline(project_ids: list[int], days: int = 30) -> dict[int, Timeline]:
    """Project id -> decisions per reviewer per day over the last ``days`` days (for the chart)."""
    if not project_ids:
        return {}
    since = utcnow() - timedelta(days=days)
    rows = db.session.execute(
        select(Experiment.project_id, Decision.created_at, User.username).select_from(Decision)
        .join(Scan).join(Experiment).outerjoin(User, User.id == Decision.creator_id)
        .where(Experiment.project_id.in_(project_ids), Decision.created_at >= since))
    start = since.date()
    labels = [(start + timedelta(days=n + 1)).isoformat() for n in range(days)]
    series: dict[int, dict[str, list[int]]] = {p: {} for p in project_ids}
    for project_id, created, username in rows:
        day = created.astimezone(timezone.utc).date().isoformat()
        if day in labels:
            counts = series[project_id].setdefault(username or "imported", [0] * days)
            counts[labels.index(day)] += 1
    return {p: Timeline(labels, series[p]) for p in project_ids}


