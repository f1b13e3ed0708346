"""The "training" job: check, train, register, record; any failure ends the run with its reason.

The job checks everything it can before training (labels per output, both classes, image
files, MLflow store), so a bad run fails in seconds with one clear message on its Job and
TrainingRun rows; it registers a model only at the end, after checking that the vocabulary
did not change meanwhile, and writes the ModelVersion row only when registration worked.

Commits: the job is the boundary (the services it calls flush). It commits where the run's row must
say something while the job still runs, since pages, the API and the CLI read it from other
sessions during a training of minutes or hours: the run is running, which outputs are left out,
the MLflow run it opened (so a later failure still links to it), and at the end the recorded
version. A failure commits the run's end after a rollback, because the jobs service rolls back
the handler's session before writing the job's own outcome. Progress goes through
``JobContext.progress``, which writes on its own connection.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import select, update

from app.db import Job, ModelVersion, Project, TrainingRun, boundary, db, utcnow
from app.services import evaluations, frames, jobs, vocabulary
from app.services.errors import InvalidInput
from app.services.loaders import load
from app.services.training import candidate_outputs, is_2d, label_settings, records

log = logging.getLogger(__name__)

def _message(report: dict[str, Any]) -> str:
    """'fold 2/5 · epoch 3/30 step 2/5 loss 0.412 · epoch 2: train loss 0.45, val loss 0.50, val usable AUC 0.81':
    the running step's loss, then the metrics of the last finished epoch, each labelled with its epoch."""
    parts = [report["phase"]] if report.get("phase") else []
    running = f"epoch {report['epoch']}/{report['epochs']} step {report['step']}/{report['steps']}"
    loss = report.get("metrics", {}).get("train/step_loss")
    parts.append(running + (f" loss {loss:.3f}" if loss is not None else ""))
    finished = report.get("finished_epoch") or {}
    names = (("train/loss", "train loss"), ("val/loss", "val loss"), ("val/usable_auc", "val usable AUC"))
    shown = [f"{label} {finished[key]:.3f}" for key, label in names if key in finished]
    if shown:
        parts.append(f"epoch {finished['epoch']}: " + ", ".join(shown))
    return " · ".join(parts)


def _evaluation_line(dataset) -> str:
    if dataset.evaluation == "cv":
        return f"{dataset.folds}-fold cross-validation because {dataset.evaluation_reason}"
    return f"held-out test split ({dataset.evaluation_reason})"


def _end_run(run_id: int, state: str, error: str | None) -> None:
    db.session.rollback()
    run = db.session.get(TrainingRun, run_id)
    run.state, run.error, run.finished_at = state, error, utcnow()
    boundary.commit()


@jobs.handler("training")
def run_training(params: dict[str, Any], ctx: jobs.JobContext) -> dict[str, Any]:
    """Check, train, register, then record the ModelVersion; any failure ends the run with its reason."""
    from training.data import DatasetError
    from training.tracking import TrackingError
    from training.progress import TrainingCancelled

    run_id = params["run_id"]
    run = load(TrainingRun, run_id)
    run.job_id, run.state = ctx.job_id, "running"
    boundary.commit()
    try:
        result = _train(run, ctx)
    except (DatasetError, TrackingError) as err:
        _end_run(run_id, "failed", str(err))
        raise InvalidInput(str(err)) from err
    except TrainingCancelled as err:
        _end_run(run_id, "cancelled", None)
        raise jobs.JobCancelled() from err
    except jobs.JobCancelled:
        _end_run(run_id, "cancelled", None)
        raise
    except InvalidInput as err:
        _end_run(run_id, "failed", err.message)
        raise
    except Exception as err:
        _end_run(run_id, "failed", f"{type(err).__name__}: {err}")
        raise
    return result


