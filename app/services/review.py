"""Reviewing: scan states, the tier rule, experiment locks, model suggestions, overviews, agreement.

Every read here works on whole sets of scans in a fixed number of queries (latest decision
per scan by a window function, artifacts and options loaded alongside), so that pages of
hundreds of scans cost the same handful of queries as pages of ten.
"""
from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from flask import current_app
from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.orm import joinedload, selectinload

from app.db import (
    MAX_ID, NOTE_MAX_LENGTH, Decision, DecisionArtifact, Evaluation, Experiment, Frame, Membership, ModelVersion, Project,
    Scan, User, WORLD, db, utcnow,
)
from app.services import access, audit, decisions, vocabulary
from app.services.errors import Conflict, Forbidden, InvalidInput, NotFound

STATE_LABELS = {"unreviewed": "unreviewed", "needs_tier2": "needs tier 2", "complete": "complete"}
SUGGESTION_THRESHOLD = 0.5
CHAMPION_ALIAS = "champion"
FILTERS = ("state", "scan_type", "decision", "artifact", "suggestion", "experiment")


# ---------------------------------------------------------------- latest decisions and states

def _latest_ids(scan_filter) -> Select:
    """Ids of the latest decision (newest created_at, then id) of each scan matching ``scan_filter``."""
    ranked = (select(Decision.id, func.row_number().over(partition_by=Decision.scan_id,
                                                            order_by=(Decision.created_at.desc(),
                                                                      Decision.id.desc())).label("rank"))
              .where(scan_filter).subquery())
    return select(ranked.c.id).where(ranked.c.rank == 1)


def latest_decisions(scan_ids: Iterable[int] | Select, with_artifacts: bool = False) -> dict[int, Decision]:
    """Scan id -> its latest decision (scans without one are absent); one or two queries."""
    scan_filter = Decision.scan_id.in_(scan_ids if isinstance(scan_ids, Select) else list(scan_ids))
    query = (select(Decision).where(Decision.id.in_(_latest_ids(scan_filter)))
             .options(joinedload(Decision.option), joinedload(Decision.creator)))
    if with_artifacts:
        query = query.options(selectinload(Decision.artifacts).joinedload(DecisionArtifact.entry))
    return {decision.scan_id: decision for decision in db.session.scalars(query).unique()}


def scan_states(scan_ids: Iterable[int]) -> dict[int, str]:
    """Scan id -> unreviewed | needs_tier2 | complete, by decisions.scan_state on the latest decision."""
    ids = list(scan_ids)
    latest = latest_decisions(ids)
    return {scan_id: decisions.scan_state(latest.get(scan_id)) for scan_id in ids}


def present_keys(decision: Decision | None) -> list[str]:
    if decision is None:
        return []
    return sorted(a.entry.key for a in decision.artifacts if a.state == "present")


def artifact_lists(decision: Decision) -> dict[str, list[str]]:
    """MIQA's shape: {"present": [...], "absent": [...]} (undefined entries are simply not listed)."""
    lists: dict[str, list[str]] = {"present": [], "absent": []}
    for item in sorted(decision.artifacts, key=lambda a: (a.entry.position, a.entry.id)):
        if item.state in lists:
            lists[item.state].append(item.entry.key)
    return lists


# ---------------------------------------------------------------- model suggestions

def champion(project_id: int) -> ModelVersion | None:
    """The project's model version with the alias 'champion' (the newest if several claim it)."""
    return db.session.scalar(select(ModelVersion).where(ModelVersion.project_id == project_id,
                                                        ModelVersion.alias == CHAMPION_ALIAS)
                             .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc()).limit(1))


def latest_evaluations(model: ModelVersion | None, scan_ids: Iterable[int] | Select,
                       frame_id: int | None = None) -> dict[int, Evaluation]:
    """Scan id -> the newest scored evaluation by ``model`` (of ``frame_id`` or the scan itself when given);
    rows of an evaluation job still running, or that failed, are not suggestions."""
    if model is None:
        return {}
    scan_filter = Evaluation.scan_id.in_(scan_ids if isinstance(scan_ids, Select) else list(scan_ids))
    conditions = [Evaluation.model_version_id == model.id, scan_filter, Evaluation.state == "scored"]
    order = [Evaluation.created_at.desc(), Evaluation.id.desc()]
    if frame_id is not None:
        conditions.append(or_(Evaluation.frame_id == frame_id, Evaluation.frame_id.is_(None)))
        order.insert(0, Evaluation.frame_id.is_(None))  # the frame's own evaluation first
    ranked = (select(Evaluation.id, func.row_number().over(partition_by=Evaluation.scan_id, order_by=order)
                     .label("rank")).where(*conditions).subquery())
    query = select(Evaluation).where(Evaluation.id.in_(select(ranked.c.id).where(ranked.c.rank == 1)))
    return {evaluation.scan_id: evaluation for evaluation in db.session.scalars(query)}


