"""A project's decision and artifact vocabularies: read by members, edited by project admins."""
from __future__ import annotations

from flask_login import current_user
from marshmallow import Schema, fields, validate

from app.api.docs import Blueprint
from app.api.schemas.vocabulary import EntrySchema, OptionSchema, VocabularySchema
from app.auth.permissions import permission
from app.db import DECISION_MEANINGS, ArtifactEntry, DecisionOption
from app.services import vocabulary

blp = Blueprint("vocabulary", __name__, description="Decision and artifact vocabularies")


# The service checks the same rules; here they also reach the OpenAPI description.
_LABEL = {"validate": [validate.Length(min=1, max=100), validate.Regexp(r"\s*\S")]}
_POSITION = {"strict": True, "validate": validate.Range(min=-(2**31), max=2**31 - 1)}
_SHORTCUT = {"allow_none": True, "validate": validate.Regexp(r"^[A-Za-z0-9]$")}


class OptionChanges(Schema):
    label = fields.String(**_LABEL)
    meaning = fields.String(validate=validate.OneOf(DECISION_MEANINGS))
    position = fields.Integer(**_POSITION)
    shortcut = fields.String(**_SHORTCUT)
    requires_note = fields.Boolean()
    retired = fields.Boolean()


class NewOption(OptionChanges):
    key = fields.String(required=True, validate=validate.Regexp(vocabulary.KEY_PATTERNS[DecisionOption].pattern))
    meaning = fields.String(required=True, validate=validate.OneOf(DECISION_MEANINGS))


class EntryChanges(Schema):
    label = fields.String(**_LABEL)
    position = fields.Integer(**_POSITION)
    shortcut = fields.String(**_SHORTCUT)
    retired = fields.Boolean()


class NewEntry(EntryChanges):
    key = fields.String(required=True, validate=validate.Regexp(vocabulary.KEY_PATTERNS[ArtifactEntry].pattern))


@blp.route("/projects/<int:project_id>/vocabulary", methods=["GET"])
@blp.response(200, VocabularySchema)
@permission("project", "collaborator")
def get_vocabulary(project_id: int):
    return {
        "version": vocabulary.vocabulary_version(project_id),
        "decisions": vocabulary.decision_options(project_id, include_retired=True),
        "artifacts": vocabulary.artifact_entries(project_id, include_retired=True),
    }


@blp.route("/projects/<int:project_id>/decision-options", methods=["POST"])
@blp.arguments(NewOption)
@blp.response(201, OptionSchema)
@permission("project", "admin")
def add_option(body: dict, project_id: int):
    option = vocabulary.add_entry(DecisionOption, project_id, body, current_user)
    return option


@blp.route("/projects/<int:project_id>/decision-options/<int:option_id>", methods=["PATCH"])
@blp.arguments(OptionChanges)
@blp.response(200, OptionSchema)
@permission("project", "admin")
def update_option(body: dict, project_id: int, option_id: int):
    option = vocabulary.update_entry(DecisionOption, project_id, option_id, body, current_user)
    return option


@blp.route("/projects/<int:project_id>/artifact-entries", methods=["POST"])
@blp.arguments(NewEntry)
@blp.response(201, EntrySchema)
@permission("project", "admin")
def add_artifact(body: dict, project_id: int):
    entry = vocabulary.add_entry(ArtifactEntry, project_id, body, current_user)
    return entry


@blp.route("/projects/<int:project_id>/artifact-entries/<int:entry_id>", methods=["PATCH"])
@blp.arguments(EntryChanges)
@blp.response(200, EntrySchema)
@permission("project", "admin")
def update_artifact(body: dict, project_id: int, entry_id: int):
    entry = vocabulary.update_entry(ArtifactEntry, project_id, entry_id, body, current_user)
    return entry