@jobs.abandoned("training")
def end_abandoned_run(job: Job, state: str, reason: str) -> None:
    """The job ended without its handler (worker lost, Ctrl-C): end the run, so the project is free for
    the next one, withdraw any version it registered but never recorded, and end its MLflow run
    (KILLED when cancelled, else FAILED)."""
    from models import registry
    from training import tracking

    run = db.session.get(TrainingRun, job.params["run_id"])
    if run is None or run.state in ("succeeded", "failed", "cancelled"):
        return
    run.state, run.error, run.finished_at = state, reason if state == "failed" else None, utcnow()
    boundary.commit()
    if not run.mlflow_run_id:
        return
    uri = current_app.config["MLFLOW_TRACKING_URI"]
    name = load(Project, run.project_id).model_name
    recorded = set(db.session.scalars(select(ModelVersion.version).where(ModelVersion.registry_name == name)))
    withdrawn = registry.withdraw_unrecorded(uri, name, run.mlflow_run_id, recorded)
    if withdrawn:
        log.warning("training run %s: withdrew unrecorded %s version(s) %s", run.id, name, ", ".join(withdrawn))
    tracking.finish(uri, run.mlflow_run_id, "KILLED" if state == "cancelled" else "FAILED", reason)


def _train(run: TrainingRun, ctx: jobs.JobContext) -> dict[str, Any]:
    from models.preprocessing import PreprocessConfig
    from training.data import build_dataset, check_dataset, select_outputs
    from training.progress import TrainingCancelled
    from training.tracking import check_store
    from training.train import TrainConfig, train
    from training.transforms import AugmentConfig

    config = current_app.config
    project = load(Project, run.project_id)
    params = dict(run.params)
    ctx.progress(0.01, "checking labels, files and the MLflow store")
    frames.fill_checksums(project_id=project.id)  # every frame trains under its content's identity
    settings = label_settings(project)
    scans = records(project.id)
    candidates = candidate_outputs(project.id)
    if params["artifacts"] == "auto":
        outputs, skipped = select_outputs(scans, candidates, settings, params["min_labels"])
    else:
        outputs = [o for o in candidates if o.kind == "usable" or o.key in params["artifacts"]]
        skipped = {}
    if skipped:  # said at once: the page and the CLI show what will not be trained and why
        row = load(TrainingRun, run.id)
        row.params = {**row.params, "skipped_outputs": skipped}
        boundary.commit()
    dataset = build_dataset(scans, outputs, settings, seed=params["seed"], val_fraction=params["val_fraction"],
                            test_fraction=params["test_fraction"], evaluation=params["evaluation"],
                            folds=params["folds"])
    check_dataset(dataset, params["min_labels"])
    check_store(config["MLFLOW_TRACKING_URI"])
    version_at_start = vocabulary.vocabulary_version(project.id)
    two_d = is_2d(project.id)
    arch = params["arch"] or ("resnet18_2d" if two_d else "miqa")
    spatial = tuple(params["spatial_size"] or ((224, 224) if two_d else (64, 64, 64)))
    # the whole volume: on bench/learning.py's held-out scans it beat native-grid tiles from scratch
    # (usable AUC 0.70 vs 0.57); a warm start from MIQA takes MIQA's tiles whatever this says
    fit = params["fit"] or "resize"
    app = current_app._get_current_object()

    def progress(report: dict[str, Any]) -> None:
        with app.app_context():
            try:
                ctx.progress(0.05 + 0.85 * report["fraction"], _message(report))
            except jobs.JobCancelled as err:
                raise TrainingCancelled() from err

    def vocabulary_unchanged() -> None:
        db.session.expire_all()
        if vocabulary.vocabulary_version(project.id) != version_at_start:
            from training.data import DatasetError

            raise DatasetError("the project's vocabulary changed during the run; nothing was registered, "
                               "start a new run")
        ctx.progress(0.95, "registering the model")

    def mlflow_run_opened(mlflow_run_id: str, experiment_id: str) -> None:
        """Record the MLflow run at once: a run that fails from here on still links to it."""
        row = load(TrainingRun, run.id)
        row.mlflow_run_id = mlflow_run_id
        row.params = {**row.params, "mlflow_experiment_id": experiment_id}
        boundary.commit()

    work_dir = Path(config["INSTANCE_PATH"]) / "training" / f"run-{run.id}"
    cfg = TrainConfig(
        dataset=dataset, tracking_uri=config["MLFLOW_TRACKING_URI"], artifact_root=config["MLFLOW_ARTIFACT_ROOT"],
        experiment=project.model_name, model_name=project.model_name, work_dir=work_dir,
        cache_dir=Path(config["CACHE_DIR"]) / "training", preprocess=PreprocessConfig(spatial_size=spatial, fit=fit),
        augmentation=AugmentConfig(synthesis={k: float(v) for k, v in params["synthesis"].items() if v > 0}),
        arch=arch, init=params["from"], miqa_weights=config.get("MIQA_WEIGHTS") or None, epochs=params["epochs"],
        batch_size=params["batch_size"], lr=float(params["lr"]), weight_decay=float(params["weight_decay"]),
        patience=params["patience"], seed=params["seed"],
        accelerator=config["TRAIN_ACCELERATOR"], devices=config["TRAIN_DEVICES"], strategy=config["TRAIN_STRATEGY"],
        num_workers=config["TRAIN_NUM_WORKERS"], run_name=f"{project.name} run {run.id}",
        params={"project": project.name, "qcloop_run_id": run.id, "vocabulary_version": version_at_start,
                "label_rule": settings.label_rule, "questionable": settings.questionable,
                "min_labels_per_class": params["min_labels"], "skipped_outputs": skipped},
        tags={"qcloop.project": project.name, "qcloop.run_id": str(run.id)},
        progress=progress, before_register=vocabulary_unchanged, on_run_opened=mlflow_run_opened,
    )
    left_out = f"; left out (too few labels): {', '.join(f'{k} ({v})' for k, v in skipped.items())}" if skipped else ""
    ctx.progress(0.03, f"training {', '.join(o.key for o in outputs)} on {len(dataset.items)} frames; "
                       f"{_evaluation_line(dataset)}{left_out}")
    result = train(cfg)
    try:
        model_version = _record_result(run.id, project, params, outputs, skipped, result)
        boundary.commit()
    except Exception as err:
        db.session.rollback()
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0][:300]
        _withdraw(cfg.tracking_uri, project.model_name, result, reason)
        raise RuntimeError(f"the database could not record {project.model_name} version {result.version} "
                           f"({reason}); the version was withdrawn from the registry") from err
    if result.alias == "champion":  # the first champion scores every frame of the project
        evaluations.score_unscored(project.id)
    return {"training_run_id": run.id, "model_version_id": model_version.id, "version": result.version,
            "alias": result.alias, "mlflow_run_id": result.run_id}


