"""Administration pages: one blueprint, its routes spread over modules by page (imported last, to register on it)."""
from flask import Blueprint

bp = Blueprint("admin", __name__)

from app.admin import imports, routes, vocabulary  # noqa: E402,F401 - register their pages on bp
