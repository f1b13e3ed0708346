"""Syncing a project with its image repository (project admins): start a sync (run in the worker) with
the source's schedule, and read the history of runs."""
from __future__ import annotations

from flask_login import current_user
from marshmallow import Schema, fields

from app.api.docs import Blueprint
from app.auth.permissions import permission
from app.services import projects
from app.services.sync import engine, schedule

blp = Blueprint("sync", __name__, description="Syncing projects with image repositories (folders, BIDS, DICOMweb)")


class SyncBody(Schema):
    source = fields.String(required=True, metadata={
        "description": "a folder (absolute, or relative to the data root; under an allowed root), bids:PATH "
                       "(a BIDS dataset) or dicomweb+http(s)://HOST/PATH (a DICOMweb server)"})
    every_minutes = fields.Raw(allow_none=True, metadata={
        "type": "integer", "nullable": True,
        "description": "sync this source every N minutes in the worker; null: only when asked; absent: unchanged"})
    patterns = fields.List(fields.String(), load_default=list, metadata={
        "description": "folder sources: regular expressions on paths relative to source (a DICOM folder's ends "
                       "with /), with the named group scan and optionally experiment, type, frame, subject, "
                       "session; tried in order (default: BIDS-like, EXPERIMENT/SCAN[_TYPE][_FRAME], "
                       "EXPERIMENT/SCAN/FRAME, flat); kept for the source's later runs"})


class SyncJobOut(Schema):
    id = fields.Integer(required=True)
    kind = fields.String(required=True)
    state = fields.String(required=True)
    progress = fields.Float(required=True)
    message = fields.String(required=True)
    error = fields.String(required=True, allow_none=True)
    result = fields.Dict(required=True, allow_none=True, metadata={"description": "the run's counts and reasons"})
    project = fields.Integer(required=True, attribute="project_id")


class SyncStarted(Schema):
    job = fields.Nested(SyncJobOut, required=True)
    url = fields.String(required=True, metadata={"description": "where to poll the job"})


class ItemReason(Schema):
    item = fields.String(required=True)
    reason = fields.String(required=True)


class SyncRunOut(Schema):
    id = fields.Integer(required=True)
    source = fields.String(required=True, attribute="source.url")
    kind = fields.String(required=True, attribute="source.kind")
    every_minutes = fields.Integer(required=True, allow_none=True, attribute="source.every_minutes")
    job_id = fields.Integer(required=True, allow_none=True)
    state = fields.String(required=True, metadata={"description": "running, succeeded or failed"})
    started_at = fields.DateTime(required=True)
    finished_at = fields.DateTime(required=True, allow_none=True)
    added = fields.Integer(required=True)
    changed = fields.Integer(required=True, metadata={"description": "images changed: a new frame each"})
    unchanged = fields.Integer(required=True)
    pushed = fields.Integer(required=True, metadata={"description": "decisions pushed back to the source"})
    skipped = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    removed = fields.Integer(required=True, metadata={"description": "images gone from the source (scans kept)"})
    added_items = fields.List(fields.String(), required=True)
    skipped_items = fields.List(fields.Nested(ItemReason), required=True)
    failed_items = fields.List(fields.Nested(ItemReason), required=True)
    removed_items = fields.List(fields.String(), required=True)
    export_file = fields.String(required=True, allow_none=True, metadata={"description": "the state before"})
    backup_file = fields.String(required=True, allow_none=True, metadata={"description": "the export it replaced"})
    push_file = fields.String(required=True, allow_none=True)
    error = fields.String(required=True, allow_none=True)


@blp.route("/projects/<int:project_id>/sync", methods=["POST"])
@blp.arguments(SyncBody)
@blp.response(202, SyncStarted)
@permission("project", "admin")
def sync_project(body: dict, project_id: int):
    """Sync the project with a source in the worker: the source is checked at once with one cheap request
    (400 unreadable, not what it says, refusing the credentials or unreachable: nothing stored, no job; 409
    synced into another project or already syncing), then the job answers; poll it, and read the run in
    sync-runs."""
    job = schedule.start_sync(projects.get_project(project_id), body["source"], current_user,
                              every_minutes=body.get("every_minutes", engine.UNCHANGED), patterns=body["patterns"])
    return {"job": job, "url": f"/api/v1/jobs/{job.id}"}


@blp.route("/projects/<int:project_id>/sync-runs", methods=["GET"])
@blp.response(200, SyncRunOut(many=True))
@permission("project", "admin")
def sync_runs(project_id: int):
    """The project's sync runs, newest first (the latest 50)."""
    return engine.history(projects.get_project(project_id))
