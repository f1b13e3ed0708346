"""Creating projects (superusers). Listing and reading projects is the review API's (MIQA's shapes);
syncing them with image repositories is :mod:`app.api.sync`'s."""
from __future__ import annotations

from flask_login import current_user
from marshmallow import Schema, fields, validate

from app.api.docs import Blueprint
from app.api.schemas.base import Extended
from app.api.schemas.review import MyProjectSchema
from app.auth.permissions import permission
from app.services import projects

blp = Blueprint("projects", __name__, description="Creating projects")


class NewProject(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255),
                         metadata={"description": "1-255 characters (outer spaces removed), no control characters"})
    template = fields.String(load_default=None, allow_none=True,
                             metadata={"description": "name of a project whose active vocabularies and settings "
                                                      "the new project copies (default: qcloop's defaults)"})


@blp.route("/projects", methods=["POST"])
@blp.arguments(NewProject)
@blp.response(201, MyProjectSchema)
@permission("superuser")
def create_project(new: dict):
    """Create an empty project; the caller becomes its admin (audited). A taken name is a 409, a bad name
    or an unknown template a 400."""
    project = projects.create_project(new["name"], current_user, new["template"])
    return Extended(project, my_role="admin")
