"""Reviewer pages."""
from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user

from app.auth.permissions import permission
from app.services import overview

bp = Blueprint("ui", __name__)


@bp.get("/")
@permission("login")
def projects():
    return render_template("ui/projects.html", projects=overview.projects_for(current_user))
from app.ui import training  # noqa: E402,F401 - registers the training pages on bp
