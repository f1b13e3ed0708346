"""Reviewer pages: one blueprint, its routes spread over modules by page (imported last, to register on it)."""
from flask import Blueprint

bp = Blueprint("ui", __name__)

from app.ui import models, projects, routes, training  # noqa: E402,F401 - register their pages on bp
