"""MIQA/DRF-style limit/offset pagination: {"count", "next", "previous", "results"}."""
from __future__ import annotations

from typing import Any, Callable

from flask import request
from marshmallow import Schema, fields, validate
from sqlalchemy import Select

from app.db import MAX_ID
from app.db import page as page_of_rows

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class PageArgs(Schema):
    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_ID))


def id_field(**kwargs) -> fields.Integer:
    """An object id in a query or body: a positive integer a database column can hold."""
    return fields.Integer(validate=validate.Range(min=1, max=MAX_ID), **kwargs)


def _url(offset: int, limit: int) -> str:
    args = request.args.to_dict()
    args.update(limit=str(limit), offset=str(offset))
    query = "&".join(f"{key}={value}" for key, value in args.items())
    return f"{request.base_url}?{query}"


def paginate(query: Select, page: dict[str, int], view: Callable[[list[Any]], list[Any]] | None = None
             ) -> dict[str, Any]:
    """One page of ``query`` (its rows, or ``view(rows)`` when the answer needs more than the rows: a page
    of scans with their decisions), with the total count and neighbour links; ``page_of(Schema)`` dumps it."""
    limit, offset = page["limit"], page["offset"]
    count, rows = page_of_rows(query, limit, offset)
    return {
        "count": count,
        "next": _url(offset + limit, limit) if offset + limit < count else None,
        "previous": _url(max(0, offset - limit), limit) if offset > 0 else None,
        "results": view(rows) if view is not None else rows,
    }
