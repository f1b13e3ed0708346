"""The reviewer's queues: which scan comes next, for whom, in what order.

Tier 1 works the ``tier1`` queue (unreviewed scans); tier 2 and admins work the ``tier2``
queue (scans whose tier-1 decision waits for tier 2) and may choose ``tier1``. Both queues
skip experiments another reviewer holds the lock of and scans the caller may not decide.
Order strategies live in one registry (:data:`STRATEGIES`): ``name`` (experiment, then
scan), ``uncertainty`` (entropy of the champion's usable score, highest first: the predictive
entropy over Monte-Carlo dropout passes that the evaluation stored for networks with dropout,
else the entropy of the deterministic score),
``disagreement`` (largest gap between the champion's usable score and the tier-1 decision)
and ``random`` (seeded per project, user and day, so it stays put while a reviewer works).
A strategy that cannot order (no champion, nothing scored) falls back to ``name`` and says why.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from sqlalchemy import select, tuple_

from app.db import Experiment, ModelVersion, Project, Scan, User, db, utcnow
from app.services import audit, review
from app.services.errors import Forbidden, InvalidInput
from app.services.loaders import load
from models.uncertainty import binary_entropy

QUEUES = {"tier1": "unreviewed", "tier2": "needing tier 2"}
QUEUE_EMPTY = {"tier1": "No unreviewed scan is open to you", "tier2": "No scan needing tier 2 is open to you"}
QUEUE_STATES = {"tier1": "unreviewed", "tier2": "needs_tier2"}
# Who may work each queue (collaborators look through the tier-1 queue without deciding).
QUEUE_ROLES = {"tier1": ("collaborator", "tier1", "tier2", "admin"), "tier2": ("tier2", "admin")}
SETTING = "next_scan_strategy"
DEFAULT_STRATEGY = "name"
# Where a tier-1 decision puts the usable score it disagrees with.
DECISION_TARGETS = {"usable": 1.0, "usable_extra": 1.0, "questionable": 0.5, "unusable": 0.0}


@dataclass
class Candidate:
    """A scan of the project with what the queues and strategies read (plain values: a queue reads every
    scan of the project on each page)."""

    scan_id: int
    latest: review.Settled | None
    lock_owner_id: int | None
    lock_expires_at: datetime | None

    @property
    def state(self) -> str:
        return review.state_of(self.latest)


@dataclass
class OrderContext:
    project: Project
    user: User
    model: ModelVersion | None


# A strategy: (queue's candidates in name order, context) -> (sort keys per scan id, why it cannot order).
# Scans without a key follow those with one, in name order.
Strategy = Callable[[list[Candidate], OrderContext], tuple[dict[int, Any], str | None]]


def _by_name(candidates: list[Candidate], context: OrderContext) -> tuple[dict[int, Any], str | None]:
    return {}, None


def _probability(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    return None


def _usable_scores(candidates: list[Candidate], context: OrderContext) -> dict[int, float]:
    """Scan id -> the champion's usable score from its newest stored evaluation of the scan."""
    evaluations = review.latest_evaluations(context.model, [c.scan_id for c in candidates])
    scores = {}
    for scan_id, evaluation in evaluations.items():
        usable = _probability((evaluation.scores or {}).get("usable"))
        if usable is not None:
            scores[scan_id] = usable
    return scores


def _usable_entropies(candidates: list[Candidate], context: OrderContext) -> dict[int, float]:
    """Scan id -> the entropy of the champion's usable score: the Monte-Carlo dropout entropy when its
    newest evaluation stored one, else the entropy of the deterministic score."""
    evaluations = review.latest_evaluations(context.model, [c.scan_id for c in candidates])
    entropies = {}
    for scan_id, evaluation in evaluations.items():
        sampled = _probability(((evaluation.uncertainty or {}).get("entropy") or {}).get("usable"))
        usable = _probability((evaluation.scores or {}).get("usable"))
        if sampled is not None:
            entropies[scan_id] = sampled
        elif usable is not None:
            entropies[scan_id] = binary_entropy(usable)
    return entropies


def _by_uncertainty(candidates: list[Candidate], context: OrderContext) -> tuple[dict[int, Any], str | None]:
    if context.model is None:
        return {}, "the project has no champion model"
    entropies = _usable_entropies(candidates, context)
    if candidates and not entropies:
        return {}, f"the champion (v{context.model.version}) has scored none of these scans"
    return {scan_id: -value for scan_id, value in entropies.items()}, None


