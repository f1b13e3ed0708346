"""Retraining on reviewer decisions: run rows, the "training" job, and the records training reads.

The job checks everything it can before training (labels per output, both classes, image
files, MLflow store), so a bad run fails in seconds with one clear message on its Job and
TrainingRun rows; it registers a model only at the end, after checking that the vocabulary
did not change meanwhile, and writes the ModelVersion row only when registration worked.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.orm import selectinload

from app.db import Decision, Experiment, Job, ModelVersion, Project, Scan, TrainingRun, User, db, utcnow
from app.services import audit, evaluations, frames, jobs, projects, vocabulary
from app.services.errors import Conflict, InvalidInput, NotFound, Unavailable
from app.storage import StorageError, local_copy, resolve
from training.metrics import defined, first_champion_gate

log = logging.getLogger(__name__)

INITS = ("scratch", "miqa", "champion")
ARCHS_3D = ("miqa", "densenet_small", "resnet_small", "densenet121", "resnet18")
EVALUATIONS = ("auto", "holdout", "cv")
FITS = ("resize", "pad_crop", "tiles")
FINAL_STATES = ("succeeded", "failed", "cancelled")


class _Spec:
    """One accepted run parameter: type, default and check."""

    def __init__(self, kind: type | tuple, default: Any, check=None, message: str = "") -> None:
        self.kind, self.default, self.check, self.message = kind, default, check, message


_PARAMS = {
    "epochs": _Spec(int, 30, lambda v: 1 <= v <= 1000, "epochs must be an integer from 1 to 1000"),
    "from": _Spec(str, "scratch", lambda v: v in INITS, f"from must be one of {', '.join(INITS)}"),
    "arch": _Spec((str, type(None)), None, lambda v: v is None or v in ARCHS_3D + ("resnet18_2d",),
                  f"arch must be one of {', '.join(ARCHS_3D + ('resnet18_2d',))}"),
    "batch_size": _Spec(int, 8, lambda v: 1 <= v <= 512, "batch_size must be an integer from 1 to 512"),
    "lr": _Spec((float, int), 1e-3, lambda v: 0 < v < 1, "lr must be a number in (0, 1)"),
    "patience": _Spec(int, 8, lambda v: 1 <= v <= 1000, "patience must be an integer from 1 to 1000"),
    "weight_decay": _Spec((float, int), 1e-2, lambda v: 0 <= v < 1, "weight_decay must be a number in [0, 1)"),
    "evaluation": _Spec(str, "auto", lambda v: v in EVALUATIONS, f"evaluation must be one of {', '.join(EVALUATIONS)}"),
    "folds": _Spec(int, 5, lambda v: 2 <= v <= 20, "folds must be an integer from 2 to 20"),
    "fit": _Spec((str, type(None)), None, lambda v: v is None or v in FITS, f"fit must be one of {', '.join(FITS)}"),
    "seed": _Spec(int, 0, lambda v: 0 <= v < 2**31, "seed must be a non-negative integer"),
    "spatial_size": _Spec((list, type(None)), None,
                          lambda v: v is None or (len(v) in (2, 3) and all(isinstance(n, int) and 8 <= n <= 512
                                                                            for n in v)),
                          "spatial_size must be 2 or 3 integers from 8 to 512"),
    "min_labels": _Spec((int, type(None)), None, lambda v: v is None or 1 <= v <= 100000,
                        "min_labels must be a positive integer"),
    "artifacts": _Spec((str, list), "auto", lambda v: v == "auto" or all(isinstance(k, str) for k in v),
                       "artifacts must be 'auto' or a list of artifact keys"),
    "synthesis": _Spec(dict, {}, lambda v: all(isinstance(p, (int, float)) and 0 <= p <= 1 for p in v.values()),
                       "synthesis must map artifact keys to probabilities in [0, 1]"),
    "val_fraction": _Spec((float, int), 0.15, lambda v: 0 < v < 0.5, "val_fraction must be in (0, 0.5)"),
    "test_fraction": _Spec((float, int), 0.15, lambda v: 0 <= v < 0.5, "test_fraction must be in [0, 0.5)"),
}


def clean_params(project: Project, body: dict[str, Any]) -> dict[str, Any]:
    """The run's parameters with defaults filled in; InvalidInput names the first bad field."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be an object")
    unknown = sorted(set(body) - set(_PARAMS))
    if unknown:
        raise InvalidInput(f"unknown parameter(s): {', '.join(unknown)}", field=unknown[0])
    params = {}
    for name, spec in _PARAMS.items():
        value = body.get(name, spec.default)
        if isinstance(value, bool) or not isinstance(value, spec.kind) or not spec.check(value):
            raise InvalidInput(spec.message, field=name)
        params[name] = value
    active = {entry.key for entry in vocabulary.artifact_entries(project.id)}
    chosen = [] if params["artifacts"] == "auto" else params["artifacts"]
    for key in list(chosen) + list(params["synthesis"]):
        if key not in active:
            raise InvalidInput(f"{key!r} is not an active artifact entry of this project", field="artifacts")
    from training.transforms import SYNTHESIZABLE

    for key in params["synthesis"]:
        if key not in SYNTHESIZABLE:
            raise InvalidInput(f"no synthetic artifact for {key!r}; choose from {', '.join(SYNTHESIZABLE)}",
                               field="synthesis")
    if params["from"] == "miqa" and not current_app.config.get("MIQA_WEIGHTS"):
        raise InvalidInput("starting from MIQA needs QCLOOP_MIQA_WEIGHTS (a local copy of MIQA's weights)",
                           field="from")
    if params["min_labels"] is None:
        params["min_labels"] = min_labels(project)
    return params


