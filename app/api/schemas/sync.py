"""Sync runs: what one sync of a project with its image repository did."""
from __future__ import annotations

from marshmallow import fields

from app.api.schemas.base import Answer, nullable


class ItemReasonSchema(Answer):
    item = fields.String()
    reason = fields.String()


class SyncRunSchema(Answer):
    """One SyncRun row, with its source's URL (never a password), kind and schedule."""

    id = fields.Integer()
    source = fields.String(attribute="source.url")
    kind = fields.String(attribute="source.kind")
    every_minutes = nullable(fields.Integer, attribute="source.every_minutes")
    job_id = nullable(fields.Integer)
    state = fields.String(metadata={"enum": ["running", "succeeded", "failed"]})
    started_at = fields.DateTime()
    finished_at = nullable(fields.DateTime)
    added = fields.Integer()
    changed = fields.Integer(metadata={"description": "images changed: a new frame each"})
    unchanged = fields.Integer()
    pushed = fields.Integer(metadata={"description": "decisions pushed back to the source"})
    skipped = fields.Integer()
    failed = fields.Integer()
    removed = fields.Integer(metadata={"description": "images gone from the source (scans kept)"})
    added_items = fields.List(fields.String())
    skipped_items = fields.List(fields.Nested(ItemReasonSchema))
    failed_items = fields.List(fields.Nested(ItemReasonSchema))
    removed_items = fields.List(fields.String())
    export_file = nullable(fields.String, metadata={"description": "the project's state before the run"})
    backup_file = nullable(fields.String, metadata={"description": "the export it replaced"})
    push_file = nullable(fields.String)
    error = nullable(fields.String)
