"""The caller's own API tokens: list, create (optionally expiring), revoke."""
from __future__ import annotations

from flask_login import current_user
from marshmallow import Schema, fields, validate

from app.api.docs import Blueprint
from app.api.pagination import PageArgs, paginate
from app.api.schemas.base import Extended, page_of
from app.api.schemas.users import IssuedTokenSchema, TokenSchema
from app.auth.permissions import permission
from app.services import users

blp = Blueprint("tokens", __name__, description="API tokens of the calling user")


class NewToken(Schema):
    name = fields.String(load_default="", validate=validate.Length(max=100))
    expires_in_days = fields.Integer(strict=True, load_default=None, allow_none=True,
                                     validate=validate.Range(min=1, max=users.MAX_TOKEN_DAYS))


@blp.route("/tokens", methods=["GET"])
@blp.arguments(PageArgs, location="query")
@blp.response(200, page_of(TokenSchema))
@permission("login")
def list_tokens(page):
    return paginate(users.tokens_of(current_user), page)


@blp.route("/tokens", methods=["POST"])
@blp.arguments(NewToken)
@blp.response(201, IssuedTokenSchema)
@permission("login")
def create_token(body: dict):
    """A new token; its value is in this answer only."""
    token, raw = users.create_token(current_user, body["name"], body["expires_in_days"])
    return Extended(token, token=raw)


@blp.route("/tokens/<int:token_id>", methods=["DELETE"])
@blp.response(204, description="revoked")
@permission("login")
def revoke_token(token_id: int):
    users.revoke_token(current_user, token_id)