# --- records for training/data.py -----------------------------------------------------------------

def _scans(project_id: int) -> list[Scan]:
    return list(db.session.scalars(
        select(Scan).join(Experiment)
        .where(Experiment.project_id == project_id, Scan.archived_at.is_(None), Experiment.archived_at.is_(None))
        .options(selectinload(Scan.frames)).order_by(Scan.id)))


def _decisions(project_id: int) -> dict[int, list[Decision]]:
    rows = db.session.scalars(
        select(Decision).join(Scan).join(Experiment).where(Experiment.project_id == project_id)
        .options(selectinload(Decision.option), selectinload(Decision.artifacts)))
    by_scan: dict[int, list[Decision]] = {}
    for decision in rows:
        by_scan.setdefault(decision.scan_id, []).append(decision)
    return by_scan


def records(project_id: int, resolve_files: bool = True):
    """Plain ScanRecords of every reviewed scan; with ``resolve_files``, every frame as a local path.

    Raises InvalidInput listing (up to five) frames whose files are missing or outside the roots.
    """
    from training.data import DecisionRecord, FrameRecord, ScanRecord

    by_scan = _decisions(project_id)
    result, missing = [], []
    cache = Path(current_app.config["CACHE_DIR"])
    for scan in _scans(project_id):
        if scan.id not in by_scan:
            continue
        frames = []
        for frame in scan.frames:
            path = frame.file_location
            if resolve_files:
                try:
                    path = str(local_copy(resolve(frame.file_location), cache))
                except StorageError as err:
                    missing.append(f"{scan.name} frame {frame.frame_number}: {err}")
                    continue
            frames.append(FrameRecord(frame.id, path, frame.checksum or ""))
        decisions = tuple(DecisionRecord(d.option.meaning, d.creator_role, d.created_at,
                                         {a.entry_id: a.state for a in d.artifacts}, d.id) for d in by_scan[scan.id])
        result.append(ScanRecord(scan.id, scan.subject_id or f"scan-{scan.id}", tuple(frames), decisions))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise InvalidInput(f"{len(missing)} image file(s) missing or unreadable: {'; '.join(missing[:5])}{more}")
    return result


def candidate_outputs(project_id: int):
    from training.data import USABLE, Output

    return [USABLE] + [Output("artifact", e.key, e.id) for e in vocabulary.artifact_entries(project_id)]


def label_settings(project: Project):
    from training.data import DatasetError, LabelSettings

    try:
        return LabelSettings.from_project(projects.settings_of(project))
    except DatasetError as err:
        raise InvalidInput(str(err), field="settings") from err


def min_labels(project: Project) -> int:
    """The project's minimum of present and of absent labels per trained output (setting min_labels_per_class)."""
    return int(projects.settings_of(project)["min_labels_per_class"])


def label_counts(project: Project) -> list[dict[str, Any]]:
    """How many present/absent labels each possible output has (settled decisions, every frame)."""
    from training.data import label_counts as count, label_items

    outputs = candidate_outputs(project.id)
    counts = count(label_items(records(project.id, resolve_files=False), outputs, label_settings(project)), outputs)
    minimum = min_labels(project)
    return [{"key": o.key, "kind": o.kind, "entry_id": o.entry_id, **counts[o.key],
             "enough": min(counts[o.key].values()) >= minimum} for o in outputs]


def is_2d(project_id: int) -> bool:
    """True when every frame of the project is a 2-D image (the 2-D backbone is then the default)."""
    shapes = [frame.shape for scan in _scans(project_id) for frame in scan.frames if frame.shape]
    return bool(shapes) and all(len(s) == 2 or (len(s) == 3 and s[2] == 1) for s in shapes)


