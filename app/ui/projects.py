"""Creating a project from the projects list (superusers)."""
from __future__ import annotations

from flask import flash, redirect, request, url_for
from flask_login import current_user

from app.auth.permissions import permission
from app.db import boundary
from app.services import projects
from app.services.errors import ServiceError
from app.ui import bp


@bp.post("/projects")
@permission("superuser")
def create_project():
    """The form on the projects list: a name and optionally a project to copy vocabularies and settings from."""
    try:
        project = projects.create_project(request.form.get("name", ""), current_user,
                                          request.form.get("template") or None)
    except ServiceError as err:
        boundary.rollback()
        flash(err.message, "error")
        return redirect(url_for("ui.projects"))
    flash(f"Project {project.name} is created; you are its admin.", "info")
    return redirect(url_for("ui.project", project_id=project.id))
