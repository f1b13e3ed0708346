"""Reviewer pages: projects with progress, a project's scans and agreement, and the scan viewer."""
from __future__ import annotations

from flask import current_app, flash, g, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from app.auth.permissions import permission
from app.db import Experiment, Project, Scan, utcnow
from app.services import next_scan, overview, review, review_entry, vocabulary
from app.services.loaders import load
from app.ui import bp
from app.ui.context import optional_url, scan_context
from app.ui.flashing import flash_outcome

THUMBNAIL_SIZE = 160  # pixels, the longer side of a grid thumbnail


@bp.get("/")
@permission("login")
def projects():
    rows = overview.projects_for(current_user)
    ids = [row.project.id for row in rows]
    return render_template("ui/projects.html", projects=rows, progress=review.progress(ids),
                           timeline=review.timeline(ids), state_labels=review.STATE_LABELS)


@bp.get("/projects/<int:project_id>")
@permission("project", "collaborator")
def project(project_id: int):
    filters = {key: request.args[key] for key in review.FILTERS if request.args.get(key)}
    project = load(Project, project_id)
    data = review.project_overview(project, filters, request.args.get("page") or 1,
                                   current_app.config["PROJECT_PAGE_EXPERIMENTS"])
    return render_template(
        "ui/project.html", project=project, data=data, filters=filters, role=g.project_role,
        is_admin=g.project_role == "admin", state_labels=review.STATE_LABELS,
        options=vocabulary.decision_options(project_id), entries=vocabulary.artifact_entries(project_id),
        tasks=review.task_overview(project, g.project_role), agreement=review.agreement(project_id),
        queues=next_scan.overview(project_id, current_user, g.project_role, request.args.get("strategy") or None),
        strategy_labels=next_scan.STRATEGY_LABELS,
        default_strategy=next_scan.default_strategy(project), now=utcnow(),
        training_url=optional_url("ui.training_runs", project_id=project_id),
        models_url=optional_url("ui.models_page", project_id=project_id),
        transfer_url=optional_url("admin.import_page", project_id=project_id) if g.project_role == "admin" else None)


@bp.get("/projects/<int:project_id>/next")
@permission("project", "collaborator")
def next_scan_page(project_id: int):
    """The next scan of ``?queue=`` (the role's own) in ``?strategy=`` order; both are kept in the scan's URL."""
    carry = {key: request.args[key] for key in ("queue", "strategy") if request.args.get(key)}
    picked = next_scan.pick(project_id, current_user, g.project_role, carry.get("queue"), carry.get("strategy"))
    if picked.fallback:
        flash(picked.fallback, "info")
    if picked.scan_id is None:
        flash(picked.message, "info")
        return redirect(url_for("ui.project", project_id=project_id))
    return redirect(url_for("ui.scan", scan_id=picked.scan_id, **carry))


@bp.post("/projects/<int:project_id>/next-order")
@permission("project", "admin")
def next_scan_order(project_id: int):
    """The project's default order of the review queues."""
    flash_outcome(lambda: next_scan.set_default_strategy(load(Project, project_id), request.form.get("strategy"),
                                                         current_user),
                  lambda strategy: f"review queues now ordered {next_scan.STRATEGY_LABELS[strategy]}")
    return redirect(url_for("ui.project", project_id=project_id))


@bp.get("/experiments/<int:experiment_id>")
@permission("project", "collaborator")
def experiment(experiment_id: int):
    """The experiment as a grid of scans: a lazily loaded slice thumbnail, state and latest decision each."""
    experiment = load(Experiment, experiment_id)
    cells, counts = review.experiment_grid(experiment)
    return render_template("ui/experiment.html", experiment=experiment, project=experiment.project, cells=cells,
                           counts=counts, lock=review.current_lock(experiment), state_labels=review.STATE_LABELS,
                           thumbnail_size=THUMBNAIL_SIZE)


@bp.get("/experiments/<int:experiment_id>/review")
@permission("project", "collaborator")
def review_experiment(experiment_id: int):
    """Open an experiment for review: its first unreviewed scan (or its first scan)."""
    experiment = load(Experiment, experiment_id)
    target = review_entry.first_to_review(experiment)
    if target is None:
        flash(f"Experiment {experiment.name} has no scans.", "info")
        return redirect(url_for("ui.project", project_id=experiment.project_id))
    return redirect(url_for("ui.scan", scan_id=target.id))


@bp.get("/scans/<int:scan_id>")
@permission("project", "collaborator")
def scan(scan_id: int):
    scan = load(Scan, scan_id)
    context = scan_context(scan, current_user, g.project_role, *_queue_args())
    review_entry.warm_viewer(scan, _next_id(context))
    return render_template("ui/scan.html", context=context, scan=context["scan"],
                           lock_minutes=current_app.config["LOCK_MINUTES"])


@bp.get("/scans/<int:scan_id>/context")
@permission("project", "collaborator")
def scan_context_json(scan_id: int):
    """What the scan page renders, as JSON: the page switches scans without reloading."""
    scan = load(Scan, scan_id)
    context = scan_context(scan, current_user, g.project_role, *_queue_args())
    review_entry.warm_viewer(scan, _next_id(context))
    return jsonify(context)


def _queue_args() -> tuple[str | None, str | None]:
    """The queue and order a scan page was opened with (None: the role's queue, the project's order)."""
    return request.args.get("queue") or None, request.args.get("strategy") or None


def _next_id(context: dict) -> int | None:
    """The scan the page's "next" leads to: the queue's next, else the experiment's next scan."""
    target = context["queue"]["next"] or context["neighbours"]["next"]
    return target["id"] if target else None
