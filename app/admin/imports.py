"""Import and export pages: per project (project admins) and for every project (superusers).

An uploaded file is previewed (dry run) or imported; a preview can be applied without
uploading again. Large files run as jobs whose progress bar polls the job API. A project's page
also uploads scan images as frames (kept under the data root, so every export names them), and syncs
the project with its image repository (now or every N minutes) with the history of its runs.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Response, current_app, flash, redirect, render_template, request, stream_with_context, url_for
from flask_login import current_user
from werkzeug.utils import secure_filename

from app.admin import bp
from app.api.schemas.base import Extended
from app.auth.permissions import permission
from app.db import Project, boundary
from app.services.errors import InvalidInput, ServiceError
from app.services.loaders import load
from app.services.sync import engine as sync_engine
from app.services.sync import schedule as sync_schedule
from app.services.sync.base import display_url
from app.services.transfer import exporter, tasks, uploads
from app.services.transfer.model import SCAN_TYPES
from app.storage import StorageError


def _page(project, summary=None, job=None, problems=None):
    poll = None
    if job is not None:
        poll = f"/api/v1/jobs/{job.id}" if project is not None else f"/api/v1/global/jobs/{job.id}"
    return render_template("admin/import.html", project=project, summary=summary, job=job, poll=poll,
                           problems=problems or [], formats=list(exporter.FORMATS), scan_types=SCAN_TYPES,
                           uploadable=", ".join(uploads.UPLOADABLE),
                           sync_runs=sync_engine.history(project) if project else [],
                           sync_sources=sync_engine.sources_of(project) if project else [],
                           max_inline_kb=current_app.config.get("IMPORT_INLINE_MAX_BYTES", 0) // 1024)


def _here(project) -> str:
    return url_for("admin.import_page", project_id=project.id) if project else url_for("admin.global_import_page")


def _run(project, token: str | None, filename: str | None):
    """Start (or preview) an import and show its outcome; a refused file lists its problems."""
    mode = request.form.get("mode", "merge")
    dry_run = request.form.get("dry_run") == "on"
    add_unknown = request.form.get("add_unknown_artifacts") == "on"
    try:
        if token is None:
            upload = request.files.get("file")
            if upload is None or not upload.filename:
                flash("Choose a file to import.", "error")
                return redirect(_here(project))
            token, filename = tasks.stash_upload(upload.stream, upload.filename), upload.filename
        summary, job = tasks.start_import(token, project=project, mode=mode, dry_run=dry_run, actor=current_user,
                                          filename=filename, add_unknown_artifacts=add_unknown)
    except (ServiceError, StorageError) as err:
        message = getattr(err, "message", str(err))
        flash(f"Nothing imported: {message.splitlines()[0]}", "error")
        details = getattr(err, "details", {}) or {}
        return _page(project, problems=details.get("errors") or []), 400
    if summary is not None and summary.dry_run:
        summary = Extended(summary, filename=filename)
    elif summary is not None:
        flash(f"Imported {filename}: {summary.changes} change(s).", "info")
    return _page(project, summary=summary, job=job)


def _export(project) -> Response:
    fmt = request.form.get("format", "miqa-csv")
    try:
        exporter.check_format(fmt)
    except ServiceError as err:
        flash(err.message, "error")
        return redirect(_here(project))
    ids = [project.id] if project else exporter.all_project_ids()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"{secure_filename(project.name if project else 'qcloop') or 'qcloop'}-{fmt}-{stamp}{exporter.FORMATS[fmt]}"
    chunks = (chunk.encode("utf-8") for chunk in exporter.export(fmt, ids))
    return Response(stream_with_context(chunks), mimetype=exporter.MEDIA_TYPES[exporter.FORMATS[fmt]],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/projects/<int:project_id>/import")
@permission("project", "admin")
def import_page(project_id: int):
    return _page(load(Project, project_id))


@bp.post("/projects/<int:project_id>/import")
@permission("project", "admin")
def import_upload(project_id: int):
    return _run(load(Project, project_id), None, None)


@bp.post("/projects/<int:project_id>/import/apply")
@permission("project", "admin")
def import_apply(project_id: int):
    """Import a previewed file as previewed (the stored upload, named by its token)."""
    return _run(load(Project, project_id), request.form.get("token", ""), request.form.get("filename"))


@bp.post("/projects/<int:project_id>/frames")
@permission("project", "admin")
def frame_upload(project_id: int):
    """Upload an image as a frame of a scan named by experiment and scan name (created when new)."""
    project = load(Project, project_id)
    upload = request.files.get("file")
    form = {name: request.form.get(name, "") for name in ("experiment", "scan_name", "scan_type", "frame_number")}
    frame = uploads.upload_frame(current_user, upload.stream if upload else None,
                                 upload.filename if upload else "", {**form, "project": str(project.id)})
    flash(f"Uploaded {upload.filename} as frame {frame.frame_number} of {form['experiment']} / "
          f"{form['scan_name']}, stored as {frame.file_location}.", "info")
    return redirect(_here(project))


def _schedule(form) -> Any:
    """The schedule the sync form sets: its minutes, None when the admin ticked "only when asked", else the
    source's own (as the API without ``every_minutes``): an empty field never clears a schedule."""
    every = form.get("every_minutes", "").strip()
    if form.get("manual") == "on":
        if every:
            raise InvalidInput("give either a number of minutes or \"only when asked\", not both",
                               field="every_minutes")
        return None
    return every or sync_engine.UNCHANGED


@bp.post("/projects/<int:project_id>/sync")
@permission("project", "admin")
def sync_start(project_id: int):
    """Sync the project with a source in the worker (and set its schedule when asked); the history shows the
    run."""
    project = load(Project, project_id)
    try:
        job = sync_schedule.start_sync(project, request.form.get("source", ""), current_user,
                                       every_minutes=_schedule(request.form))
    except ServiceError as err:
        boundary.rollback()  # the page lists the sources: not the one just refused
        flash(f"Not synced: {err.message}", "error")
        return _page(project), err.status
    flash(f"Sync of {display_url(request.form.get('source', '').strip())} started (job {job.id}): "
          f"{'done' if job.state == 'succeeded' else job.state}.", "info")
    return redirect(_here(project))


@bp.post("/projects/<int:project_id>/export")
@permission("project", "admin")
def export_download(project_id: int):
    return _export(load(Project, project_id))


@bp.get("/import")
@permission("superuser")
def global_import_page():
    return _page(None)


@bp.post("/import")
@permission("superuser")
def global_import_upload():
    return _run(None, None, None)


@bp.post("/import/apply")
@permission("superuser")
def global_import_apply():
    return _run(None, request.form.get("token", ""), request.form.get("filename"))


@bp.post("/export")
@permission("superuser")
def global_export_download():
    return _export(None)
