"""Overviews of a project: its scans filtered for the project page, an experiment's grid, MIQA's task
overview with per-reviewer counts, progress per project and decisions per day; each in a fixed number
of queries whatever the project's size."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import joinedload, selectinload

from app.db import Decision, Experiment, Frame, Membership, ModelVersion, Project, Scan, User, db, utcnow
from app.services import decisions, vocabulary
from app.services.errors import InvalidInput
from app.services.review.states import latest_decisions, present_keys, scan_states
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
    project: Project
    experiments: list[Experiment]
    rows: dict[int, list[ScanRow]]
    counts: Counter
    total: int
    shown: int
    champion: ModelVersion | None
    scan_types: list[str] = field(default_factory=list)


def project_scans_query(project_id: int) -> Select:
    return (select(Scan).join(Experiment).where(Experiment.project_id == project_id, Scan.archived_at.is_(None))
            .order_by(Experiment.name, Scan.name).options(selectinload(Scan.frames)))


def project_overview(project: Project, filters: dict[str, str]) -> ProjectOverview:
    """Experiments with their scans, states, latest decisions and the champion's suggestion, filtered."""
    unknown = set(filters) - set(FILTERS)
    if unknown:
        raise InvalidInput(f"unknown filter(s): {', '.join(sorted(unknown))}")
    experiments = list(db.session.scalars(select(Experiment).where(Experiment.project_id == project.id)
                                          .order_by(Experiment.name).options(joinedload(Experiment.lock_owner))))
    scans = list(db.session.scalars(project_scans_query(project.id)))
    scan_ids = select(Scan.id).join(Experiment).where(Experiment.project_id == project.id)
    latest = latest_decisions(scan_ids, with_artifacts=True)
    model = champion(project.id)
    evaluations = latest_evaluations(model, scan_ids)
    keys = [entry.key for entry in vocabulary.artifact_entries(project.id)]
    rows: dict[int, list[ScanRow]] = defaultdict(list)
    counts: Counter = Counter()
    shown = 0
    for scan in scans:
        decision = latest.get(scan.id)
        evaluation = evaluations.get(scan.id)
        row = ScanRow(scan, decisions.scan_state(decision), decision, present_keys(decision),
                      suggestion(model, evaluation, keys) if evaluation else None)
        counts[row.state] += 1
        if _matches(row, filters):
            rows[scan.experiment_id].append(row)
            shown += 1
    return ProjectOverview(project, experiments, rows, counts, len(scans), shown, model,
                           sorted({scan.scan_type for scan in scans if scan.scan_type}))


def _matches(row: ScanRow, filters: dict[str, str]) -> bool:
    if filters.get("experiment") and str(row.scan.experiment_id) != filters["experiment"]:
        return False
    if filters.get("state") and row.state != filters["state"]:
        return False
    if filters.get("scan_type") and row.scan.scan_type != filters["scan_type"]:
        return False
    if filters.get("decision"):
        wanted = filters["decision"]
        if (row.latest.option.key if row.latest else "none") != wanted:
            return False
    if filters.get("artifact") and filters["artifact"] not in row.present:
        return False
    if filters.get("suggestion"):
        wanted, suggestion = filters["suggestion"], row.suggestion
        if suggestion is None:
            return wanted == "none"
        usable = suggestion.usable
        if wanted == "usable":
            return usable is not None and usable >= SUGGESTION_THRESHOLD
        if wanted == "unusable":
            return usable is not None and usable < SUGGESTION_THRESHOLD
        found = suggestion.artifacts.get(wanted)
        return found is not None and found.state == "present"
    return True


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
    ids = list(db.session.scalars(select(Scan.id).join(Experiment).where(
        Experiment.project_id == project.id, Scan.archived_at.is_(None))))
    states = scan_states(ids)
    counts = Counter(states.values())
    query = (select(Decision.creator_id, func.count(Decision.id), func.count(func.distinct(Decision.scan_id)),
                    func.max(Decision.created_at))
             .join(Scan).join(Experiment).where(Experiment.project_id == project.id, Decision.creator_id.isnot(None))
             .group_by(Decision.creator_id))
    stats = {row[0]: row[1:] for row in db.session.execute(query)}
    people = {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(list(stats))))} if stats else {}
    roles = dict(db.session.execute(select(Membership.user_id, Membership.role)
                                    .where(Membership.project_id == project.id)).all())
    latest = latest_decisions(ids)
    settled_by = Counter(d.creator_id for d in latest.values())
    reviewers = []
    for user_id, (n_decisions, n_scans, last) in sorted(stats.items(), key=lambda item: -item[1][0]):
        user = people.get(user_id)
        reviewers.append(ReviewerStats(Reviewer(user_id, user.username if user else "?",
                                                user.display_name if user else "?"),
                                       roles.get(user_id), n_decisions, n_scans, settled_by.get(user_id, 0), last))
    return TaskOverview(len(ids), role, states, {state: counts.get(state, 0) for state in decisions.SCAN_STATES},
                        reviewers)


def progress(project_ids: list[int]) -> dict[int, Counter]:
    """Project id -> Counter of scan states, for the projects page (three queries in all)."""
    if not project_ids:
        return {}
    scans = list(db.session.execute(select(Scan.id, Experiment.project_id).join(Experiment)
                                    .where(Experiment.project_id.in_(project_ids), Scan.archived_at.is_(None))))
    latest = latest_decisions(select(Scan.id).join(Experiment).where(Experiment.project_id.in_(project_ids)))
    result: dict[int, Counter] = {project_id: Counter() for project_id in project_ids}
    for scan_id, project_id in scans:
        result[project_id][decisions.scan_state(latest.get(scan_id))] += 1
    return result


def timeline(project_ids: list[int], days: int = 30) -> dict[int, dict[str, Any]]:
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
    return {p: {"days": labels, "series": series[p]} for p in project_ids}