# --- runs -----------------------------------------------------------------------------------------

def _new_run(project: Project, user: User | None, body: dict[str, Any]) -> TrainingRun:
    params = clean_params(project, body)
    active = db.session.scalar(select(TrainingRun.id).where(TrainingRun.project_id == project.id,
                                                            TrainingRun.state.in_(("queued", "running"))))
    if active is not None:
        raise Conflict(f"training run {active} of this project has not finished yet", run_id=active)
    run = TrainingRun(project_id=project.id, created_by_id=user.id if user is not None and user.is_authenticated
                      else None, params=params, state="queued")
    db.session.add(run)
    db.session.commit()
    return run


def start_run(project: Project, user: User | None, body: dict[str, Any]) -> TrainingRun:
    """Create the run and queue its job (which runs at once when the queue is immediate)."""
    run = _new_run(project, user, body)
    job = jobs.enqueue("training", {"run_id": run.id}, project_id=project.id, user=user)
    db.session.expire_all()
    run = get_run(run.id)
    if run.job_id is None:
        run.job_id = job.id
        db.session.commit()
    return run


def create_run(project: Project, user: User | None, body: dict[str, Any]) -> TrainingRun:
    """Create the run and its job row without queuing it (the CLI's --inline runs it in its own process)."""
    run = _new_run(project, user, body)
    job = Job(kind="training", params={"run_id": run.id}, project_id=project.id, created_by_id=run.created_by_id)
    db.session.add(job)
    db.session.flush()
    run.job_id = job.id
    db.session.commit()
    return run


def get_run(run_id: int) -> TrainingRun:
    run = db.session.get(TrainingRun, run_id)
    if run is None:
        raise NotFound("Not found.")
    return run


def runs_query(project_id: int):
    return select(TrainingRun).where(TrainingRun.project_id == project_id).order_by(TrainingRun.id.desc())


def recent_runs(project_id: int, limit: int) -> list[TrainingRun]:
    return list(db.session.scalars(runs_query(project_id).limit(limit)))


def cancel_run(run: TrainingRun) -> TrainingRun:
    job = db.session.get(Job, run.job_id) if run.job_id else None
    if job is None or run.state in FINAL_STATES:
        raise Conflict(f"training run {run.id} has already ended ({run.state})")
    jobs.cancel(job)
    if job.state == "cancelled":
        run.state, run.finished_at = "cancelled", utcnow()
        db.session.commit()
    return run


def mlflow_url(run: TrainingRun) -> str | None:
    """A browser link to the MLflow run: QCLOOP_MLFLOW_UI_URL, else the tracking server when it is HTTP."""
    if not run.mlflow_run_id:
        return None
    base = current_app.config.get("MLFLOW_UI_URL") or ""
    uri = current_app.config["MLFLOW_TRACKING_URI"]
    if not base and uri.startswith(("http://", "https://")):
        base = uri
    if not base:
        return None
    experiment = (run.params or {}).get("mlflow_experiment_id", "0")
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs/{run.mlflow_run_id}"


def mlflow_how_to_open(run: TrainingRun) -> str | None:
    """Where to see the run in MLflow: its URL, or for a local store the command that serves it."""
    url = mlflow_url(run)
    if url or not run.mlflow_run_id:
        return url
    uri = current_app.config["MLFLOW_TRACKING_URI"]
    experiment = (run.params or {}).get("mlflow_experiment_id", "0")
    return (f"mlflow ui --backend-store-uri {uri} --port 5000, then open "
            f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run.mlflow_run_id}")


def run_report(run: TrainingRun) -> dict[str, Any]:
    """What a run says about itself in words (the CLI prints it, the training page shows it): how it was
    evaluated, each output's held-out AUC with its interval (or why it is undefined), the outputs left
    out and why, whether it became the first champion, and how to open it in MLflow."""
    from training.metrics import describe_auc

    params, metrics = run.params or {}, run.metrics or {}
    evaluation = params.get("evaluation_used")
    if evaluation == "cv":
        how = (f"{params.get('folds')}-fold cross-validation (each scan scored by a model that never saw it) "
               f"because {params.get('evaluation_reason')}")
    elif evaluation == "holdout":
        how = f"held-out test split: {params.get('evaluation_reason')}"
    else:
        how = None
    scans = metrics.get("heldout_scans")
    heldout = [{"output": key, "auc": describe_auc(metrics, key, "heldout_")} for key in params.get("outputs", [])] \
        if evaluation else []
    minimum = params.get("min_labels")
    skipped = [{"output": key, "reason": f"too few labels ({counts}; at least {minimum} of each needed)"}
               for key, counts in (params.get("skipped_outputs") or {}).items()]
    return {"evaluation": how, "heldout_scans": int(scans) if defined(scans) else None, "heldout": heldout,
            "skipped_outputs": skipped, "champion_gate": params.get("champion_gate"),
            "mlflow": mlflow_how_to_open(run)}


