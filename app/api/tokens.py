"""The caller's own API tokens: list, create (optionally expiring), revoke."""
from __future__ import annotations

from flask_login import current_user
from marshmallow import Schema, fields, validate

from app.api.docs import Blueprint, NewTokenOut, TokenOut, answers, page_of
from app.api.pagination import PageArgs, paginate
from app.auth.permissions import permission
from app.db import ApiToken, db
from app.services import users

blp = Blueprint("tokens", __name__, description="API tokens of the calling user")


class NewToken(Schema):
    name = fields.String(load_default="", validate=validate.Length(max=100))
    expires_in_days = fields.Integer(strict=True, load_default=None, allow_none=True,
                                     validate=validate.Range(min=1, max=users.MAX_TOKEN_DAYS))


def _time(value) -> str | None:
    return value.isoformat() if value is not None else None


def token_json(token: ApiToken) -> dict:
    """A token without its secret: only the first 8 characters identify it."""
    return {"id": token.id, "name": token.name, "prefix": token.prefix, "created": _time(token.created_at),
            "expires": _time(token.expires_at), "last_used": _time(token.last_used_at),
            "revoked": _time(token.revoked_at), "state": users.token_state(token)}


@blp.route("/tokens", methods=["GET"])
@blp.arguments(PageArgs, location="query")
@answers(blp, 200, page_of(TokenOut))
@permission("login")
def list_tokens(page):
    return paginate(users.tokens_of(current_user), page, token_json)


@blp.route("/tokens", methods=["POST"])
@blp.arguments(NewToken)
@answers(blp, 201, NewTokenOut)
@permission("login")
def create_token(body: dict):
    """A new token; its value is in this answer only."""
    token, raw = users.create_token(current_user, body["name"], body["expires_in_days"])
    db.session.commit()
    return {**token_json(token), "token": raw}, 201


@blp.route("/tokens/<int:token_id>", methods=["DELETE"])
@answers(blp, 204, description="revoked")
@permission("login")
def revoke_token(token_id: int):
    users.revoke_token(current_user, token_id)
    db.session.commit()
    return "", 204
