"""The champion's suggestions: which version is the champion and its latest scored evaluation per scan,
and what a suggestion says (usable probability, artifact scores and states) for the review pages."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from sqlalchemy import Select, func, or_, select

from app.db import Evaluation, ModelVersion, db

SUGGESTION_THRESHOLD = 0.5
CHAMPION_ALIAS = "champion"


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


@dataclass(frozen=True)
class ArtifactScore:
    score: float
    state: str  # present when the score reaches SUGGESTION_THRESHOLD, else absent


@dataclass(frozen=True)
class Suggestion:
    """The model's opinion as the review pages show it: usable probability, artifact scores and states."""

    model: str
    version: str
    evaluation: int
    frame: int | None
    created: datetime
    usable: float | None
    artifacts: dict[str, ArtifactScore]


def suggestion(model: ModelVersion, evaluation: Evaluation, artifact_keys: Iterable[str]) -> Suggestion:
    """What ``evaluation`` by ``model`` suggests for the project's artifacts ``artifact_keys``."""
    scores = evaluation.scores or {}
    artifacts = {}
    for key in artifact_keys:
        value = scores.get(key)
        if isinstance(value, (int, float)):
            artifacts[key] = ArtifactScore(float(value), "present" if value >= SUGGESTION_THRESHOLD else "absent")
    usable = scores.get("usable")
    return Suggestion(model.registry_name, model.version, evaluation.id, evaluation.frame_id, evaluation.created_at,
                      float(usable) if isinstance(usable, (int, float)) else None, artifacts)