def _record_result(run_id: int, project: Project, params: dict[str, Any], outputs, skipped: dict[str, str],
                   result) -> ModelVersion:
    """The ModelVersion row and the finished run (flushed; the job commits); the alias just given moves off
    any older row."""
    db.session.execute(update(ModelVersion).where(ModelVersion.registry_name == project.model_name,
                                                  ModelVersion.alias == result.alias).values(alias=None))
    metrics = dict(result.metrics)
    if result.champion_version is not None:  # which champion the champion_<split>_usable_* scores belong to
        metrics["champion_version"] = result.champion_version
    model_version = ModelVersion(project_id=project.id, registry_name=project.model_name, version=result.version,
                                 alias=result.alias, mlflow_run_id=result.run_id, output_map=result.output_map,
                                 metrics=metrics)
    db.session.add(model_version)
    db.session.flush()
    run = load(TrainingRun, run_id)
    run.params = {**params, "arch": result.arch, "spatial_size": list(result.preprocessing["spatial_size"]),
                  "preprocessing": result.preprocessing, "outputs": [o.key for o in outputs],
                  "skipped_outputs": skipped, "dataset_hash": result.dataset_hash,
                  "evaluation_used": result.evaluation, "evaluation_reason": result.evaluation_reason,
                  "champion_gate": result.gate, "mlflow_experiment_id": result.experiment_id}
    run.metrics = {**metrics, "epochs_run": result.epochs_run}
    run.mlflow_run_id, run.model_version_id = result.run_id, model_version.id
    run.state, run.finished_at = "succeeded", utcnow()
    db.session.flush()
    return model_version


def _withdraw(tracking_uri: str, model_name: str, result, error: str) -> None:
    """The database refused the finished run: unregister its version and mark its MLflow run FAILED."""
    from models import registry
    from training import tracking

    log.error("training run %s could not be recorded (%s); withdrawing %s version %s",
              result.run_id, error, model_name, result.version)
    try:
        registry.withdraw(tracking_uri, model_name, result.version)
    except Exception:  # noqa: BLE001 - keep the original error; say what is left behind
        log.exception("could not delete %s version %s from the MLflow registry", model_name, result.version)
    tracking.finish(tracking_uri, result.run_id, "FAILED", f"not recorded in qcloop: {error}")


