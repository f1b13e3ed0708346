"""What every answer schema shares: every field always present, computed values, pages of results.

A response schema is the answer: views return domain objects (or small dataclasses) and
``@blp.response`` dumps them through these schemas, so the OpenAPI description is true by
construction. ``tests/app/test_schemas_match_answers.py`` checks each documented schema
against the keys real answers carry.
"""
from __future__ import annotations

from typing import Any, Callable

from marshmallow import Schema, fields


class Answer(Schema):
    """An answer's shape. Every field is in every answer (null where it allows it), so the description
    lists each as required; ``metadata={"optional": True}`` marks the rare key given only sometimes."""

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        if not field_obj.metadata.get("optional"):
            field_obj.required = True


def computed(field: fields.Field, getter: Callable[[Any], Any]) -> fields.Field:
    """``field`` whose value is ``getter(obj)``: for what the object does not hold as an attribute (a
    state, a link, a fallback). Unlike ``fields.Method`` it keeps its type in the OpenAPI description."""
    field.get_value = lambda obj, attr, accessor=None, default=None: getter(obj)  # type: ignore[method-assign]
    return field


def nullable(field: type[fields.Field], **kwargs: Any) -> fields.Field:
    return field(allow_none=True, **kwargs)


class Extended:
    """An object seen with a few more attributes, for an answer that adds to a domain object what
    only the request knows (a secret shown once, the caller's role)."""

    def __init__(self, base: Any, **extra: Any) -> None:
        self._base = base
        self.__dict__.update(extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


class Empty(Answer):
    """An empty JSON object."""


_PAGES: dict[type[Schema], type[Schema]] = {}


def page_of(item: type[Schema]) -> type[Schema]:
    """MIQA/DRF's page of ``item``: count, links to the neighbour pages and the results
    (:func:`app.api.pagination.paginate` fills it)."""
    if item not in _PAGES:
        _PAGES[item] = type(f"{item.__name__.removesuffix('Schema')}PageSchema", (Answer,), {
            "count": fields.Integer(),
            "next": nullable(fields.String),
            "previous": nullable(fields.String),
            "results": fields.List(fields.Nested(item)),
        })
    return _PAGES[item]


_LISTS: dict[type[Schema], type[Schema]] = {}


def results_of(item: type[Schema]) -> type[Schema]:
    """``{"results": [item, ...]}``: a short list that is never paginated."""
    if item not in _LISTS:
        _LISTS[item] = type(f"{item.__name__.removesuffix('Schema')}ListSchema", (Answer,),
                            {"results": fields.List(fields.Nested(item))})
    return _LISTS[item]
