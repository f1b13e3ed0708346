"""Scan states from decisions: the latest decision of each scan (by a window function, for whole sets of
scans in a fixed number of queries), the states it gives, artifact lists and a scan's history."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from sqlalchemy import Select, func, select
from sqlalchemy.orm import joinedload, selectinload

from app.db import ArtifactEntry, Decision, DecisionArtifact, DecisionOption, Scan, db
from app.services import decisions

STATE_LABELS = {"unreviewed": "unreviewed", "needs_tier2": "needs tier 2", "complete": "complete"}


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


class Settled(NamedTuple):
    """What a scan's state and the queues read of its latest decision, as plain values: whole projects
    are read this way without loading a decision object per scan."""

    key: str  # the decision option's key (U, UE, Q?, UN or a custom one)
    meaning: str
    creator_id: int | None
    creator_role: str | None
    state: str  # complete or needs_tier2, by decisions.decided_state


def state_of(settled: Settled | None) -> str:
    """A scan's state from its latest decision's plain values (unreviewed without one)."""
    return settled.state if settled is not None else "unreviewed"


def latest_settled(scan_ids: Select) -> dict[int, Settled]:
    """Scan id -> :class:`Settled` of its latest decision (scans without one are absent); one query."""
    rows = db.session.execute(
        select(Decision.scan_id, DecisionOption.key, DecisionOption.meaning, Decision.creator_id, Decision.creator_role)
        .join(DecisionOption, DecisionOption.id == Decision.option_id)
        .where(Decision.id.in_(_latest_ids(Decision.scan_id.in_(scan_ids)))))
    return {scan_id: Settled(key, meaning, creator_id, role, decisions.decided_state(meaning, role))
            for scan_id, key, meaning, creator_id, role in rows}


def settled_counts(scan_ids: Select) -> dict[int | None, int]:
    """Reviewer id -> how many of the scans ``scan_ids`` selects have that reviewer's decision as their
    latest (None: imported decisions by no account); one aggregate query."""
    return dict(db.session.execute(
        select(Decision.creator_id, func.count()).where(Decision.id.in_(_latest_ids(Decision.scan_id.in_(scan_ids))))
        .group_by(Decision.creator_id)).all())


def scans_with_present(scan_ids: Select, artifact_key: str) -> set[int]:
    """The scans among ``scan_ids`` whose latest decision marks the artifact ``artifact_key`` present."""
    return set(db.session.scalars(
        select(Decision.scan_id).join(DecisionArtifact, DecisionArtifact.decision_id == Decision.id)
        .join(ArtifactEntry, ArtifactEntry.id == DecisionArtifact.entry_id)
        .where(Decision.id.in_(_latest_ids(Decision.scan_id.in_(scan_ids))), ArtifactEntry.key == artifact_key,
               DecisionArtifact.state == "present")))


def scan_states(scan_ids: Select) -> dict[int, str]:
    """Scan id -> unreviewed | needs_tier2 | complete (MIQA's rule on the latest decision), for the scans
    ``scan_ids`` selects; two queries whatever their number."""
    settled = latest_settled(scan_ids)
    return {scan_id: state_of(settled.get(scan_id)) for scan_id in db.session.scalars(scan_ids)}


def present_keys(decision: Decision | None) -> list[str]:
    if decision is None:
        return []
    return sorted(a.entry.key for a in decision.artifacts if a.state == "present")


@dataclass(frozen=True)
class ArtifactLists:
    """MIQA's shape of a decision's artifacts: the keys judged present and absent, in vocabulary order
    (undefined entries are simply not listed)."""

    present: list[str]
    absent: list[str]


def artifact_lists(decision: Decision) -> ArtifactLists:
    """The decision's artifact keys by state, as MIQA lists them."""
    ordered = sorted(decision.artifacts, key=lambda a: (a.entry.position, a.entry.id))
    return ArtifactLists(present=[item.entry.key for item in ordered if item.state == "present"],
                         absent=[item.entry.key for item in ordered if item.state == "absent"])

def history(scan: Scan) -> list[Decision]:
    """Every decision on the scan, newest first (decisions are never edited; a new one supersedes)."""
    return list(db.session.scalars(
        select(Decision).where(Decision.scan_id == scan.id).order_by(Decision.created_at.desc(), Decision.id.desc())
        .options(joinedload(Decision.option), joinedload(Decision.creator),
                 selectinload(Decision.artifacts).joinedload(DecisionArtifact.entry))).unique())



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


