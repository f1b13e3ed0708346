"""Agreement between reviewers: Cohen's kappa per reviewer pair (decisions, and each artifact) and the
scans where their latest decisions disagree."""
from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload, selectinload

from app.db import Decision, DecisionArtifact, Experiment, Scan, db
from app.services import vocabulary
from app.services.review.states import present_keys


@dataclass(frozen=True)
class ArtifactAgreement:
    """Two reviewers on one artifact, over the scans both judged it on."""

    kappa: float | None
    n: int
    agreement: float


@dataclass(frozen=True)
class PairAgreement:
    """Two reviewers' latest decisions on the scans both decided; ``artifacts`` by artifact key."""

    reviewers: list[str]
    n: int
    kappa: float | None
    agreement: float
    artifacts: dict[str, ArtifactAgreement]


@dataclass(frozen=True)
class ReviewerDecision:
    """One reviewer's latest decision on a scan reviewers disagree on."""

    reviewer: str
    decision: str
    present: list[str]
    role: str | None
    created: str


@dataclass(frozen=True)
class Disagreement:
    """A scan whose reviewers' latest decisions differ (in decision or artifacts present), to settle."""

    scan: int
    scan_name: str
    decisions: list[ReviewerDecision]


@dataclass(frozen=True)
class ReviewerAgreement:
    """Every reviewer pair's agreement, the scans to settle, and how many scans two or more decided."""

    pairs: list[PairAgreement]
    disagreements: list[Disagreement]
    scans: int


def agreement(project_id: int) -> ReviewerAgreement:
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
                artifacts[key] = ArtifactAgreement(kappa(xs, ys), len(judged),
                                                   round(sum(x == y for x, y in judged) / len(judged), 3))
        pairs.append(PairAgreement([names[first], names[second]], len(both), kappa(a, b),
                                   round(sum(x == y for x, y in zip(a, b)) / len(both), 3), artifacts))
    disagreements = []
    scan_names = dict(db.session.execute(select(Scan.id, Scan.name).where(Scan.id.in_(list(by_scan)))).all())
    for scan_id, by_reviewer in sorted(by_scan.items()):
        options = {d.option.key for d in by_reviewer.values()}
        present = {tuple(present_keys(d)) for d in by_reviewer.values()}
        if len(options) > 1 or len(present) > 1:
            disagreements.append(Disagreement(scan_id, scan_names.get(scan_id, "?"), [
                ReviewerDecision(names.get(user_id, "?"), d.option.key, present_keys(d), d.creator_role,
                                 d.created_at.isoformat())
                for user_id, d in sorted(by_reviewer.items(), key=lambda item: names.get(item[0], ""))]))
    return ReviewerAgreement(pairs, disagreements, len(by_scan))


def _state(decision: Decision, key: str) -> str:
    return next((a.state for a in decision.artifacts if a.entry.key == key), "undefined")