def run_json(run: TrainingRun) -> dict[str, Any]:
    job = db.session.get(Job, run.job_id) if run.job_id else None
    state = run.state
    if job is not None and job.state in FINAL_STATES and state not in FINAL_STATES:
        state = job.state
    version = db.session.get(ModelVersion, run.model_version_id) if run.model_version_id else None
    return {
        "id": run.id, "project_id": run.project_id, "state": state, "params": run.params, "metrics": run.metrics,
        "error": run.error or (job.error if job is not None and state == "failed" else None),
        "progress": job.progress if job is not None else 0.0, "message": job.message if job is not None else "",
        "job_id": run.job_id, "mlflow_run_id": run.mlflow_run_id, "mlflow_url": mlflow_url(run),
        "report": run_report(run),
        "model_version": None if version is None else {
            "id": version.id, "registry_name": version.registry_name, "version": version.version,
            "alias": version.alias, "output_map": version.output_map},
        "created_by_id": run.created_by_id,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


# --- the job --------------------------------------------------------------------------------------

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
    db.session.commit()


@jobs.handler("training")
def run_training(params: dict[str, Any], ctx: jobs.JobContext) -> dict[str, Any]:
    """Check, train, register, then record the ModelVersion; any failure ends the run with its reason."""
    from training.data import DatasetError
    from training.tracking import TrackingError
    from training.train import TrainingCancelled

    run_id = params["run_id"]
    run = get_run(run_id)
    run.job_id, run.state = ctx.job_id, "running"
    db.session.commit()
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


def _train(run: TrainingRun, ctx: jobs.JobContext) -> dict[str, Any]:
    from models.preprocessing import PreprocessConfig
    from training.data import build_dataset, check_dataset, select_outputs
    from training.tracking import check_store
    from training.train import TrainConfig, TrainingCancelled, train
    from training.transforms import AugmentConfig

    config = current_app.config
    project = projects.get_project(run.project_id)
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
        row = get_run(run.id)
        row.params = {**row.params, "skipped_outputs": skipped}
        db.session.commit()
    dataset = build_dataset(scans, outputs, settings, seed=params["seed"], val_fraction=params["val_fraction"],
                            test_fraction=params["test_fraction"], evaluation=params["evaluation"],
                            folds=params["folds"])
    check_dataset(dataset, params["min_labels"])
    check_store(config["MLFLOW_TRACKING_URI"])
    version_at_start = vocabulary.vocabulary_version(project.id)
    two_d = is_2d(project.id)
    arch = params["arch"] or ("resnet18_2d" if two_d else "miqa")
    spatial = tuple(params["spatial_size"] or ((224, 224) if two_d else (64, 64, 64)))
    # 3-D: native-grid tiles (fine artifacts such as ghosting and ringing survive; no resizing away)
    fit = params["fit"] or ("resize" if two_d else "tiles")
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
        row = get_run(run.id)
        row.mlflow_run_id = mlflow_run_id
        row.params = {**row.params, "mlflow_experiment_id": experiment_id}
        db.session.commit()

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
    """The ModelVersion row and the finished run; the alias just given moves off any older row."""
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
    run = get_run(run_id)
    run.params = {**params, "arch": result.arch, "spatial_size": list(result.preprocessing["spatial_size"]),
                  "preprocessing": result.preprocessing, "outputs": [o.key for o in outputs],
                  "skipped_outputs": skipped, "dataset_hash": result.dataset_hash,
                  "evaluation_used": result.evaluation, "evaluation_reason": result.evaluation_reason,
                  "champion_gate": result.gate, "mlflow_experiment_id": result.experiment_id}
    run.metrics = {**metrics, "epochs_run": result.epochs_run}
    run.mlflow_run_id, run.model_version_id = result.run_id, model_version.id
    run.state, run.finished_at = "succeeded", utcnow()
    db.session.commit()
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


# --- promotion ------------------------------------------------------------------------------------

# The held-out metric a candidate is compared on with the champion when it carries no score of the
# current champion on its own held-out scans (each then on its own run's held-out scans).
PROMOTION_METRIC = "heldout_usable_auc"


def _verdict(metric: str, ours: float, theirs: float, same_split: bool, note: str) -> dict[str, Any]:
    """One comparison whose reason names the metric and how it was measured (shown on the page and in a 409)."""
    better = ours > theirs
    return {"metric": metric, "candidate": ours, "champion": theirs, "better": better, "same_split": same_split,
            "reason": f"{metric} {ours:.4f} {'>' if better else '<='} {theirs:.4f}, {note}"}


def compare_metrics(run_id: int, candidate: dict[str, Any], champion_version: str | None,
                    champion: dict[str, Any] | None) -> dict[str, Any]:
    """Candidate against champion; "better" means strictly higher usable AUC.

    The candidate needs a defined held-out usable AUC. When its run scored this very champion
    version on the same held-out scans (``champion_heldout_usable_auc``, written by training),
    both are compared there; otherwise each on its own run's held-out scans, and the reason says
    why that weaker comparison was made.
    """
    if champion_version is None:
        eligible, why = first_champion_gate(candidate)
        return {"metric": None, "candidate": None, "champion": None, "better": eligible, "same_split": False,
                "champion_version": None, "reason": f"there is no champion yet; {why}"}
    scored = candidate.get("champion_version")
    ours, theirs = candidate.get(PROMOTION_METRIC), candidate.get(f"champion_{PROMOTION_METRIC}")
    if not defined(ours):
        return {"metric": None, "candidate": None, "champion": None, "better": False, "same_split": False,
                "champion_version": champion_version,
                "reason": f"run {run_id} has no defined held-out usable AUC (its held-out scans lack a class)"}
    if scored == champion_version and defined(theirs):
        return {**_verdict(f"usable AUC on run {run_id}'s held-out scans", float(ours), float(theirs), True,
                           "both models scored on the same scans"), "champion_version": champion_version}
    if scored == champion_version:
        why = f"run {run_id}'s held-out scans gave no usable AUC of champion v{champion_version}"
    elif scored:
        why = f"run {run_id} scored champion v{scored} on its held-out scans, not the current v{champion_version}"
    else:
        why = f"run {run_id} has no score of champion v{champion_version} on its held-out scans"
    if defined((champion or {}).get(PROMOTION_METRIC)):
        return {**_verdict(PROMOTION_METRIC, float(ours), float(champion[PROMOTION_METRIC]), False,
                           f"each on its own run's held-out scans: {why}"), "champion_version": champion_version}
    return {"metric": None, "candidate": None, "champion": None, "better": False, "same_split": False,
            "champion_version": champion_version,
            "reason": f"{why}, and the champion has no held-out usable AUC ({PROMOTION_METRIC})"}


def _candidate(project_id: int, run_id: int) -> tuple[TrainingRun, ModelVersion]:
    run = get_run(run_id)
    if run.project_id != project_id:
        raise NotFound("Not found.")
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


def promotion_preview(run: dict[str, Any], champion: ModelVersion | None) -> dict[str, Any] | None:
    """For the page: how a run's model compares with the recorded champion (None when nothing to promote)."""
    version = run.get("model_version")
    if not version or version["alias"] == "champion":
        return None
    return compare_metrics(run["id"], run.get("metrics") or {}, None if champion is None else champion.version,
                           None if champion is None else champion.metrics or {})


def promote_run(project_id: int, run_id: int, user: User | None, force: Any = False) -> dict[str, Any]:
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
        if not comparison["better"] and not force:
            against = "chance" if current is None else f"the champion (version {current})"
            raise Conflict(f"{name} version {candidate.version} is not better than {against}: "
                           f"{comparison['reason']}; an admin may promote it anyway with force",
                           comparison=comparison)
        registry.promote(uri, name, candidate.version)
    except MlflowException as err:
        raise Unavailable(f"the MLflow registry refused the promotion: {str(err).splitlines()[0][:300]}") from err
    forced = not comparison["better"]
    db.session.execute(update(ModelVersion).where(ModelVersion.registry_name == name,
                                                  ModelVersion.alias == "champion",
                                                  ModelVersion.id != candidate.id).values(alias=None))
    candidate.alias = "champion"
    audit.record("model.force_promote" if forced else "model.promote", actor=user, project_id=project_id,
                 target=("model_version", candidate.id), registry_name=name, version=candidate.version,
                 previous_champion=current, training_run=run.id, comparison=comparison)
    db.session.commit()
    log.info("%s version %s promoted to champion (was %s)%s", name, candidate.version, current,
             " by force" if forced else "")
    evaluations.score_unscored(project_id, user)
    return {"run": run_json(run), "comparison": comparison, "forced": forced, "previous_champion": current}
