"""Import and export (per project: project admins; global: superusers), frame uploads, and the
import jobs a large file starts."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Response, jsonify, request, stream_with_context
from flask_login import current_user
from werkzeug.utils import secure_filename

from app.api.docs import Blueprint, answers, body
from app.api.schemas.jobs import JobSchema, JobStartedSchema
from app.api.schemas.review import UploadedFrameSchema
from app.api.schemas.transfer import ImportSummarySchema
from app.auth.permissions import permission
from app.db import Project
from app.services import jobs
from app.services.errors import InvalidInput
from app.services.loaders import load
from app.services.transfer import exporter, tasks, uploads

blp = Blueprint("transfer", __name__, description="Import, export, frame uploads and their jobs")


def _option(name: str, default: str = "") -> str:
    value = request.form.get(name) if request.form else None
    if value is None:
        value = request.args.get(name)
    if value is None and request.is_json:
        body = request.get_json(silent=True)
        value = body.get(name) if isinstance(body, dict) else None
    return default if value is None else str(value)


def _flag(name: str) -> bool:
    return _option(name).strip().lower() in ("1", "true", "yes", "on")


def _stash() -> tuple[str, str]:
    """The uploaded import file (multipart 'file', or the raw body as text/csv or JSON) and its name."""
    upload = request.files.get("file")
    if upload is not None and upload.filename:
        return tasks.stash_upload(upload.stream, upload.filename), upload.filename
    kind = (request.mimetype or "").lower()
    if kind in ("text/csv", "application/json") and request.content_length:
        name = "upload.json" if kind == "application/json" else "upload.csv"
        return tasks.stash_upload(request.stream, name), name
    raise InvalidInput("send the import file as the multipart field 'file' (or a text/csv or JSON body)",
                       field="file")


_IMPORT_FILE = {"type": "object", "required": ["file"], "properties": {
    "file": {"type": "string", "format": "binary", "description": "MIQA CSV/JSON or qcloop full CSV/JSON"},
    "mode": {"type": "string", "enum": ["merge", "replace"], "default": "merge"},
    "dry_run": {"type": "boolean", "default": False},
    "add_unknown_artifacts": {"type": "boolean", "default": False, "description":
                              "add artifact names the vocabulary lacks (default: keep them as unmatched tags)"}}}
IMPORT_BODY = {"multipart/form-data": {"schema": _IMPORT_FILE}, "text/csv": {"schema": {"type": "string"}}}
EXPORT_BODY = {"application/json": {"schema": {"type": "object", "properties": {
    "format": {"type": "string", "enum": list(exporter.FORMATS), "default": "miqa-csv"}}}}}
EXPORT_FILE = {"text/csv": {"schema": {"type": "string"}}, "application/json": {"schema": {
    "type": "object", "description": "the export file (miqa-json: MIQA's document; json: qcloop's full one)"}}}
FRAME_BODY = {"multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
    "file": {"type": "string", "format": "binary", "description": "a NIfTI or NRRD image"},
    "frame_number": {"type": "integer", "minimum": 0}, "scan": {"type": "integer"},
    "project": {"type": "integer"}, "experiment": {"type": "string"}, "scan_name": {"type": "string"},
    "scan_type": {"type": "string"}}}}}


def _import_answers(view):
    """The summary of a small import (200) or the job of a large one (202, dumped by :func:`_start`)."""
    view = blp.response(200, ImportSummarySchema, description="what was (or would be) added, changed and "
                                                             "archived")(view)
    return blp.alt_response(202, schema=JobStartedSchema, description="a large file: the import job to poll",
                            success=True)(view)


def _start(project):
    token, filename = _stash()
    summary, job = tasks.start_import(token, project=project, mode=_option("mode", "merge"),
                                      dry_run=_flag("dry_run"), actor=current_user, filename=filename,
                                      add_unknown_artifacts=_flag("add_unknown_artifacts"))
    if job is not None:  # the 202's own schema (@blp.response dumps the 200's)
        return jsonify(JobStartedSchema().dump(job)), 202
    return summary


def _export_format() -> str:
    """The export's ``format`` option; a JSON body, when sent, must be an object."""
    if request.is_json and request.content_length:
        sent = request.get_json(silent=True)
        if not isinstance(sent, dict):
            raise InvalidInput('the body must be a JSON object such as {"format": "miqa-csv"}', field="format")
    return _option("format", "miqa-csv")


