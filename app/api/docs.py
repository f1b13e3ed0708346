"""What the OpenAPI description promises about answers, so that it matches what the API sends.

flask-smorest documents its own error payload (``code``, ``status``, ``message``) and a 422 for
schema validation; qcloop answers ``{"error", "detail", ...}`` and a 400, as MIQA does. The
``Blueprint`` here validates with 400, ``Api`` publishes qcloop's error shape, and the schemas
below describe the success bodies (documentation only: views still build their own dicts).
Schemathesis (tests/app/test_api_fuzz.py) checks every answer against this description.
"""
from __future__ import annotations

from typing import Any, Callable

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



class _Open(Schema):
    """A JSON object whose keys are described in the operation's text; more keys may come."""

    class Meta:
        unknown = INCLUDE


def _nullable_string(**kwargs: Any) -> fields.String:
    return fields.String(allow_none=True, **kwargs)


class UserOut(_Open):
    id = fields.Integer(required=True)
    username = fields.String(required=True)
    email = fields.String(required=True)
    first_name = fields.String(required=True)
    last_name = fields.String(required=True)
    is_superuser = fields.Boolean(required=True)


class MemberOut(UserOut):
    role = fields.String(required=True)


class TokenOut(_Open):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    prefix = fields.String(required=True)
    created = _nullable_string(required=True)
    expires = _nullable_string(required=True)
    last_used = _nullable_string(required=True)
    revoked = _nullable_string(required=True)
    state = fields.String(required=True)


class NewTokenOut(TokenOut):
    token = fields.String(required=True, metadata={"description": "the secret, shown in this answer only"})


class AuditEventOut(_Open):
    id = fields.Integer(required=True)
    created = fields.String(required=True)
    action = fields.String(required=True)
    actor = fields.Integer(required=True, allow_none=True)
    project = fields.Integer(required=True, allow_none=True)
    details = fields.Raw(allow_none=True)


class InvitationOut(_Open):
    id = fields.Integer(required=True)
    email = fields.String(required=True)
    project_id = fields.Integer(required=True, allow_none=True)
    role = fields.String(required=True)
    created = fields.String(required=True)
    expires = fields.String(required=True)
    accepted = _nullable_string(required=True)
    expired = fields.Boolean(required=True)
    mailed = fields.Boolean(metadata={"description": "only when just created: whether a mail server took the link"})
    invite_url = _nullable_string(metadata={"description": "only when just created and not mailed: the link, "
                                                           "shown this once"})


class InvitationOffer(_Open):
    email = fields.String(required=True)
    role = fields.String(required=True)
    expires = fields.String(required=True)
    project = fields.Boolean(required=True)


class InvitationList(_Open):
    results = fields.List(fields.Nested(InvitationOut), required=True)


class OptionOut(_Open):
    id = fields.Integer(required=True)
    key = fields.String(required=True)
    label = fields.String(required=True)
    meaning = fields.String(required=True)
    position = fields.Integer(required=True)
    shortcut = _nullable_string(required=True)
    requires_note = fields.Boolean(required=True)
    retired = fields.Boolean(required=True)


class EntryOut(_Open):
    id = fields.Integer(required=True)
    key = fields.String(required=True)
    label = fields.String(required=True)
    position = fields.Integer(required=True)
    shortcut = _nullable_string(required=True)
    retired = fields.Boolean(required=True)


class VocabularyOut(_Open):
    version = fields.String(required=True)
    decisions = fields.List(fields.Nested(OptionOut), required=True)
    artifacts = fields.List(fields.Nested(EntryOut), required=True)


class ProjectOut(_Open):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    model_name = _nullable_string(required=True)
    created = fields.String(required=True)
    settings = fields.Dict(required=True)
    my_role = fields.String()


class ExperimentOut(_Open):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    project = fields.Integer(required=True)
    note = _nullable_string(required=True)
    lock_owner = fields.Raw(required=True, allow_none=True)
    lock_expires = _nullable_string(required=True)
    scans = fields.List(fields.Integer(), required=True)


class LocationOut(_Open):
    """A voxel of the original grid (whole numbers), or with space "world" MIQA's viewer position in
    millimetres as an imported MIQA file gave it."""
    i = fields.Float(required=True)
    j = fields.Float(required=True)
    k = fields.Float(required=True)
    space = fields.String(metadata={"enum": ["world"], "description": "absent for a voxel"})


class DecisionOut(_Open):
    id = fields.Integer(required=True)
    scan = fields.Integer(required=True)
    decision = fields.String(required=True)
    note = _nullable_string(required=True)
    created = fields.String(required=True)
    creator = fields.Dict(required=True)
    creator_role = _nullable_string(required=True)
    artifacts = fields.Dict(required=True)
    location = fields.Nested(LocationOut, required=True, allow_none=True)


class ScanOut(_Open):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    experiment = fields.Integer(required=True)
    frames = fields.List(fields.Dict(), required=True)
    decisions = fields.List(fields.Nested(DecisionOut), required=True)
    state = fields.String(required=True)


class FrameOut(_Open):
    id = fields.Integer(required=True)
    scan = fields.Integer(required=True)
    frame_number = fields.Integer(required=True)
    content_url = fields.String(required=True)


class UploadedFrameOut(_Open):
    id = fields.Integer(required=True)
    scan = fields.Integer(required=True)
    frame_number = fields.Integer(required=True)
    file_location = fields.String(required=True)


class JobOut(_Open):
    id = fields.Integer(required=True)
    kind = fields.String(required=True)
    state = fields.String(required=True)
    progress = fields.Float(required=True, allow_none=True)
    error = _nullable_string(required=True)
    project = fields.Integer(required=True, allow_none=True)


class JobStarted(_Open):
    job = fields.Nested(JobOut, required=True)
    url = fields.String(required=True, metadata={"description": "where to poll the job"})


class RunOut(_Open):
    id = fields.Integer(required=True)
    project_id = fields.Integer(required=True)
    state = fields.String(required=True)
    error = _nullable_string(required=True)
    job_id = fields.Integer(required=True, allow_none=True)


class NextScanOut(_Open):
    queue = fields.String(required=True, metadata={"description": "tier1 (unreviewed) or tier2 (needing tier 2)"})
    strategy = fields.String(required=True, metadata={"description": "the order asked for"})
    strategy_used = fields.String(required=True, metadata={"description": "the order applied (name on fallback)"})
    fallback = _nullable_string(required=True, metadata={"description": "why the order asked for was not used"})
    scan = fields.Nested(ScanOut, required=True, allow_none=True, metadata={"description": "null: queue empty"})
    remaining = fields.Integer(required=True, metadata={"description": "scans in the queue open to the caller"})
    empty = fields.Boolean(required=True)
    message = _nullable_string(required=True)
    other = fields.Dict(required=True, allow_none=True, metadata={"description": "the other queue the caller may work"})


def page_of(item: type[Schema]) -> type[Schema]:
    """MIQA/DRF's page of ``item``: count, links to the neighbour pages and the results."""
    return type(f"{item.__name__.removesuffix('Out')}Page", (_Open,), {
        "count": fields.Integer(required=True),
        "next": _nullable_string(required=True),
        "previous": _nullable_string(required=True),
        "results": fields.List(fields.Nested(item), required=True),
    })


OPEN = _Open

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
