"""Reading JSON request bodies the one way every API route does."""
from __future__ import annotations

from typing import Any

from flask import request

from app.services.errors import InvalidInput


def json_object(*, required: bool = False) -> dict[str, Any]:
    """The request's JSON object. An empty body is ``{}`` unless required; anything else that is not a
    JSON object (bad syntax, a list, a number) is refused with a 400 rather than read as "no options"."""
    if not request.get_data(cache=True):
        if required:
            raise InvalidInput("a JSON object body is required")
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


def refuse_nul_characters() -> None:
    """Refuse a JSON body holding a NUL character in any text: PostgreSQL cannot store one (a 500 there),
    and no name, note or label needs it. Walks the parsed body without recursion (bodies may be deep)."""
    if not request.is_json or not request.path.startswith("/api/"):
        return
    pending = [request.get_json(silent=True)]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise InvalidInput("text may not contain NUL characters (\\u0000)")
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
