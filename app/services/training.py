"""Retraining on reviewer decisions: run parameters and rows, the records training reads, and how
a run reports itself. The job itself is :mod:`app.services.training_job`; promotion is
:mod:`app.services.promotion`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.db import Decision, Experiment, Job, ModelVersion, Project, Scan, TrainingRun, User, db, utcnow
from app.services import jobs, projects, vocabulary
from app.services.errors import Conflict, InvalidInput, NotFound
from app.storage import StorageError, local_copy, resolve
from training.metrics import defined

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


def label_rules() -> tuple[str, ...]:
    """How a scan's decisions settle into its label (the project setting ``label_rule``)."""
    from training.data import LABEL_RULES

    return LABEL_RULES


def form_choices() -> dict[str, tuple[str, ...]]:
    """What the Retrain form offers: the networks and the artifacts that can be synthesized."""
    from models.networks import ARCHITECTURES
    from training.transforms import SYNTHESIZABLE

    return {"architectures": ARCHITECTURES, "synthesizable": SYNTHESIZABLE}


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
    jobs.reap_abandoned()  # a run whose worker is gone ends here instead of blocking the project
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
