"""Users: the MIQA-compatible list, the current user and log-out."""
from __future__ import annotations

from flask import jsonify
from flask_login import current_user, logout_user
from flask_smorest import Blueprint

from app.api.pagination import PageArgs, paginate
from app.auth import token_from_request
from app.auth.permissions import permission
from app.db import User, db
from app.services import users as user_service

blp = Blueprint("users", __name__, description="Accounts")


def user_json(user: User) -> dict:
    return {"id": user.id, "username": user.username, "email": user.email or "",
            "first_name": user.first_name, "last_name": user.last_name, "is_superuser": user.is_superuser}


@blp.route("/users", methods=["GET"])
@blp.arguments(PageArgs, location="query")
@permission("login")
def list_users(page):
    """Users who share a project with the caller (all users for a superuser)."""
    return paginate(user_service.visible_users(current_user), page, user_json)


@blp.route("/users/me", methods=["GET"])
@permission("login")
def me():
    return user_json(current_user)


@blp.route("/logout", methods=["POST"])
@permission("login")
def logout():
    """Revoke the calling token (token auth) or end the browser session."""
    raw = token_from_request()
    if raw is not None:
        user_service.revoke_token_value(raw, actor=current_user)
        db.session.commit()
    else:
        logout_user()
    return jsonify({}), 200
