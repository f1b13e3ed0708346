"""Users: the MIQA-compatible list, the current user and log-out."""
from __future__ import annotations

from flask_login import current_user, logout_user
from marshmallow import fields, validate

from app.api.docs import Blueprint
from app.api.pagination import PageArgs, paginate
from app.api.schemas.base import Empty, page_of
from app.api.schemas.users import AuditEventSchema, UserSchema
from app.auth import token_from_request
from app.auth.permissions import permission
from app.services import users as user_service

blp = Blueprint("users", __name__, description="Accounts")


@blp.route("/users", methods=["GET"])
@blp.arguments(PageArgs, location="query")
@blp.response(200, page_of(UserSchema))
@permission("login")
def list_users(page):
    """Users who share a project with the caller (all users for a superuser)."""
    return paginate(user_service.visible_users(current_user), page)


@blp.route("/users/me", methods=["GET"])
@blp.response(200, UserSchema)
@permission("login")
def me():
    return current_user


class AuditArgs(PageArgs):
    action = fields.String(load_default=None, validate=validate.Length(max=64),
                           metadata={"description": "one action, or a prefix ending in a dot (token.)"})


@blp.route("/audit-events", methods=["GET"])
@blp.arguments(AuditArgs, location="query")
@blp.response(200, page_of(AuditEventSchema))
@permission("superuser")
def audit_events(args):
    """Log-ins, failed log-ins, role changes, tokens and other audited changes, newest first."""
    return paginate(user_service.audit_events(args.pop("action")), args)


@blp.route("/logout", methods=["POST"])
@blp.response(200, Empty, description="an empty object")
@permission("login")
def logout():
    """Revoke the calling token (token auth) or end the browser session."""
    raw = token_from_request()
    if raw is not None:
        user = current_user._get_current_object()  # resolved before its token stops authenticating
        user_service.revoke_token_value(raw, actor=user)
    else:
        logout_user()
    return {}