def suggestion_json(model: ModelVersion, evaluation: Evaluation, artifact_keys: Iterable[str]) -> dict[str, Any]:
    """The model's opinion as the page shows it: usable probability, artifact scores and states."""
    scores = evaluation.scores or {}
    artifacts = {}
    for key in artifact_keys:
        value = scores.get(key)
        if isinstance(value, (int, float)):
            artifacts[key] = {"score": float(value),
                              "state": "present" if value >= SUGGESTION_THRESHOLD else "absent"}
    usable = scores.get("usable")
    return {"model": model.registry_name, "version": model.version, "evaluation": evaluation.id,
            "frame": evaluation.frame_id, "created": evaluation.created_at.isoformat(),
            "usable": float(usable) if isinstance(usable, (int, float)) else None, "artifacts": artifacts}


# ---------------------------------------------------------------- locks

def _now() -> datetime:
    return utcnow()


def lock_json(experiment: Experiment) -> dict[str, Any] | None:
    """Who holds the experiment's lock and until when (None when free or expired)."""
    expires = experiment.lock_expires_at
    if experiment.lock_owner_id is None or expires is None or expires <= _now():
        return None
    owner = experiment.lock_owner
    return {"owner": {"id": owner.id, "username": owner.username, "name": owner.display_name} if owner else None,
            "expires": expires.isoformat()}


def take_lock(experiment: Experiment, user: User) -> dict[str, Any]:
    """Take or renew the lock for LOCK_MINUTES; Conflict (409) naming the holder when someone else has it."""
    now = _now()
    expires = now + timedelta(minutes=current_app.config["LOCK_MINUTES"])
    taken = db.session.execute(
        update(Experiment).where(Experiment.id == experiment.id, or_(
            Experiment.lock_owner_id.is_(None), Experiment.lock_owner_id == user.id,
            Experiment.lock_expires_at.is_(None), Experiment.lock_expires_at <= now))
        .values(lock_owner_id=user.id, lock_expires_at=expires).execution_options(synchronize_session=False))
    db.session.refresh(experiment)
    if taken.rowcount != 1:
        raise _locked_by_other(experiment)
    return lock_json(experiment)


def _locked_by_other(experiment: Experiment) -> Conflict:
    holder = lock_json(experiment)
    name = holder["owner"]["username"] if holder and holder["owner"] else "another reviewer"
    until = holder["expires"] if holder else "soon"
    return Conflict(f"experiment {experiment.name!r} is locked by {name} until {until}",
                    lock=holder, experiment=experiment.id)


def release_lock(experiment: Experiment, user: User, role: str) -> None:
    """The holder releases; a project admin breaks someone else's lock (audited); others are refused."""
    holder = lock_json(experiment)
    if holder is None:
        experiment.lock_owner_id, experiment.lock_expires_at = None, None
        return
    if experiment.lock_owner_id != user.id:
        if role != "admin":
            raise Forbidden("only the lock holder or a project admin can release this lock")
        audit.record("experiment.lock_break", actor=user, project_id=experiment.project_id,
                     target=("experiment", experiment.id), holder=holder["owner"], expires=holder["expires"])
    experiment.lock_owner_id, experiment.lock_expires_at = None, None


def require_lock(experiment: Experiment, user: User) -> None:
    """A decision needs the experiment's lock: 409 when another reviewer holds it or the caller does not."""
    holder = lock_json(experiment)
    if holder is not None and experiment.lock_owner_id == user.id:
        return
    if holder is not None:
        raise _locked_by_other(experiment)
    raise Conflict(f"you do not hold the lock on experiment {experiment.name!r}: open it for review "
                   f"(POST /api/v1/experiments/{experiment.id}/lock) first", lock=None, experiment=experiment.id)


# ---------------------------------------------------------------- deciding

