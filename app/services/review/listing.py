"""Reads of MIQA's list endpoints: what a user may read, by parent, and pages of scans and frames with
their decisions, states and the champion's suggestions in a fixed number of queries."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.orm import joinedload, selectinload

from app.db import Decision, DecisionArtifact, Evaluation, Experiment, Frame, Project, Scan, User
from app.services import access, decisions, evaluations
from app.services.review.states import decisions_of


@dataclass(frozen=True)
class ScanView:
    """A scan with its decisions (newest first), the state they give and its champion's suggestion."""

    scan: Scan
    decisions: list[Decision]
    state: str
    suggestion: Evaluation | None


@dataclass(frozen=True)
class FrameView:
    """A frame with its champion's suggestion (the frame's own evaluation, else its scan's)."""

    frame: Frame
    suggestion: Evaluation | None


def scan_views(scans: list[Scan]) -> list[ScanView]:
    """Scans with decisions, state and suggestion, in a fixed number of queries for the page."""
    history = decisions_of([scan.id for scan in scans])
    suggestions = evaluations.scan_suggestions(scans)
    return [ScanView(scan, history.get(scan.id, []),
                     decisions.scan_state(history[scan.id][0] if history.get(scan.id) else None),
                     suggestions[scan.id]) for scan in scans]


def frame_views(frames: list[Frame]) -> list[FrameView]:
    """Frames with their suggestions, in a fixed number of queries for the page."""
    suggestions = evaluations.frame_suggestions(frames)
    return [FrameView(frame, suggestions[frame.id]) for frame in frames]


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


