"""What the OpenAPI description promises about answers, so that it matches what the API sends.

flask-smorest documents its own error payload (``code``, ``status``, ``message``) and a 422 for
schema validation; qcloop answers ``{"error", "detail", ...}`` and a 400, as MIQA does. The
``Blueprint`` here validates with 400 and ``Api`` publishes qcloop's error shape. Success bodies
are the response schemas of :mod:`app.api.schemas` (``@blp.response`` dumps them); ``answers``
documents the rest (files, a second success status). Schemathesis (tests/app/test_api_fuzz.py)
checks every answer against this description.
"""
from __future__ import annotations

from typing import Callable

import flask_smorest
from marshmallow import INCLUDE, Schema, fields
from webargs.flaskparser import FlaskParser


class ErrorSchema(Schema):
    """Every error answer: a short code, a sentence for people, and details that depend on the error."""

    class Meta:
        unknown = INCLUDE  # details: field, fields, retry_after, run_id, ...

    error = fields.String(required=True, metadata={"description": "short code: invalid, not_found, conflict, ..."})
    detail = fields.String(required=True, metadata={"description": "what went wrong, for people"})
    field = fields.String(metadata={"description": "the input field at fault, when there is one"})
    fields_ = fields.Dict(data_key="fields", metadata={"description": "messages per location and field"})


class Parser(FlaskParser):
    """Schema validation answers 400 (not webargs' 422), the status MIQA's clients expect."""

    DEFAULT_VALIDATION_STATUS = 400


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = Parser()


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ErrorSchema


BINARY = {"schema": {"type": "string", "format": "binary"}}


def answers(blp: flask_smorest.Blueprint, status: int, schema: type[Schema] | None = None, *,
            content: dict[str, dict] | None = None, description: str = "") -> Callable:
    """Document a success answer without changing what the view returns.

    ``schema`` describes a JSON body; ``content`` maps other media types to their description;
    neither means an empty body (204)."""
    if content is not None:
        return blp.doc(responses={str(status): {"description": description or "OK", "content": content}})
    return blp.alt_response(status, schema=schema, description=description or None, success=True)


def body(blp: flask_smorest.Blueprint, content: dict[str, dict], *, required: bool = False) -> Callable:
    """Document a request body a view reads itself (files, or JSON checked by a service)."""
    return blp.doc(requestBody={"required": required, "content": content})
