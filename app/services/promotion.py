"""Promotion: a run's model becomes the champion only when it beats the current one on held-out usable AUC.

Both models are compared on the candidate run's own held-out scans when that run scored the
current champion there (training does, for the champion of its day); otherwise each on its own
run's held-out scans, and the reason says so. Without a champion, the candidate still needs its
held-out AUC above chance. Admins may force a promotion (audited). A new champion scores every
frame it has not scored (an evaluation job).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from flask import current_app
from sqlalchemy import select, update

from app.db import ModelVersion, TrainingRun, User, db
from app.services import audit, evaluations
from app.services.errors import Conflict, InvalidInput, Unavailable
from app.services.loaders import load
from app.services.training import RunStatus, run_status
from training.metrics import defined, first_champion_gate

log = logging.getLogger(__name__)

# The held-out metric a candidate is compared on with the champion when it carries no score of the
# current champion on its own held-out scans (each then on its own run's held-out scans).
PROMOTION_METRIC = "heldout_usable_auc"


@dataclass(frozen=True)
class Comparison:
    """The candidate against the champion on held-out usable AUC; ``reason`` names the metric and how it
    was measured (shown on the page and in a 409). Without a defined metric, the three are None."""

    metric: str | None
    candidate: float | None
    champion: float | None
    better: bool
    same_split: bool
    champion_version: str | None
    reason: str


def _verdict(metric: str, ours: float, theirs: float, same_split: bool, note: str,
             champion_version: str) -> Comparison:
    better = ours > theirs
    return Comparison(metric, ours, theirs, better, same_split, champion_version,
                      f"{metric} {ours:.4f} {'>' if better else '<='} {theirs:.4f}, {note}")


def compare_metrics(run_id: int, candidate: dict[str, Any], champion_version: str | None,
                    champion: dict[str, Any] | None) -> Comparison:
    """Candidate against champion; "better" means strictly higher usable AUC.

    The candidate needs a defined held-out usable AUC. When its run scored this very champion
    version on the same held-out scans (``champion_heldout_usable_auc``, written by training),
    both are compared there; otherwise each on its own run's held-out scans, and the reason says
    why that weaker comparison was made.
    """
    if champion_version is None:
        eligible, why = first_champion_gate(candidate)
        return Comparison(None, None, None, eligible, False, None, f"there is no champion yet; {why}")
    scored = candidate.get("champion_version")
    ours, theirs = candidate.get(PROMOTION_METRIC), candidate.get(f"champion_{PROMOTION_METRIC}")
    if not defined(ours):
        return Comparison(None, None, None, False, False, champion_version,
                          f"run {run_id} has no defined held-out usable AUC (its held-out scans lack a class)")
    if scored == champion_version and defined(theirs):
        return _verdict(f"usable AUC on run {run_id}'s held-out scans", float(ours), float(theirs), True,
                        "both models scored on the same scans", champion_version)
    if scored == champion_version:
        why = f"run {run_id}'s held-out scans gave no usable AUC of champion v{champion_version}"
    elif scored:
        why = f"run {run_id} scored champion v{scored} on its held-out scans, not the current v{champion_version}"
    else:
        why = f"run {run_id} has no score of champion v{champion_version} on its held-out scans"
    if defined((champion or {}).get(PROMOTION_METRIC)):
        return _verdict(PROMOTION_METRIC, float(ours), float(champion[PROMOTION_METRIC]), False,
                        f"each on its own run's held-out scans: {why}", champion_version)
    return Comparison(None, None, None, False, False, champion_version,
                      f"{why}, and the champion has no held-out usable AUC ({PROMOTION_METRIC})")


def _candidate(project_id: int, run_id: int) -> tuple[TrainingRun, ModelVersion]:
    run = load(TrainingRun, run_id, project_id=project_id)
    version = db.session.get(ModelVersion, run.model_version_id) if run.model_version_id else None
    if version is None:
        raise Conflict(f"training run {run.id} registered no model ({run.state}); only a succeeded run can be "
                       "promoted", run_id=run.id)
    return run, version


def champions(project_id: int) -> dict[str, ModelVersion]:
    """The project's champion row per registry name, as recorded in qcloop (the page's comparison uses it)."""
    rows = db.session.scalars(select(ModelVersion).where(ModelVersion.project_id == project_id,
                                                         ModelVersion.alias == "champion")
                              .order_by(ModelVersion.id))
    return {row.registry_name: row for row in rows}


def promotion_preview(status: RunStatus, champions_by_name: dict[str, ModelVersion]) -> Comparison | None:
    """For the page: how a run's model compares with the recorded champion of its registry name (None when
    nothing to promote)."""
    version = status.model_version
    if version is None or version.alias == "champion":
        return None
    champion = champions_by_name.get(version.registry_name)
    return compare_metrics(status.run.id, status.run.metrics or {}, None if champion is None else champion.version,
                           None if champion is None else champion.metrics or {})


@dataclass(frozen=True)
class Promotion:
    """A promotion done: the run whose version is now champion, the comparison that allowed it (or was
    overridden), whether it was forced, and the version it replaced."""

    run: RunStatus
    comparison: Comparison
    forced: bool
    previous_champion: str | None


def promote_run(project_id: int, run_id: int, user: User | None, force: Any = False) -> Promotion:
    """Make the run's model version the champion if it beats the current one on held-out usable AUC.

    The champion is read from the MLflow registry (the alias serving and "from champion" use). The
    comparison is on the candidate's own held-out split when its run scored that champion there
    (see :func:`compare_metrics`); otherwise on the champion's metrics from qcloop's row for that
    version or else from its MLflow run. Not better: Conflict, unless ``force`` (recorded in the
    audit log as ``model.force_promote``).
    """
    from mlflow.exceptions import MlflowException

    from app.services.health import mlflow_status
    from models import registry

    if not isinstance(force, bool):
        raise InvalidInput("force must be true or false", field="force")
    run, candidate = _candidate(project_id, run_id)
    uri = current_app.config["MLFLOW_TRACKING_URI"]
    status = mlflow_status(uri)
    if not status["ok"]:
        raise Unavailable(f"cannot promote: {status['error']}")
    name = candidate.registry_name
    try:
        current = registry.alias_version(uri, name, registry.CHAMPION)
        if current == candidate.version:
            raise Conflict(f"{name} version {candidate.version} is already the champion")
        champion_row = None if current is None else db.session.scalar(
            select(ModelVersion).where(ModelVersion.registry_name == name, ModelVersion.version == current))
        champion_metrics = None if current is None else (
            champion_row.metrics if champion_row is not None and champion_row.metrics
            else registry.version_metrics(uri, name, current))
        comparison = compare_metrics(run.id, candidate.metrics or {}, current, champion_metrics)
        if not comparison.better and not force:
            against = "chance" if current is None else f"the champion (version {current})"
            raise Conflict(f"{name} version {candidate.version} is not better than {against}: "
                           f"{comparison.reason}; an admin may promote it anyway with force",
                           comparison=asdict(comparison))
        registry.promote(uri, name, candidate.version)
    except MlflowException as err:
        raise Unavailable(f"the MLflow registry refused the promotion: {str(err).splitlines()[0][:300]}") from err
    forced = not comparison.better
    db.session.execute(update(ModelVersion).where(ModelVersion.registry_name == name,
                                                  ModelVersion.alias == "champion",
                                                  ModelVersion.id != candidate.id).values(alias=None))
    candidate.alias = "champion"
    audit.record("model.force_promote" if forced else "model.promote", actor=user, project_id=project_id,
                 target=("model_version", candidate.id), registry_name=name, version=candidate.version,
                 previous_champion=current, training_run=run.id, comparison=asdict(comparison))
    log.info("%s version %s promoted to champion (was %s)%s", name, candidate.version, current,
             " by force" if forced else "")
    evaluations.score_unscored(project_id, user)
    return Promotion(run_status(run), comparison, forced, current)
