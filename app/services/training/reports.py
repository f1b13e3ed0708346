"""How a run reports itself: in words (evaluation, held-out AUCs, outputs left out, the champion gate)
and where to open it in MLflow."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from app.db import TrainingRun


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


@dataclass(frozen=True)
class HeldoutAuc:
    output: str
    auc: str  # "0.872 (95% CI 0.751-0.962, 20 vs 20)" or "undefined (...)"


@dataclass(frozen=True)
class SkippedOutput:
    output: str
    reason: str


@dataclass(frozen=True)
class RunReport:
    evaluation: str | None
    heldout_scans: int | None
    heldout: list[HeldoutAuc]
    skipped_outputs: list[SkippedOutput]
    champion_gate: str | None
    mlflow: str | None


def run_report(run: TrainingRun) -> RunReport:
    """What a run says about itself in words (the CLI prints it, the training page shows it): how it was
    evaluated, each output's held-out AUC with its interval (or why it is undefined), the outputs left
    out and why, whether it became the first champion, and how to open it in MLflow."""
    from training.metrics import defined, describe_auc

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
    heldout = [HeldoutAuc(key, describe_auc(metrics, key, "heldout_")) for key in params.get("outputs", [])] \
        if evaluation else []
    minimum = params.get("min_labels")
    skipped = [SkippedOutput(key, f"too few labels ({counts}; at least {minimum} of each needed)")
               for key, counts in (params.get("skipped_outputs") or {}).items()]
    return RunReport(how, int(scans) if defined(scans) else None, heldout, skipped, params.get("champion_gate"),
                     mlflow_how_to_open(run))
