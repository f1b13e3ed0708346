"""Model versions and what they say: evaluation jobs, suggestions' history, predictions, rollback."""
from __future__ import annotations

from flask import request
from flask_login import current_user

from app.api.bodies import json_object
from app.api.docs import Blueprint, body
from app.api.schemas.base import results_of
from app.api.schemas.jobs import JobStartedSchema
from app.api.schemas.review import EvaluationSchema
from app.api.schemas.training import ChampionSchema, ModelsSchema, PredictionSchema
from app.auth.permissions import permission
from app.db import Project, Scan
from app.services import evaluations, model_versions
from app.services.loaders import load

blp = Blueprint("models", __name__, description="Model versions, evaluations of scans and predictions")

EVALUATE_BODY = {"application/json": {"schema": {"type": "object", "additionalProperties": False, "properties": {
    "version": {"type": "string", "description": "a version of the project's model (default: the champion)"},
    "scope": {"type": "string", "enum": list(evaluations.SCOPES)}}}}}
IMAGE_BODY = {"multipart/form-data": {"schema": {"type": "object", "properties": {
    "file": {"type": "string", "format": "binary"}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@blp.route("/projects/<int:project_id>/evaluations", methods=["POST"])
@body(blp, EVALUATE_BODY)
@blp.response(202, JobStartedSchema, description="the evaluation job to poll")
@permission("project", "admin")
def start_evaluation(project_id: int):
    """Score the project's frames with a version (default the champion): scope "unscored" (frames it has
    not scored, the default) or "all". Rows become suggestions when the job completes."""
    return evaluations.start(load(Project, project_id), current_user, json_object())


@blp.route("/scans/<int:scan_id>/evaluations", methods=["GET"])
@blp.response(200, results_of(EvaluationSchema))
@permission("project", "collaborator")
def scan_evaluations(scan_id: int):
    """Every version's evaluations of the scan, with state ("scored", "pending", "failed" and why)."""
    return {"results": evaluations.history(load(Scan, scan_id))}


@blp.route("/projects/<int:project_id>/models", methods=["GET"])
@blp.response(200, ModelsSchema)
@permission("project", "collaborator")
def list_models(project_id: int):
    project = load(Project, project_id)
    return {"model_name": project.model_name, "versions": model_versions.versions(project),
            "agreement": model_versions.agreement(project),
            "evaluation_jobs": model_versions.evaluation_jobs(project)}


@blp.route("/projects/<int:project_id>/models/<int:version>/rollback", methods=["POST"])
@blp.response(200, ChampionSchema)
@permission("project", "admin")
def rollback(project_id: int, version: int):
    """Make an earlier version the champion again (audited); its suggestions are current at once."""
    return model_versions.rollback(load(Project, project_id), str(version), current_user)


@blp.route("/projects/<int:project_id>/predict", methods=["POST"])
@body(blp, IMAGE_BODY, required=True)
@blp.response(200, PredictionSchema)
@permission("project", "collaborator")
def predict(project_id: int):
    """The champion's scores for a NIfTI or NRRD image in the body (multipart field "file", or the raw
    bytes), up to QCLOOP_PREDICT_MAX_BYTES; nothing is stored."""
    project = load(Project, project_id)
    upload = request.files.get("file")
    if upload is not None:
        return evaluations.predict(project, upload.stream, upload.filename or "", None)
    return evaluations.predict(project, request.stream, request.args.get("filename", ""), request.content_length)
