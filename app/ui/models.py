"""The project's model page: versions, champion, agreement with reviewers, evaluation jobs, rollback."""
from __future__ import annotations

from flask import g, redirect, render_template, url_for
from flask_login import current_user

from app.api.schemas.base import Extended
from app.api.schemas.jobs import JobSchema
from app.auth.permissions import permission
from app.db import Project
from app.services import evaluations, model_versions, training
from app.services.loaders import load
from app.ui import bp
from app.ui.flashing import flash_outcome


def _auc_points(versions: list[model_versions.VersionSummary]) -> list[Extended]:
    """Oldest first, the versions with a held-out usable AUC, placed on a 0..1 axis for the SVG plot."""
    found = [v for v in reversed(versions) if isinstance(v.heldout_usable_auc, (int, float))]
    step = 560 / max(1, len(found) - 1)
    return [Extended(v, x=20 + index * step, y=170 - 150 * v.heldout_usable_auc,
                     y_low=170 - 150 * (v.heldout_usable_auc_low if v.heldout_usable_auc_low is not None
                                        else v.heldout_usable_auc),
                     y_high=170 - 150 * (v.heldout_usable_auc_high if v.heldout_usable_auc_high is not None
                                         else v.heldout_usable_auc)) for index, v in enumerate(found)]


@bp.get("/projects/<int:project_id>/models")
@permission("project", "collaborator")
def models_page(project_id: int):
    project = load(Project, project_id)
    runs = {run.id: training.mlflow_how_to_open(run) for run in training.recent_runs(project_id, 200)}
    versions = [Extended(v, mlflow=runs.get(v.training_run_id)) for v in model_versions.versions(project)]
    return render_template("models/versions.html", project=project, versions=versions, points=_auc_points(versions),
                           agreement=model_versions.agreement(project), is_admin=g.project_role == "admin",
                           jobs=JobSchema(many=True).dump(model_versions.evaluation_jobs(project)))


@bp.post("/projects/<int:project_id>/models/<int:version>/rollback")
@permission("project", "admin")
def models_rollback(project_id: int, version: int):
    flash_outcome(lambda: model_versions.rollback(load(Project, project_id), str(version), current_user),
                  lambda row: f"{row.registry_name} version {row.version} is the champion again")
    return redirect(url_for("ui.models_page", project_id=project_id))


@bp.post("/projects/<int:project_id>/models/evaluate")
@permission("project", "admin")
def models_evaluate(project_id: int):
    flash_outcome(lambda: evaluations.start(load(Project, project_id), current_user, {}),
                  lambda job: f"evaluation job {job.id}: {job.state}")
    return redirect(url_for("ui.models_page", project_id=project_id))
