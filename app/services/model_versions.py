"""A project's model versions: MIQA's published network as a version, the list, rollback, agreement.

Every version lives in the MLflow registry under the project's model name (aliases, never
stages) and has a ModelVersion row; the row's ``alias`` mirrors the registry. MIQA's network
is registered like a trained one, with MIQA's preprocessing and its outputs' meaning
(``output_kind`` "miqa_scores") in its metadata, so the engine runs it exactly as MIQA does.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from flask import current_app
from sqlalchemy import select, update

from app.db import Job, ModelVersion, Project, TrainingRun, User, db
from app.services import audit, evaluations, review, vocabulary
from app.services.errors import Conflict, InvalidInput, Unavailable

log = logging.getLogger(__name__)

MIQA_OUTPUT_MEANING = ("output 0: MIQA's overall quality 0..10 (usable = clamp(out / 10, 0, 1)); outputs 1-10: "
                       "artifact scores, clamp(out, 0, 1) = probability present (full_brain_coverage: coverage full)")


def _check_store() -> str:
    from app.services.health import mlflow_status

    uri = current_app.config["MLFLOW_TRACKING_URI"]
    status = mlflow_status(uri)
    if not status["ok"]:
        raise Unavailable(f"the MLflow store cannot be used: {status['error']}")
    return uri


def _miqa_network(weights: Path):
    """MIQA's Classifier with the file's weights; InvalidInput naming what is wrong with the file."""
    import torch

    from models.networks import MIQA_OUTPUTS, build_network

    if not weights.is_file():
        raise InvalidInput(f"{weights} is not a file", field="weights")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a file that is not a state dict
        raise InvalidInput(f"{weights.name} is not a PyTorch weights file ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:200]})", field="weights") from err
    net = build_network("miqa", len(MIQA_OUTPUTS))
    try:
        net.load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - wrong keys or shapes: not MIQA's network
        raise InvalidInput(f"{weights.name} does not hold the weights of MIQA's network "
                           f"(Classifier, 11 outputs): {str(err).splitlines()[0][:300]}", field="weights") from err
    return net.eval()


def import_miqa(project: Project, weights: Path, user: User | None) -> ModelVersion:
    """Register MIQA's published network under the project's model name; champion when there is none."""
    import torch

    from models import registry
    from models.networks import MIQA_OUTPUTS
    from models.preprocessing import MIQA
    from training import tracking

    net = _miqa_network(weights)
    uri = _check_store()
    entries = {entry.key: entry.id for entry in vocabulary.artifact_entries(project.id)}
    output_map = [{"kind": "usable", "key": "usable", "entry_id": None}]
    output_map += [{"kind": "artifact", "key": key, "entry_id": entries.get(key)} for key in MIQA_OUTPUTS[1:]]
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    experiment_id = tracking.ensure_experiment(uri, project.model_name, current_app.config["MLFLOW_ARTIFACT_ROOT"])
    run_id = tracking.open_run(uri, experiment_id, f"{project.name}: MIQA {weights.name}",
                               {"qcloop.project": project.name, "qcloop.source": "miqa"})
    metadata = {"output_map": output_map, "preprocessing": MIQA.as_dict(), "arch": "miqa",
                "output_kind": "miqa_scores", "input": MIQA.describe(), "output": MIQA_OUTPUT_MEANING,
                "source": f"MIQA published weights {weights.name} (sha256 {digest})",
                "vocabulary_version": vocabulary.vocabulary_version(project.id)}
    try:
        tracking.log_params(uri, run_id, {"source": "miqa", "weights_file": weights.name, "weights_sha256": digest,
                                          "outputs": [o["key"] for o in output_map],
                                          "preprocessing": MIQA.as_dict()})
        version = tracking.log_model(uri, run_id, net, torch.zeros((1, 1, *MIQA.spatial_size)), project.model_name,
                                     metadata)
    except BaseException as err:
        tracking.finish(uri, run_id, "FAILED", f"{type(err).__name__}: {err}")
        raise
    tracking.finish(uri, run_id, "FINISHED")
    alias = registry.assign_new_version(uri, project.model_name, version)
    if alias == registry.CHAMPION:
        db.session.execute(update(ModelVersion).where(ModelVersion.registry_name == project.model_name,
                                                      ModelVersion.alias == alias).values(alias=None))
    row = ModelVersion(project_id=project.id, registry_name=project.model_name, version=version,
                       alias=alias if alias == registry.CHAMPION else None, mlflow_run_id=run_id,
                       output_map=output_map, metrics={"source": "miqa", "weights_sha256": digest})
    db.session.add(row)
    db.session.flush()
    audit.record("model.import_miqa", actor=user, project_id=project.id, target=("model_version", row.id),
                 registry_name=project.model_name, version=version, weights=weights.name, sha256=digest)
    log.info("MIQA weights %s registered as %s version %s (%s)", weights.name, project.model_name, version, alias)
    if alias == registry.CHAMPION:
        evaluations.score_unscored(project.id, user)
    return row


def rollback(project: Project, version: str, user: User | None) -> ModelVersion:
    """Make an earlier version the champion again, without comparison (audited); its suggestions are
    current at once, frames it never scored are scored by a job."""
    from mlflow.exceptions import MlflowException

    from models import registry

    target = evaluations.version_of(project, version)
    evaluations.check_fits(target)
    uri = _check_store()
    current = registry.alias_version(uri, target.registry_name)
    if current == target.version:
        raise Conflict(f"{target.registry_name} version {target.version} is already the champion")
    try:
        registry.promote(uri, target.registry_name, target.version)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise Conflict(f"{target.registry_name} version {target.version} is recorded here but not in the MLflow "
                           "registry (deleted there?): it cannot be the champion") from err
        raise Unavailable(f"the MLflow registry refused the rollback: {str(err).splitlines()[0][:300]}") from err
    db.session.execute(update(ModelVersion).where(ModelVersion.registry_name == target.registry_name,
                                                  ModelVersion.alias == "champion").values(alias=None))
    target.alias = "champion"
    audit.record("model.rollback", actor=user, project_id=project.id, target=("model_version", target.id),
                 registry_name=target.registry_name, version=target.version, previous_champion=current)
    evaluations.start(project, user, {"version": target.version, "scope": "unscored"})
    return target


@dataclass(frozen=True)
class VersionSummary:
    """A version of the project's model with its run, held-out metrics and alias."""

    id: int
    registry_name: str
    version: str
    alias: str | None
    champion: bool
    mlflow_run_id: str | None
    training_run_id: int | None
    source: str
    heldout_usable_auc: float | None
    heldout_usable_auc_low: float | None
    heldout_usable_auc_high: float | None
    outputs: list[str]
    created_at: datetime


