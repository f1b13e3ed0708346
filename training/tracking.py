"""Every MLflow call of a training run: store check, experiment, logger, params, plots, model.

The run is opened by Lightning's ``MLFlowLogger`` (metrics per step and epoch); this module
adds the parameters that describe the data and code, the manifest and the plots, and logs
the network with ``mlflow.pytorch.log_model`` (input signature, the output-to-vocabulary map
and preprocessing as model metadata), registered under the project's model name.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import numpy as np
import requests
import torch
from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from training.data import Output

log = logging.getLogger(__name__)

# Never let an unreachable tracking server turn into minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

PARAM_MAX = 6000


class TrackingError(RuntimeError):
    """The MLflow store cannot be used (unreachable, unwritable, refused)."""


def check_store(uri: str) -> None:
    """Fail early and clearly when the tracking store cannot be reached or written."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=3)
        except requests.RequestException as err:
            raise TrackingError(f"MLflow server {uri} is unreachable ({type(err).__name__})") from err
        if not response.ok:
            raise TrackingError(f"MLflow server {uri} answered {response.status_code} to /health")
        return
    if parsed.scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise TrackingError(f"MLflow store folder {path.parent} is missing or not writable")
        if path.exists():
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
                    connection.execute("SELECT 1")
            except sqlite3.Error as err:
                raise TrackingError(f"MLflow store {path} cannot be read: {err}") from err
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure here means the store is unusable
        raise TrackingError(f"MLflow store {uri} cannot be used: {str(err).splitlines()[0][:300]}") from err


def ensure_experiment(uri: str, name: str, artifact_root: str) -> str:
    """The experiment's id, creating it with artifacts under ``artifact_root/<name>`` (a file URI when local)."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    if "://" in artifact_root:
        location = artifact_root.rstrip("/") + "/" + name
    else:
        folder = Path(artifact_root).resolve() / name
        folder.mkdir(parents=True, exist_ok=True)
        location = folder.as_uri()
    return client.create_experiment(name, artifact_location=location)


def make_logger(uri: str, experiment: str, run_name: str, tags: dict[str, str]) -> MLFlowLogger:
    return MLFlowLogger(experiment_name=experiment, run_name=run_name, tracking_uri=uri, tags=tags,
                        log_model=False, synchronous=False)


def open_run(uri: str, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """A new run outside Lightning (a model registered without training, e.g. MIQA's); returns its id."""
    return MlflowClient(tracking_uri=uri).create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def code_version() -> str:
    """``git describe`` of the checkout when there is one, else the installed package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=root,
                                   capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        if described:
            return described
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "qcloop " + version("qcloop")
    except PackageNotFoundError:
        return "unknown"


def log_params(uri: str, run_id: str, params: dict[str, Any]) -> None:
    """Log parameters (values as JSON when not plain text, cut to MLflow's length limit)."""
    items = [Param(key, (value if isinstance(value, str) else json.dumps(value, sort_keys=True))[:PARAM_MAX])
             for key, value in sorted(params.items())]
    MlflowClient(tracking_uri=uri).log_batch(run_id, params=items)


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    import time

    now = int(time.time() * 1000)
    MlflowClient(tracking_uri=uri).log_batch(
        run_id, metrics=[Metric(key, float(value), now, step) for key, value in sorted(metrics.items())])


def log_files(uri: str, run_id: str, paths: Sequence[Path], folder: str | None = None) -> None:
    client = MlflowClient(tracking_uri=uri)
    for path in paths:
        client.log_artifact(run_id, str(path), folder)


def metric_history(uri: str, run_id: str, keys: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    client = MlflowClient(tracking_uri=uri)
    return {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in keys}


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def plots(folder: Path, outputs: Sequence[Output], logits: np.ndarray, targets: np.ndarray, mask: np.ndarray,
          curves: dict[str, list[tuple[int, float]]]) -> list[Path]:
    """Confusion matrix of the usable output, one ROC per output with both classes, learning curves."""
    from sklearn.metrics import confusion_matrix, roc_curve

    plt = _figure()
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for index, output in enumerate(outputs):
        judged = mask[:, index] > 0
        y, score = targets[judged, index], logits[judged, index]
        if len(np.unique(y)) < 2:
            continue
        if output.kind == "usable":
            matrix = confusion_matrix(y, score > 0, labels=[0, 1])
            fig, ax = plt.subplots(figsize=(4, 4))
            ax.imshow(matrix, cmap="Blues")
            for (row, col), value in np.ndenumerate(matrix):
                ax.text(col, row, str(value), ha="center", va="center")
            ax.set_xticks([0, 1], ["unusable", "usable"])
            ax.set_yticks([0, 1], ["unusable", "usable"])
            ax.set_xlabel("predicted")
            ax.set_ylabel("reviewers")
            ax.set_title("usable: confusion matrix")
            made.append(_save(fig, folder / "confusion_usable.png", plt))
        fpr, tpr, _ = roc_curve(y, score)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(fpr, tpr)
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"{output.key}: ROC")
        made.append(_save(fig, folder / f"roc_{output.key}.png", plt))
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, points in curves.items():
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o", label=key)
    ax.set_xlabel("step")
    ax.set_title("learning curves")
    ax.legend()
    made.append(_save(fig, folder / "learning_curves.png", plt))
    return made


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def log_model(uri: str, run_id: str, model: torch.nn.Module, example: torch.Tensor, registered_name: str,
              metadata: dict[str, Any]) -> str:
    """Log the network with an input signature and metadata, register it; returns the version number."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    model = model.eval().cpu()
    with torch.no_grad():
        prediction = model(example.cpu()).numpy()
    signature = infer_signature(example.cpu().numpy(), prediction)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"monai=={_version('monai')}",
                    f"torchvision=={_version('torchvision').split('+')[0]}"]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # Pickled on purpose (qcloop's own networks, loaded only by qcloop): MLflow's warning about it says nothing new.
    pickle_warning = logging.getLogger("mlflow.pytorch")
    level = pickle_warning.level
    pickle_warning.setLevel(logging.ERROR)
    try:
        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            info = mlflow.pytorch.log_model(model, name="model", signature=signature, metadata=metadata,
                                            registered_model_name=registered_name, pip_requirements=requirements,
                                            serialization_format="pickle")
    finally:
        pickle_warning.setLevel(level)
    version = str(info.registered_model_version)
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_model_version_tag(
        registered_name, version, "output_map", json.dumps(metadata["output_map"]))
    return version


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def finish(uri: str, run_id: str, status: str, error: str | None = None) -> None:
    """Close the run with FINISHED, FAILED or KILLED (and the reason as a tag)."""
    client = MlflowClient(tracking_uri=uri)
    try:
        if error:
            client.set_tag(run_id, "qcloop.error", error[:5000])
        client.set_terminated(run_id, status)
    except MlflowException:
        log.exception("could not close MLflow run %s", run_id)
