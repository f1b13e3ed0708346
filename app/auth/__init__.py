"""Authentication: browser sessions (Flask-Login), MIQA-compatible API tokens, CSRF."""
from __future__ import annotations

from flask import Blueprint, Flask, g, request, session
from flask_login.utils import _create_identifier

from app.extensions import csrf, login_manager

TOKEN_PREFIX = "Token "
bp = Blueprint("auth", __name__)


def token_from_request() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith(TOKEN_PREFIX):
        return header[len(TOKEN_PREFIX):].strip()
    return None


def _session_identifier() -> str | None:
    """Flask-Login's "strong" session protection, for cookie requests only: a token request
    ignores the session, so a browser session (even a stale one) never hides a valid token."""
    if token_from_request() is not None:
        return session.get("_id")
    return _create_identifier()


def init_auth(app: Flask) -> None:
    from app.auth.permissions import enforce_before_view, permission
    from app.auth import routes  # noqa: F401 - registers the pages on bp
    from app.services.throttle import validate_limits
    from app.db import User
    from app.services import users
    from app.services.errors import Unauthorized

    validate_limits(app)
    login_manager.login_view = "auth.login"
    login_manager.session_protection = "strong"
    login_manager._session_identifier_generator = _session_identifier

    @login_manager.user_loader
    def load_user(session_id: str) -> User | None:
        if token_from_request() is not None:  # a token header decides alone, even beside a session cookie
            return None
        return users.session_user(session_id)

    @login_manager.request_loader
    def load_user_from_token(req) -> User | None:
        raw = token_from_request()
        if raw is None:
            return None
        g.token_authenticated = True
        return users.user_for_token(raw)

    @login_manager.unauthorized_handler
    def unauthorized():
        raise Unauthorized("Authentication credentials were not provided.")

    app.before_request(enforce_before_view)

    @app.before_request
    def protect_cookie_requests() -> None:
        """CSRF on every state-changing request that a browser cookie authenticates."""
        if request.method in ("GET", "HEAD", "OPTIONS", "TRACE") or not app.config["WTF_CSRF_ENABLED"]:
            return
        if token_from_request() is not None:
            return
        view = app.view_functions.get(request.endpoint or "")
        if getattr(view, "csrf_exempt", False):
            return
        csrf.protect()

    app.register_blueprint(bp)
    app.view_functions["static"] = permission("public")(app.view_functions["static"])
