"""Users: the MIQA-compatible list, the current user and log-out."""
from __future__ import annotations

from flask import jsonify
from flask_login import current_user, logout_user
from marshmallow import fields, validate

from app.api.docs import AuditEventOut, Blueprint, OPEN, UserOut, answers, page_of
from app.api.pagination import PageArgs, paginate
from app.auth import token_from_request
from app.auth.permissions import permission
from app.db import AuditEvent, User, db
from app.services import users as user_service

blp = Blueprint("users", __name__, description="Accounts")


def user_json(user: User) -> dict:
    return {"id": user.id, "username": user.username, "email": user.email or "",
            "first_name": user.first_name, "last_name": user.last_name, "is_superuser": user.is_superuser}


@blp.route("/users", methods=["GET"])
@blp.arguments(PageArgs, location="query")
@answers(blp, 200, page_of(UserOut))
@permission("login")
def list_users(page):
    """Users who share a project with the caller (all users for a superuser)."""
    return paginate(user_service.visible_users(current_user), page, user_json)


@blp.route("/users/me", methods=["GET"])
@answers(blp, 200, UserOut)
@permission("login")
def me():
    return user_json(current_user)


class AuditArgs(PageArgs):
    action = fields.String(load_default=None, validate=validate.Length(max=64),
                           metadata={"description": "one action, or a prefix ending in a dot (token.)"})


def audit_json(event: AuditEvent) -> dict:
    return {"id": event.id, "created": event.created_at.isoformat(), "action": event.action,
            "actor": event.actor_id, "project": event.project_id, "target_type": event.target_type,
            "target_id": event.target_id, "address": event.address, "details": event.details}


@blp.route("/audit-events", methods=["GET"])
@blp.arguments(AuditArgs, location="query")
@answers(blp, 200, page_of(AuditEventOut))
@permission("superuser")
def audit_events(args):
    """Log-ins, failed log-ins, role changes, tokens and other audited changes, newest first."""
    return paginate(user_service.audit_events(args.pop("action")), args, audit_json)


@blp.route("/logout", methods=["POST"])
@answers(blp, 200, OPEN, description="an empty object")
@permission("login")
def logout():
    """Revoke the calling token (token auth) or end the browser session."""
    raw = token_from_request()
    if raw is not None:
        user = current_user._get_current_object()  # resolved before its token stops authenticating
        user_service.revoke_token_value(raw, actor=user)
        db.session.commit()
    else:
        logout_user()
    return jsonify({}), 200