def _int_field(body: dict, name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidInput(f"{name} must be an id", field=name)
    try:
        number = int(value)
    except ValueError as err:
        raise InvalidInput(f"{name} must be an id", field=name) from err
    if not 0 < number <= MAX_ID:
        raise InvalidInput(f"{name} must be an id", field=name)
    return number


def _key_list(artifacts: dict, name: str) -> list[str]:
    keys = artifacts.get(name) or []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise InvalidInput(f"artifacts.{name} must be a list of artifact keys", field=f"artifacts.{name}")
    return keys


def decide(user: User, body: dict[str, Any]) -> Decision:
    """Record a reviewer's decision from a MIQA-style body, enforcing role, lock, tier rule and note rules.

    ``{"scan", "decision", "note", "artifacts": {"present", "absent"}, "location": {"i", "j", "k"},
    "project" (optional: refused when the scan is not in it)}``; the location is in the scan's
    original voxel grid (Frame.shape)."""
    if not isinstance(body, dict):
        raise InvalidInput("expected a JSON object")
    scan_id = _int_field(body, "scan")
    scan = db.session.get(Scan, scan_id)
    if scan is None:
        raise NotFound("Not found.")
    experiment = scan.experiment
    role = access.require_project_role(user, experiment.project_id, "tier1")
    if body.get("project") is not None and _int_field(body, "project") != experiment.project_id:
        raise InvalidInput(f"scan {scan.id} is not in project {body['project']}", field="scan")
    option_key = body.get("decision")
    if not isinstance(option_key, str) or not option_key:
        raise InvalidInput("decision is required (a decision key of the project)", field="decision")
    note = body.get("note") or ""
    if not isinstance(note, str):
        raise InvalidInput("note must be text", field="note")
    if len(note) > NOTE_MAX_LENGTH:
        raise InvalidInput(f"note must be at most {NOTE_MAX_LENGTH} characters (got {len(note)})", field="note")
    artifacts = body.get("artifacts") or {}
    if not isinstance(artifacts, dict) or set(artifacts) - {"present", "absent"}:
        raise InvalidInput('artifacts must be {"present": [...], "absent": [...]}', field="artifacts")
    location = body.get("location")
    if location is not None and not isinstance(location, dict):
        raise InvalidInput("location must be {\"i\", \"j\", \"k\"}", field="location")
    required = experiment.project.settings.get("note_required_for") if experiment.project.settings else None
    if isinstance(required, list) and option_key in required and not note.strip():
        raise InvalidInput(f"a note is required for decision {option_key!r} in this project", field="note")
    require_lock(experiment, user)
    latest = latest_decisions([scan.id]).get(scan.id)
    if role == "tier1" and latest is not None and latest.creator_role in ("tier2", "admin"):
        raise Forbidden("a tier 2 reviewer has decided this scan; tier 1 reviewers cannot overrule it",
                        field="decision")
    decision = decisions.record_decision(scan, user, option_key, role=role, note=note,
                                         present=_key_list(artifacts, "present"),
                                         absent=_key_list(artifacts, "absent"), location=location)
    take_lock(experiment, user)  # deciding is activity: the lock is renewed
    return decision


def set_experiment_note(experiment: Experiment, note: Any) -> Experiment:
    if not isinstance(note, str):
        raise InvalidInput("note must be text", field="note")
    if len(note) > NOTE_MAX_LENGTH:
        raise InvalidInput(f"note must be at most {NOTE_MAX_LENGTH} characters (got {len(note)})", field="note")
    experiment.note = note
    return experiment


def decision_json(decision: Decision) -> dict[str, Any]:
    """MIQA's ScanDecision shape plus the creator's role at the time."""
    creator = decision.creator
    location = None
    if decision.location_i is not None:
        location = {axis: int(value) if float(value).is_integer() else value for axis, value in
                    (("i", decision.location_i), ("j", decision.location_j), ("k", decision.location_k))}
        if decision.location_space == WORLD:  # MIQA's viewer position (mm), as an imported file gave it
            location["space"] = WORLD
    return {
        "id": decision.id, "scan": decision.scan_id, "decision": decision.option.key,
        "decision_label": decision.option.label, "note": decision.note, "created": decision.created_at.isoformat(),
        "creator": ({"id": creator.id, "username": creator.username, "first_name": creator.first_name,
                     "last_name": creator.last_name, "email": creator.email} if creator
                    else {"id": None, "username": decision.creator_name or "unknown"}),
        "creator_role": decision.creator_role, "source": decision.source,
        "artifacts": artifact_lists(decision), "location": location,
    }


def history(scan: Scan) -> list[Decision]:
    """Every decision on the scan, newest first (decisions are never edited; a new one supersedes)."""
    return list(db.session.scalars(
        select(Decision).where(Decision.scan_id == scan.id).order_by(Decision.created_at.desc(), Decision.id.desc())
        .options(joinedload(Decision.option), joinedload(Decision.creator),
                 selectinload(Decision.artifacts).joinedload(DecisionArtifact.entry))).unique())


# ---------------------------------------------------------------- project overview

@dataclass
class ScanRow:
    scan: Scan
    state: str
    latest: Decision | None
    present: list[str]
    suggestion: dict[str, Any] | None


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
                      suggestion_json(model, evaluation, keys) if evaluation else None)
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
        usable = suggestion["usable"]
        if wanted == "usable":
            return usable is not None and usable >= SUGGESTION_THRESHOLD
        if wanted == "unusable":
            return usable is not None and usable < SUGGESTION_THRESHOLD
        return suggestion["artifacts"].get(wanted, {}).get("state") == "present"
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

