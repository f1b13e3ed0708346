"""Administration pages: users, audit log (superusers)."""
from __future__ import annotations

from flask import Blueprint, render_template

from app.auth.permissions import permission
from app.services import overview

bp = Blueprint("admin", __name__)


@bp.get("/")
@permission("superuser")
def index():
    return render_template("admin/index.html", **overview.admin_summary())

from app.admin import vocabulary  # noqa: E402,F401 - registers the vocabulary pages on bp
