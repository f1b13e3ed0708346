"""Training runs: started and cancelled by project admins, read by every project member."""
from __future__ import annotations

from flask_login import current_user

from app.api.bodies import json_object
from app.api.docs import Blueprint, body
from app.api.pagination import PageArgs, paginate
from app.api.schemas.base import page_of
from app.api.schemas.training import PromotionSchema, RunSchema, TrainingSettingsSchema
from app.auth.permissions import permission
from app.db import Project, TrainingRun
from app.services import projects, promotion, training
from app.services.loaders import load

blp = Blueprint("training", __name__, description="Retraining runs on reviewer decisions")

PROMOTE_BODY = {"application/json": {"schema": {"type": "object", "properties": {"force": {"type": "boolean"}}}}}
SETTINGS_BODY = {"application/json": {"schema": {"type": "object", "additionalProperties": False, "properties": {
    "label_rule": {"type": "string", "enum": list(training.label_rules())},
    "questionable": {"oneOf": [{"type": "string", "enum": ["exclude"]},
                               {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1}]},
    "min_labels_per_class": {"type": "integer", "minimum": projects.MIN_LABELS_RANGE[0],
                             "maximum": projects.MIN_LABELS_RANGE[1]}}}}}


@blp.route("/projects/<int:project_id>/training-runs", methods=["POST"])
@blp.response(201, RunSchema)
@permission("project", "admin")
def start_run(project_id: int):
    """Start a run. Body (all optional): epochs, from (scratch|miqa|champion), arch, fit (resize|pad_crop|tiles),
    batch_size, lr, weight_decay, patience, seed, spatial_size, min_labels, artifacts ("auto" or keys),
    synthesis ({key: probability}), evaluation (auto|holdout|cv), folds, val_fraction, test_fraction.
    Bad data fails the run (state "failed", error says why). The answer's ``report`` says how the run
    was evaluated, each output's held-out AUC with its 95% interval, outputs left out and why."""
    run = training.start_run(load(Project, project_id), current_user, json_object())
    return training.run_status(run)


@blp.route("/projects/<int:project_id>/training-runs", methods=["GET"])
@blp.arguments(PageArgs, location="query")
@blp.response(200, page_of(RunSchema))
@permission("project", "collaborator")
def list_runs(page: dict, project_id: int):
    return paginate(training.runs_query(project_id), page, lambda runs: [training.run_status(run) for run in runs])


@blp.route("/training-runs/<int:run_id>", methods=["GET"])
@blp.response(200, RunSchema)
@permission("project", "collaborator")
def get_run(run_id: int):
    return training.run_status(load(TrainingRun, run_id))


@blp.route("/training-runs/<int:run_id>/cancel", methods=["POST"])
@blp.response(200, RunSchema)
@permission("project", "admin")
def cancel_run(run_id: int):
    run = training.cancel_run(load(TrainingRun, run_id))
    return training.run_status(run)


@blp.route("/projects/<int:project_id>/training-runs/<int:run_id>/promote", methods=["POST"])
@body(blp, PROMOTE_BODY)
@blp.response(200, PromotionSchema)
@permission("project", "admin")
def promote_run(project_id: int, run_id: int):
    """Make the run's model the champion. Refused (409, with the comparison) unless it beats the champion
    on held-out usable AUC: both scored on the run's own held-out scans when the run scored the current
    champion there (same_split true), else each run's heldout_usable_auc on its own held-out scans; a
    run without a defined held-out usable AUC is refused. Body {"force": true} promotes anyway and is
    recorded in the audit log."""
    return promotion.promote_run(project_id, run_id, current_user, json_object().get("force", False))


@blp.route("/projects/<int:project_id>/training-settings", methods=["GET"])
@blp.response(200, TrainingSettingsSchema)
@permission("project", "collaborator")
def training_settings(project_id: int):
    """The settings training reads: label_rule, questionable, min_labels_per_class (defaults filled in)."""
    return projects.settings_of(load(Project, project_id))


@blp.route("/projects/<int:project_id>/training-settings", methods=["PATCH"])
@body(blp, SETTINGS_BODY)
@blp.response(200, TrainingSettingsSchema)
@permission("project", "admin")
def change_training_settings(project_id: int):
    """Change some of label_rule, questionable ("exclude" or a weight in (0, 1]) and min_labels_per_class."""
    return projects.update_settings(load(Project, project_id), json_object(), current_user)
