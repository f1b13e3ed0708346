"""Retraining on reviewer decisions, one concern a module: run parameters (:mod:`.params`), the records
training reads (:mod:`.records`), runs (:mod:`.runs`) and their reports (:mod:`.reports`). The job
itself is :mod:`app.services.training_job`; promotion is :mod:`app.services.promotion`.

Web modules reach training only through here (they never import ``training/`` or ``models/``).
"""
from app.services.training.params import (
    ARCHS_3D, EVALUATIONS, FITS, INITS, clean_params, form_choices, label_rules,
)
from app.services.training.records import (
    candidate_outputs, is_2d, label_counts, label_settings, min_labels, records,
)
from app.services.training.reports import (
    HeldoutAuc, RunReport, SkippedOutput, mlflow_how_to_open, mlflow_url, run_report,
)
from app.services.training.runs import (
    FINAL_STATES, RunStatus, cancel_run, create_run, recent_runs, run_status, runs_query, start_run,
)

__all__ = [
    "ARCHS_3D", "EVALUATIONS", "FINAL_STATES", "FITS", "INITS", "HeldoutAuc", "RunReport", "RunStatus",
    "SkippedOutput", "cancel_run", "candidate_outputs", "clean_params", "create_run", "form_choices",
    "is_2d", "label_counts", "label_rules", "label_settings", "min_labels", "mlflow_how_to_open", "mlflow_url",
    "records", "recent_runs", "run_report", "run_status", "runs_query", "start_run",
]