def task_overview(project: Project, role: str | None) -> dict[str, Any]:
    """MIQA's task overview (states per scan, the caller's role) plus per-reviewer counts."""
    ids = list(db.session.scalars(select(Scan.id).join(Experiment).where(
        Experiment.project_id == project.id, Scan.archived_at.is_(None))))
    states = scan_states(ids)
    counts = Counter(states.values())
    reviewers = []
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
    for user_id, (n_decisions, n_scans, last) in sorted(stats.items(), key=lambda item: -item[1][0]):
        user = people.get(user_id)
        reviewers.append({"user": {"id": user_id, "username": user.username if user else "?",
                                   "name": user.display_name if user else "?"},
                          "role": roles.get(user_id), "decisions": n_decisions, "scans": n_scans,
                          "latest_on": settled_by.get(user_id, 0), "last_decision": last.isoformat() if last else None})
    return {"total_scans": len(ids), "my_project_role": role,
            "scan_states": {str(scan_id): state for scan_id, state in states.items()},
            "state_counts": {state: counts.get(state, 0) for state in decisions.SCAN_STATES},
            "reviewers": reviewers}


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
    since = _now() - timedelta(days=days)
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


# ---------------------------------------------------------------- agreement

def agreement(project_id: int) -> dict[str, Any]:
    """Cohen's kappa per reviewer pair (decisions, and each artifact) on scans both decided, and the
    scans where reviewers' latest decisions disagree."""
    from sklearn.metrics import cohen_kappa_score

    shared = (select(Decision.scan_id).join(Scan).join(Experiment)
              .where(Experiment.project_id == project_id, Decision.creator_id.isnot(None))
              .group_by(Decision.scan_id).having(func.count(func.distinct(Decision.creator_id)) >= 2))
    ranked = (select(Decision.id, func.row_number().over(
        partition_by=(Decision.scan_id, Decision.creator_id),
        order_by=(Decision.created_at.desc(), Decision.id.desc())).label("rank"))
        .where(Decision.scan_id.in_(shared), Decision.creator_id.isnot(None)).subquery())
    latest = list(db.session.scalars(
        select(Decision).where(Decision.id.in_(select(ranked.c.id).where(ranked.c.rank == 1)))
        .options(joinedload(Decision.option), joinedload(Decision.creator),
                 selectinload(Decision.artifacts).joinedload(DecisionArtifact.entry))).unique())
    by_scan: dict[int, dict[int, Decision]] = defaultdict(dict)
    for decision in latest:
        by_scan[decision.scan_id][decision.creator_id] = decision
    names = {d.creator_id: d.creator.username for d in latest if d.creator}
    keys = [entry.key for entry in vocabulary.artifact_entries(project_id)]

    def kappa(a: list[str], b: list[str]) -> float | None:
        if not a or len(set(a) | set(b)) < 2:
            return None  # undefined: one label only (observed agreement says the rest)
        return round(float(cohen_kappa_score(a, b)), 3)

    pairs = []
    for first, second in itertools.combinations(sorted(names, key=names.get), 2):
        both = [scan for scan in by_scan.values() if first in scan and second in scan]
        if not both:
            continue
        a = [scan[first].option.key for scan in both]
        b = [scan[second].option.key for scan in both]
        artifacts = {}
        for key in keys:
            states = [(_state(scan[first], key), _state(scan[second], key)) for scan in both]
            judged = [(x, y) for x, y in states if x != "undefined" and y != "undefined"]
            if judged:
                xs, ys = [x for x, _ in judged], [y for _, y in judged]
                artifacts[key] = {"kappa": kappa(xs, ys), "n": len(judged),
                                  "agreement": round(sum(x == y for x, y in judged) / len(judged), 3)}
        pairs.append({"reviewers": [names[first], names[second]], "n": len(both), "kappa": kappa(a, b),
                      "agreement": round(sum(x == y for x, y in zip(a, b)) / len(both), 3), "artifacts": artifacts})
    disagreements = []
    scan_names = dict(db.session.execute(select(Scan.id, Scan.name).where(Scan.id.in_(list(by_scan)))).all())
    for scan_id, by_reviewer in sorted(by_scan.items()):
        options = {d.option.key for d in by_reviewer.values()}
        present = {tuple(present_keys(d)) for d in by_reviewer.values()}
        if len(options) > 1 or len(present) > 1:
            disagreements.append({"scan": scan_id, "scan_name": scan_names.get(scan_id, "?"), "decisions": [
                {"reviewer": names.get(user_id, "?"), "decision": d.option.key, "present": present_keys(d),
                 "role": d.creator_role, "created": d.created_at.isoformat()}
                for user_id, d in sorted(by_reviewer.items(), key=lambda item: names.get(item[0], ""))]})
    return {"pairs": pairs, "disagreements": disagreements, "scans": len(by_scan)}