def _stream(fmt: str, project_ids: list[int], stem: str) -> Response:
    fmt = exporter.check_format(fmt)
    suffix = exporter.FORMATS[fmt]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"{secure_filename(stem) or 'qcloop'}-{fmt}-{stamp}{suffix}"
    chunks = (chunk.encode("utf-8") for chunk in exporter.export(fmt, project_ids))
    return Response(stream_with_context(chunks), mimetype=exporter.MEDIA_TYPES[suffix],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@blp.route("/projects/<int:project_id>/import", methods=["POST"])
@body(blp, IMPORT_BODY, required=True)
@_import_answers
@permission("project", "admin")
def import_project(project_id: int):
    """Import a MIQA CSV/JSON or qcloop full CSV/JSON file into this project.

    Multipart field ``file``; options ``mode`` (merge|replace), ``dry_run`` and ``add_unknown_artifacts``
    (artifact names the vocabulary lacks become entries; otherwise unmatched tags). Small files answer
    at once with what was (or would be) added, changed and archived; large ones answer 202 with
    the job to poll. Any problem refuses the whole file (400, each error names row and field).
    """
    return _start(load(Project, project_id))


@blp.route("/projects/<int:project_id>/export", methods=["POST"])
@body(blp, EXPORT_BODY)
@answers(blp, 200, content=EXPORT_FILE, description="the export file, streamed")
@permission("project", "admin")
def export_project(project_id: int):
    """Stream this project as ``format`` miqa-csv (default), miqa-json, csv or json (qcloop full)."""
    project = load(Project, project_id)
    return _stream(_export_format(), [project.id], project.name)


@blp.route("/global/import", methods=["POST"])
@body(blp, IMPORT_BODY, required=True)
@_import_answers
@permission("superuser")
def import_global():
    """Import a file naming any projects (missing ones are created)."""
    return _start(None)


@blp.route("/global/export", methods=["POST"])
@body(blp, EXPORT_BODY)
@answers(blp, 200, content=EXPORT_FILE, description="the export file, streamed")
@permission("superuser")
def export_global():
    return _stream(_export_format(), exporter.all_project_ids(), "qcloop")


@blp.route("/frames", methods=["POST"])
@body(blp, FRAME_BODY, required=True)
@blp.response(201, UploadedFrameSchema)
@permission("login")
def upload_frame():
    """Upload an image as a frame (multipart, MIQA style): ``file`` (or ``content``), ``frame_number``,
    and ``scan`` (an id) or ``project`` (an id) + ``experiment`` + ``scan_name`` [+ ``scan_type``].
    Needs tier 1 or more in the project; the file is kept under the data root."""
    upload = request.files.get("file") or request.files.get("content")
    frame = uploads.upload_frame(current_user, upload.stream if upload else None,
                                 upload.filename if upload else "", request.form)
    return frame


@blp.route("/jobs/<int:job_id>", methods=["GET"])
@blp.response(200, JobSchema)
@permission("project", "collaborator")
def get_job(job_id: int):
    return jobs.get_job(job_id)


@blp.route("/jobs/<int:job_id>/cancel", methods=["POST"])
@blp.response(200, JobSchema)
@permission("project", "admin")
def cancel_job(job_id: int):
    return jobs.cancel(jobs.get_job(job_id))


@blp.route("/global/jobs/<int:job_id>", methods=["GET"])
@blp.response(200, JobSchema)
@permission("superuser")
def get_global_job(job_id: int):
    return jobs.get_job(job_id)


@blp.route("/global/jobs/<int:job_id>/cancel", methods=["POST"])
@blp.response(200, JobSchema)
@permission("superuser")
def cancel_global_job(job_id: int):
    return jobs.cancel(jobs.get_job(job_id))