def _by_disagreement(candidates: list[Candidate], context: OrderContext) -> tuple[dict[int, Any], str | None]:
    if context.model is None:
        return {}, "the project has no champion model"
    scores = _usable_scores(candidates, context)
    gaps = {}
    for candidate in candidates:
        meaning = candidate.latest.meaning if candidate.latest is not None else None
        if candidate.scan_id in scores and meaning in DECISION_TARGETS:
            gaps[candidate.scan_id] = -abs(scores[candidate.scan_id] - DECISION_TARGETS[meaning])
    if candidates and not gaps:
        return {}, "no scan in this queue has both a tier-1 decision and a champion score"
    return gaps, None


def _by_random(candidates: list[Candidate], context: OrderContext) -> tuple[dict[int, Any], str | None]:
    seed = f"{context.project.id}:{context.user.id}:{utcnow().date().isoformat()}"
    return {c.scan_id: hashlib.sha256(f"{seed}:{c.scan_id}".encode()).hexdigest() for c in candidates}, None


STRATEGIES: dict[str, Strategy] = {"name": _by_name, "uncertainty": _by_uncertainty,
                                   "disagreement": _by_disagreement, "random": _by_random}
STRATEGY_LABELS = {"name": "by name", "uncertainty": "most uncertain first",
                   "disagreement": "largest disagreement first", "random": "random (fixed for the day)"}


@dataclass
class NextScan:
    """The queue's answer: the next scan (None when the queue is empty), how it was ordered, what is left."""

    queue: str
    strategy: str
    strategy_used: str
    fallback: str | None
    scan_id: int | None
    remaining: int
    other_queue: str | None
    other_remaining: int | None

    @property
    def message(self) -> str | None:
        """What the page says when the queue is empty, offering the other queue when it holds scans."""
        if self.scan_id is not None:
            return None
        text = QUEUE_EMPTY[self.queue]
        if self.other_queue and self.other_remaining:
            text += f"; {self.other_remaining} {QUEUES[self.other_queue]} (the {self.other_queue} queue)"
        return text + "."


def queues_for(role: str) -> list[str]:
    return [queue for queue, roles in QUEUE_ROLES.items() if role in roles]


def default_queue(role: str) -> str:
    """Tier 2 and admins work the tier-2 queue by default, everyone else the tier-1 queue."""
    return "tier2" if role in QUEUE_ROLES["tier2"] else "tier1"


def default_strategy(project: Project) -> str:
    chosen = (project.settings or {}).get(SETTING)
    return chosen if chosen in STRATEGIES else DEFAULT_STRATEGY


def set_default_strategy(project: Project, strategy: Any, actor: User | None) -> str:
    """The project's default order (project admins), audited; the caller commits."""
    strategy = _checked_strategy(strategy)
    before = default_strategy(project)
    if strategy != before:
        project.settings = {**(project.settings or {}), SETTING: strategy}
        audit.record("project.settings", actor=actor, project_id=project.id, target=("project", project.id),
                     before={SETTING: before}, after={SETTING: strategy})
    return strategy


def _checked_strategy(strategy: Any) -> str:
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise InvalidInput(f"strategy must be one of {', '.join(STRATEGIES)}", field="strategy")
    return strategy


def _checked_queue(queue: Any, role: str) -> str:
    if not isinstance(queue, str) or queue not in QUEUES:
        raise InvalidInput(f"queue must be one of {', '.join(QUEUES)}", field="queue")
    if role not in QUEUE_ROLES[queue]:
        raise Forbidden(f"the {queue} queue is for {' and '.join(QUEUE_ROLES[queue])} reviewers", field="queue")
    return queue


def _candidates(project_id: int) -> list[Candidate]:
    """Every scan of the project in name order, with its state and its experiment's lock (two queries)."""
    active = (Experiment.project_id == project_id, Scan.archived_at.is_(None), Experiment.archived_at.is_(None))
    rows = list(db.session.execute(
        select(Scan.id, Experiment.lock_owner_id, Experiment.lock_expires_at)
        .join(Experiment).where(*active).order_by(Experiment.name, Scan.name, Scan.id)))
    # the scans as a subquery, not a list of ids: a large project stays within the database's bound-parameter limit
    latest = review.latest_settled(select(Scan.id).join(Experiment).where(*active))
    return [Candidate(scan_id, latest.get(scan_id), owner, expires) for scan_id, owner, expires in rows]