def _state(decision: Decision, key: str) -> str:
    return next((a.state for a in decision.artifacts if a.entry.key == key), "undefined")


# ---------------------------------------------------------------- API reads (MIQA's list endpoints)

def projects_query(user: User) -> Select:
    return select(Project).where(Project.id.in_(access.readable_project_ids(user))).order_by(Project.name)


def experiments_query(user: User, project_id: int | None = None) -> Select:
    query = (select(Experiment).where(Experiment.project_id.in_(access.readable_project_ids(user)))
             .options(joinedload(Experiment.lock_owner), selectinload(Experiment.scans))
             .order_by(Experiment.project_id, Experiment.name))
    return query if project_id is None else query.where(Experiment.project_id == project_id)


def scans_query(user: User, experiment_id: int | None = None, project_id: int | None = None) -> Select:
    query = (select(Scan).join(Experiment).where(Experiment.project_id.in_(access.readable_project_ids(user)))
             .options(selectinload(Scan.frames)).order_by(Experiment.project_id, Experiment.name, Scan.name))
    if experiment_id is not None:
        query = query.where(Scan.experiment_id == experiment_id)
    if project_id is not None:
        query = query.where(Experiment.project_id == project_id)
    return query


def frames_query(user: User, scan_id: int | None = None) -> Select:
    query = (select(Frame).join(Scan).join(Experiment)
             .where(Experiment.project_id.in_(access.readable_project_ids(user))).order_by(Frame.scan_id,
                                                                                           Frame.frame_number))
    return query if scan_id is None else query.where(Frame.scan_id == scan_id)


def decisions_query(user: User, scan_id: int | None = None) -> Select:
    query = (select(Decision).join(Scan).join(Experiment)
             .where(Experiment.project_id.in_(access.readable_project_ids(user)))
             .options(joinedload(Decision.option), joinedload(Decision.creator),
                      selectinload(Decision.artifacts).joinedload(DecisionArtifact.entry))
             .order_by(Decision.created_at.desc(), Decision.id.desc()))
    return query if scan_id is None else query.where(Decision.scan_id == scan_id)


def decisions_of(scan_ids: list[int]) -> dict[int, list[Decision]]:
    """Scan id -> its decisions, newest first, for a page of scans (one query plus artifacts)."""
    found: dict[int, list[Decision]] = defaultdict(list)
    if scan_ids:
        for decision in db.session.scalars(
                select(Decision).where(Decision.scan_id.in_(scan_ids))
                .options(joinedload(Decision.option), joinedload(Decision.creator),
                         selectinload(Decision.artifacts).joinedload(DecisionArtifact.entry))
                .order_by(Decision.created_at.desc(), Decision.id.desc())).unique():
            found[decision.scan_id].append(decision)
    return found


def get(model: type, object_id: int) -> Any:
    """A project, experiment, scan, frame or decision by id (the route's permission already checked it)."""
    row = db.session.get(model, object_id)
    if row is None:
        raise NotFound("Not found.")
    return row