@dataclass(frozen=True)
class OutputAgreement:
    """The champion's suggestions for one output against the settled labels."""

    output: str
    scans: int
    accuracy: float
    auc: float | None
    auc_low: float | None
    auc_high: float | None


@dataclass(frozen=True)
class ModelAgreement:
    """How the champion's current suggestions agree with the settled reviewer labels, per output."""

    version: str
    registry_name: str
    outputs: list[OutputAgreement]


def versions(project: Project) -> list[VersionSummary]:
    """Every version of the project's model, newest first, with its run, held-out metrics and alias."""
    rows = db.session.scalars(select(ModelVersion).where(ModelVersion.project_id == project.id)
                              .order_by(ModelVersion.id.desc()))
    runs = {run.model_version_id: run for run in db.session.scalars(
        select(TrainingRun).where(TrainingRun.project_id == project.id, TrainingRun.model_version_id.is_not(None)))}
    found = []
    for row in rows:
        run = runs.get(row.id)
        metrics = row.metrics or {}
        found.append(VersionSummary(
            id=row.id, registry_name=row.registry_name, version=row.version, alias=row.alias,
            champion=row.alias == "champion", mlflow_run_id=row.mlflow_run_id,
            training_run_id=run.id if run else None,
            source="miqa" if metrics.get("source") == "miqa" else "training",
            heldout_usable_auc=metrics.get("heldout_usable_auc"),
            heldout_usable_auc_low=metrics.get("heldout_usable_auc_low"),
            heldout_usable_auc_high=metrics.get("heldout_usable_auc_high"),
            outputs=[o["key"] for o in row.output_map if o["kind"] == "usable" or o.get("entry_id") is not None],
            created_at=row.created_at))
    return found


def evaluation_jobs(project: Project, limit: int = 20) -> list[Job]:
    return list(db.session.scalars(select(Job).where(Job.project_id == project.id, Job.kind == "evaluation")
                                   .order_by(Job.id.desc()).limit(limit)))


def agreement(project: Project) -> ModelAgreement | None:
    """How the champion's current suggestions agree with the settled reviewer labels, per output:
    AUC (undefined without both classes) and accuracy at 0.5, over scans that have both."""
    import numpy as np

    from training.data import label_items
    from training.metrics import defined, heldout_metrics

    from app.services import training

    model = review.champion(project.id)
    if model is None:
        return None
    outputs = training.candidate_outputs(project.id)
    items = {item.scan_id: item for item in label_items(training.records(project.id, resolve_files=False), outputs,
                                                         training.label_settings(project))}
    suggested = review.latest_evaluations(model, list(items))
    rows = []
    for output_index, output in enumerate(outputs):
        pairs = [(items[scan_id].targets[output_index], evaluation.scores[output.key])
                 for scan_id, evaluation in suggested.items()
                 if items[scan_id].mask[output_index] and isinstance(evaluation.scores.get(output.key), (int, float))]
        if not pairs:
            continue
        y = np.array([[p[0]] for p in pairs], dtype=float)
        score = np.array([[p[1]] for p in pairs], dtype=float)
        found = heldout_metrics([output], score, y, np.ones_like(y), [str(i) for i in range(len(pairs))])
        accuracy = float(((score[:, 0] >= 0.5) == (y[:, 0] >= 0.5)).mean())
        rows.append(OutputAgreement(
            output=output.key, scans=len(pairs), accuracy=accuracy,
            auc=found.get(f"{output.key}_auc") if defined(found.get(f"{output.key}_auc")) else None,
            auc_low=found.get(f"{output.key}_auc_low"), auc_high=found.get(f"{output.key}_auc_high")))
    return ModelAgreement(model.version, model.registry_name, rows)

