"""The project's training page: label counts per output, the Retrain form (admins) and the runs."""
from __future__ import annotations

from flask import g, redirect, render_template, request, url_for
from flask_login import current_user

from app.api.schemas.training import RunSchema
from app.auth.permissions import permission
from app.db import Project, TrainingRun
from app.services import projects, promotion, training
from app.services.loaders import load
from app.ui import bp
from app.ui.flashing import flash_outcome

SYNTHESIS_PROBABILITY = 0.2


def _form_body(form) -> dict:
    """The API body the form describes (numbers parsed; the service checks ranges)."""
    body: dict = {"from": form.get("from", "scratch"), "artifacts": form.getlist("artifacts")}
    for name in ("epochs", "batch_size", "seed"):
        if form.get(name, "").strip():
            try:
                body[name] = int(form[name])
            except ValueError:
                body[name] = form[name]
    if form.get("lr", "").strip():
        try:
            body["lr"] = float(form["lr"])
        except ValueError:
            body["lr"] = form["lr"]
    for name in ("arch", "evaluation"):
        if form.get(name):
            body[name] = form[name]
    body["synthesis"] = {key: SYNTHESIS_PROBABILITY for key in form.getlist("synthesis")}
    return body


@bp.get("/projects/<int:project_id>/training")
@permission("project", "collaborator")
def training_runs(project_id: int):
    project = load(Project, project_id)
    statuses = [training.run_status(run) for run in training.recent_runs(project_id, 50)]
    runs = RunSchema(many=True).dump(statuses)
    champions, choices = promotion.champions(project_id), training.form_choices()
    for run, status in zip(runs, statuses):
        run["promotion"] = promotion.promotion_preview(status, champions)
    return render_template("training/runs.html", project=project, counts=training.label_counts(project), runs=runs,
                           settings=projects.settings_of(project), is_admin=g.project_role == "admin",
                           architectures=choices.architectures, synthesizable=choices.synthesizable,
                           synthesis_probability=SYNTHESIS_PROBABILITY)


@bp.post("/projects/<int:project_id>/training/settings")
@permission("project", "admin")
def training_settings(project_id: int):
    changes = {key: request.form[key].strip() for key in ("label_rule", "questionable", "min_labels_per_class")
               if request.form.get(key, "").strip()}
    flash_outcome(lambda: projects.update_settings(load(Project, project_id), changes, current_user),
                  lambda _: "training settings saved")
    return redirect(url_for("ui.training_runs", project_id=project_id))


@bp.post("/projects/<int:project_id>/training-runs/<int:run_id>/promote")
@permission("project", "admin")
def training_promote(project_id: int, run_id: int):
    def promoted(result: promotion.Promotion) -> str:
        version = result.run.model_version
        return (f"{version.registry_name} version {version.version} is now the champion"
                + (" (forced)" if result.forced else ""))

    flash_outcome(lambda: promotion.promote_run(project_id, run_id, current_user,
                                               force=request.form.get("force") == "1"), promoted)
    return redirect(url_for("ui.training_runs", project_id=project_id))


@bp.post("/projects/<int:project_id>/training")
@permission("project", "admin")
def training_start(project_id: int):
    flash_outcome(lambda: training.start_run(load(Project, project_id), current_user, _form_body(request.form)),
                  lambda run: f"training run {run.id} started")
    return redirect(url_for("ui.training_runs", project_id=project_id))


@bp.post("/training-runs/<int:run_id>/cancel")
@permission("project", "admin")
def training_cancel(run_id: int):
    run = load(TrainingRun, run_id)
    flash_outcome(lambda: training.cancel_run(run), lambda _: f"training run {run.id} cancelled")
    return redirect(url_for("ui.training_runs", project_id=run.project_id))
