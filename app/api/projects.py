"""Creating projects (superusers) and syncing a project with a folder of images (project admins). Listing
and reading projects is the review API's (MIQA's shapes)."""
from __future__ import annotations

from flask_login import current_user
from marshmallow import Schema, fields, validate

from app.api.docs import Blueprint, ProjectOut, answers
from app.api.review import project_json
from app.auth.permissions import permission
from app.db import db
from app.services import projects
from app.services.transfer import sync

blp = Blueprint("projects", __name__, description="Creating projects and syncing them with image folders")


class NewProject(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255),
                         metadata={"description": "1-255 characters (outer spaces removed), no control characters"})
    template = fields.String(load_default=None, allow_none=True,
                             metadata={"description": "name of a project whose active vocabularies and settings "
                                                      "the new project copies (default: qcloop's defaults)"})


@blp.route("/projects", methods=["POST"])
@blp.arguments(NewProject)
@answers(blp, 201, ProjectOut)
@permission("superuser")
def create_project(new: dict):
    """Create an empty project; the caller becomes its admin (audited). A taken name is a 409, a bad name
    or an unknown template a 400."""
    project = projects.create_project(new["name"], current_user, new["template"])
    db.session.commit()
    return project_json(project, "admin"), 201


class SyncBody(Schema):
    source = fields.String(required=True, metadata={
        "description": "the site's image folder: absolute, or relative to the data root; under an allowed root"})
    patterns = fields.List(fields.String(), load_default=list, metadata={
        "description": "regular expressions on paths relative to source (a DICOM folder's ends with /), with the "
                       "named group scan and optionally experiment, type, frame, subject, session; tried in order "
                       "(default: BIDS-like, EXPERIMENT/SCAN[_TYPE][_FRAME], EXPERIMENT/SCAN/FRAME, flat)"})


class SkippedOut(Schema):
    path = fields.String(required=True)
    reason = fields.String(required=True)


class SyncOut(Schema):
    export = fields.String(required=True, metadata={"description": "the project's state before this sync"})
    backup = fields.String(required=True, allow_none=True, metadata={"description": "the export it replaced"})
    rows_file = fields.String(required=True, allow_none=True, metadata={"description": "the rows imported"})
    added = fields.List(fields.String(), required=True, metadata={"description": "locations of the new frames"})
    skipped = fields.List(fields.Nested(SkippedOut), required=True,
                          metadata={"description": "every file not taken, with the reason"})
    known = fields.Integer(required=True, metadata={"description": "files the project has already"})
    summary = fields.Dict(required=True, allow_none=True, metadata={"description": "the import's summary"})


@blp.route("/projects/<int:project_id>/sync", methods=["POST"])
@blp.arguments(SyncBody)
@answers(blp, 200, SyncOut)
@permission("project", "admin")
def sync_project(body: dict, project_id: int):
    """Import the image files of a folder on the server that the project has no frame for (as `qcloop
    sync`); the answer lists what was added and every file skipped with the reason."""
    report = sync.sync(projects.get_project(project_id), body["source"], body["patterns"], from_data_root=True,
                       actor=current_user)
    db.session.commit()
    return report
