"""Training runs: started and cancelled by project admins, read by every project member."""
from __future__ import annotations

from flask import request
from flask_login import current_user

from app.api.docs import Blueprint, RunOut, answers, page_of
from app.api.pagination import PageArgs, paginate
from app.auth.permissions import permission
from app.services import projects, training

blp = Blueprint("training", __name__, description="Retraining runs on reviewer decisions")


@blp.route("/projects/<int:project_id>/training-runs", methods=["POST"])
@answers(blp, 201, RunOut)
@permission("project", "admin")
def start_run(project_id: int):
    """Start a run. Body (all optional): epochs, from (scratch|miqa|champion), arch, batch_size, lr,
    patience, seed, spatial_size, min_labels, artifacts ("auto" or keys), synthesis ({key: probability}),
    val_fraction, test_fraction. Bad data fails the run (state "failed", error says why)."""
    body = request.get_json(silent=True)
    run = training.start_run(projects.get_project(project_id), current_user, {} if body is None else body)
    return training.run_json(run), 201


@blp.route("/projects/<int:project_id>/training-runs", methods=["GET"])
@blp.arguments(PageArgs, location="query")
@answers(blp, 200, page_of(RunOut))
@permission("project", "collaborator")
def list_runs(page: dict, project_id: int):
    return paginate(training.runs_query(project_id), page, training.run_json)


@blp.route("/training-runs/<int:run_id>", methods=["GET"])
@answers(blp, 200, RunOut)
@permission("project", "collaborator")
def get_run(run_id: int):
    return training.run_json(training.get_run(run_id))


@blp.route("/training-runs/<int:run_id>/cancel", methods=["POST"])
@answers(blp, 200, RunOut)
@permission("project", "admin")
def cancel_run(run_id: int):
    return training.run_json(training.cancel_run(training.get_run(run_id)))
