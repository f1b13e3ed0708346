"""Syncing a project with its image repository (project admins): start a sync (run in the worker) with
the source's schedule, and read the history of runs."""
from __future__ import annotations

from flask_login import current_user
from marshmallow import Schema, fields

from app.api.docs import Blueprint
from app.api.schemas.jobs import JobStartedSchema
from app.api.schemas.sync import SyncRunSchema
from app.auth.permissions import permission
from app.db import Project
from app.services.loaders import load
from app.services.sync import engine, schedule

blp = Blueprint("sync", __name__, description="Syncing projects with image repositories (folders, BIDS, DICOMweb)")


class SyncBody(Schema):
    source = fields.String(required=True, metadata={
        "description": "a folder (absolute, or relative to the data root; under an allowed root), bids:PATH "
                       "(a BIDS dataset) or dicomweb+http(s)://HOST/PATH (a DICOMweb server under one of "
                       "QCLOOP_DICOMWEB_URLS; no user or password in the URL: the site's "
                       "QCLOOP_DICOMWEB_USERNAME/PASSWORD are used)"})
    every_minutes = fields.Raw(allow_none=True, metadata={
        "type": "integer", "nullable": True,
        "description": "sync this source every N minutes in the worker; null: only when asked; absent: unchanged"})
    patterns = fields.List(fields.String(), load_default=list, metadata={
        "description": "folder sources: regular expressions on paths relative to source (a DICOM folder's ends "
                       "with /), with the named group scan and optionally experiment, type, frame, subject, "
                       "session; tried in order (default: BIDS-like, EXPERIMENT/SCAN[_TYPE][_FRAME], "
                       "EXPERIMENT/SCAN/FRAME, flat); kept for the source's later runs"})


@blp.route("/projects/<int:project_id>/sync", methods=["POST"])
@blp.arguments(SyncBody)
@blp.response(202, JobStartedSchema, description="the sync job to poll (its result: the run's id and counts)")
@permission("project", "admin")
def sync_project(body: dict, project_id: int):
    """Sync the project with a source in the worker: the source is checked at once with one cheap request
    (400 unreadable, not what it says, refusing the credentials or unreachable: nothing stored, no job; 409
    synced into another project or already syncing), then the job answers; poll it, and read the run in
    sync-runs."""
    return schedule.start_sync(load(Project, project_id), body["source"], current_user,
                               every_minutes=body.get("every_minutes", engine.UNCHANGED), patterns=body["patterns"])


@blp.route("/projects/<int:project_id>/sync-runs", methods=["GET"])
@blp.response(200, SyncRunSchema(many=True))
@permission("project", "admin")
def sync_runs(project_id: int):
    """The project's sync runs, newest first (the latest 50)."""
    return engine.history(load(Project, project_id))
