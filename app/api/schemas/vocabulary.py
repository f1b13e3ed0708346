"""A project's decision and artifact vocabularies."""
from __future__ import annotations

from marshmallow import fields

from app.api.schemas.base import Answer, nullable


class OptionSchema(Answer):
    id = fields.Integer()
    key = fields.String()
    label = fields.String()
    meaning = fields.String()
    position = fields.Integer()
    shortcut = nullable(fields.String)
    requires_note = fields.Boolean()
    retired = fields.Boolean()


class EntrySchema(Answer):
    id = fields.Integer()
    key = fields.String()
    label = fields.String()
    position = fields.Integer()
    shortcut = nullable(fields.String)
    retired = fields.Boolean()


class VocabularySchema(Answer):
    """The vocabularies (``version`` changes with any edit), retired entries included."""

    version = fields.String()
    decisions = fields.List(fields.Nested(OptionSchema))
    artifacts = fields.List(fields.Nested(EntrySchema))