def _open_to(candidate: Candidate, user: User, role: str, now: datetime) -> bool:
    """Not in an experiment another reviewer holds, and a scan this role may decide."""
    if candidate.lock_owner_id not in (None, user.id) and candidate.lock_expires_at is not None \
            and candidate.lock_expires_at > now:
        return False
    latest = candidate.latest
    return not (role == "tier1" and latest is not None and latest.creator_role in ("tier2", "admin"))


def _queue(candidates: list[Candidate], queue: str, user: User, role: str, now: datetime) -> list[Candidate]:
    return [c for c in candidates if c.state == QUEUE_STATES[queue] and _open_to(c, user, role, now)]


def pick(project_id: int, user: User, role: str, queue: str | None = None, strategy: str | None = None,
         after: int | None = None) -> NextScan:
    """The next scan of ``queue`` (the role's default) in ``strategy`` order (the project's default).

    ``after``: the scan the reviewer is on; the answer is the one after it in the queue's order
    (wrapping round), so a reviewer can skip a scan; a scan not in the queue starts from the top
    (by name: from its place in the name order)."""
    project = load(Project, project_id)
    queue = default_queue(role) if queue is None else _checked_queue(queue, role)
    strategy = default_strategy(project) if strategy is None else _checked_strategy(strategy)
    now = utcnow()
    everything = _candidates(project.id)
    members = _queue(everything, queue, user, role, now)
    context = OrderContext(project, user, review.champion(project.id) if strategy != "name" else None)
    keys, fallback = STRATEGIES[strategy](members, context)
    used = DEFAULT_STRATEGY if fallback else strategy
    position = {c.scan_id: index for index, c in enumerate(everything)}
    # Python's sort is stable: scans without a key keep their name order after the keyed ones.
    ordered = sorted(members, key=lambda c: (0, keys[c.scan_id]) if c.scan_id in keys else (1, ""))
    ids = [c.scan_id for c in ordered]
    chosen = _after(ids, after, position if used == "name" else None) if ids else None
    others = [name for name in queues_for(role) if name != queue]
    other = others[0] if others else None
    return NextScan(queue, strategy, used, f"{fallback}: ordered by name" if fallback else None, chosen, len(ids),
                    other, len(_queue(everything, other, user, role, now)) if other else None)


def _after(ids: list[int], after: int | None, name_position: dict[int, int] | None) -> int:
    """The id following ``after`` in ``ids`` (wrapping, never ``after`` itself when others exist); for
    a scan outside the queue, the first one after it in name order when the queue is in name order."""
    if after in ids:
        index = ids.index(after)
        rest = ids[index + 1:] + ids[:index]
        return rest[0] if rest else after
    if name_position is not None and after in name_position:
        later = [i for i in ids if name_position[i] > name_position[after]]
        return (later or ids)[0]
    return ids[0]


@dataclass(frozen=True)
class Neighbours:
    """Ids of the previous and next live scan of the project (None at either end)."""

    previous: int | None
    next: int | None


def neighbours(scan: Scan) -> Neighbours:
    """Previous and next scan of the project in experiment then scan name order (browsing, not a queue);
    two queries of one id each, in the database (names are unique within their experiment and project)."""
    here = tuple_(scan.experiment.name, scan.name)
    order = tuple_(Experiment.name, Scan.name)
    live = select(Scan.id).join(Experiment).where(Experiment.project_id == scan.experiment.project_id,
                                                  Scan.archived_at.is_(None))
    return Neighbours(
        previous=db.session.scalar(live.where(order < here).order_by(Experiment.name.desc(), Scan.name.desc())
                                   .limit(1)),
        next=db.session.scalar(live.where(order > here).order_by(Experiment.name, Scan.name).limit(1)))


def overview(project_id: int, user: User, role: str, strategy: str | None = None) -> list[NextScan]:
    """The head of every queue the role may work, for the project page (its own queue first)."""
    own = default_queue(role)
    ordered = sorted(queues_for(role), key=lambda queue: queue != own)
    return [pick(project_id, user, role, queue, strategy) for queue in ordered]
