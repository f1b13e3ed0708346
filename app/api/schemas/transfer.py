"""Imports, syncs and the viewer's geometry."""
from __future__ import annotations

from marshmallow import fields

from app.api.schemas.base import Answer, nullable


class ImportSummarySchema(Answer):
    """What an import added, changed and archived (or would, for a dry run)."""

    format = fields.String()
    mode = fields.String(metadata={"enum": ["merge", "replace"]})
    dry_run = fields.Boolean()
    rows = fields.Integer()
    projects = fields.List(fields.String())
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    changes = fields.Integer()
    samples = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))
    warnings = fields.List(fields.String())
    warning_count = fields.Integer()
    unmatched_artifacts = fields.Dict(keys=fields.String(), values=fields.Integer())
    token = nullable(fields.String, metadata={"description": "a dry run's file, to apply it without uploading again"})
    add_unknown_artifacts = fields.Boolean()


class GeometrySchema(Answer):
    """Shapes, affines (RAS and original) and the default window of a frame's viewer volume."""

    shape = fields.List(fields.Integer())
    original_shape = fields.List(fields.Integer())
    original_affine = fields.List(fields.List(fields.Float()))
    affine = fields.List(fields.List(fields.Float()))
    inverse_original_affine = fields.List(fields.List(fields.Float()))
    window = fields.List(fields.Float())
    range = fields.List(fields.Float())
