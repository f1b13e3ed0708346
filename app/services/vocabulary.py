"""Decision and artifact vocabularies: the global defaults (MIQA's) and per-project copies."""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select

from app.db import DECISION_MEANINGS, ArtifactEntry, DecisionOption, User, db
from app.services import audit
from app.services.errors import Conflict, InvalidInput
from app.services.loaders import load

# MIQA's four decisions, with the meaning the tier rule and training read.
DEFAULT_DECISIONS = (
    ("U", "Usable", "usable", "1", False),
    ("UE", "Usable-extra", "usable_extra", "2", False),
    ("Q?", "Questionable", "questionable", "3", True),
    ("UN", "Unusable", "unusable", "4", True),
)
# MIQA's ten artifacts, in MIQA's network output order.
DEFAULT_ARTIFACTS = (
    ("normal_variants", "Normal variants"),
    ("lesions", "Lesions"),
    ("full_brain_coverage", "Full brain coverage"),
    ("misalignment", "Misalignment"),
    ("swap_wraparound", "Swap / wraparound"),
    ("ghosting_motion", "Ghosting / motion"),
    ("inhomogeneity", "Inhomogeneity"),
    ("susceptibility_metal", "Susceptibility / metal"),
    ("flow_artifact", "Flow artifact"),
    ("truncation_artifact", "Truncation artifact"),
)
ARTIFACT_SHORTCUTS = "qwertyuiop"


def seed_defaults() -> None:
    """Insert the global default vocabulary if it is missing (idempotent)."""
    have = set(db.session.scalars(select(DecisionOption.key).where(DecisionOption.project_id.is_(None))))
    for position, (key, label, meaning, shortcut, note) in enumerate(DEFAULT_DECISIONS):
        if key not in have:
            db.session.add(DecisionOption(project_id=None, key=key, label=label, meaning=meaning,
                                          position=position, shortcut=shortcut, requires_note=note))
    have = set(db.session.scalars(select(ArtifactEntry.key).where(ArtifactEntry.project_id.is_(None))))
    for position, (key, label) in enumerate(DEFAULT_ARTIFACTS):
        if key not in have:
            db.session.add(ArtifactEntry(project_id=None, key=key, label=label, position=position,
                                         shortcut=ARTIFACT_SHORTCUTS[position]))
    db.session.flush()


def copy_to(project_id: int, template_id: int | None = None) -> None:
    """Give a new project its own copy of a vocabulary (stable ids it can then change): the global one, or
    a template project's active entries (its retired ones only serve old decisions, which a new project
    has none of)."""
    if template_id is None:
        seed_defaults()
        options = db.session.scalars(select(DecisionOption).where(DecisionOption.project_id.is_(None)))
        entries = db.session.scalars(select(ArtifactEntry).where(ArtifactEntry.project_id.is_(None)))
    else:
        options, entries = decision_options(template_id), artifact_entries(template_id)
    for option in list(options):
        db.session.add(DecisionOption(project_id=project_id, key=option.key, label=option.label,
                                      meaning=option.meaning, position=option.position, shortcut=option.shortcut,
                                      requires_note=option.requires_note, retired=option.retired))
    for entry in list(entries):
        db.session.add(ArtifactEntry(project_id=project_id, key=entry.key, label=entry.label,
                                     position=entry.position, shortcut=entry.shortcut, retired=entry.retired))
    db.session.flush()


def decision_options(project_id: int, include_retired: bool = False) -> list[DecisionOption]:
    query = select(DecisionOption).where(DecisionOption.project_id == project_id)
    if not include_retired:
        query = query.where(DecisionOption.retired.is_(False))
    return list(db.session.scalars(query.order_by(DecisionOption.position, DecisionOption.id)))


def artifact_entries(project_id: int, include_retired: bool = False) -> list[ArtifactEntry]:
    query = select(ArtifactEntry).where(ArtifactEntry.project_id == project_id)
    if not include_retired:
        query = query.where(ArtifactEntry.retired.is_(False))
    return list(db.session.scalars(query.order_by(ArtifactEntry.position, ArtifactEntry.id)))


def vocabulary_version(project_id: int) -> str:
    """A short digest of what training depends on (ids, keys, meanings, retired flags)."""
    import hashlib

    parts = [f"d{o.id}:{o.key}:{o.meaning}:{int(o.retired)}" for o in decision_options(project_id, True)]
    parts += [f"a{e.id}:{e.key}:{int(e.retired)}" for e in artifact_entries(project_id, True)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


KEY_PATTERNS = {
    DecisionOption: re.compile(r"^[A-Za-z0-9?_-]{1,32}$"),
    ArtifactEntry: re.compile(r"^[a-z][a-z0-9_]{0,63}$"),
}
_EDITABLE = {
    DecisionOption: {"label", "meaning", "position", "shortcut", "requires_note", "retired"},
    ArtifactEntry: {"label", "position", "shortcut", "retired"},
}
_KIND_NAMES = {DecisionOption: "decision option", ArtifactEntry: "artifact entry"}


def _check_fields(model: type, project_id: int, fields: dict[str, Any], row_id: int | None = None) -> None:
    unknown = set(fields) - _EDITABLE[model] - {"key"}
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    if "label" in fields and (not isinstance(fields["label"], str) or not 0 < len(fields["label"].strip()) <= 100):
        raise InvalidInput("label must be 1-100 characters", field="label")
    if "meaning" in fields and fields["meaning"] not in DECISION_MEANINGS:
        raise InvalidInput(f"meaning must be one of {', '.join(DECISION_MEANINGS)}", field="meaning")
    for flag in ("requires_note", "retired"):
        if flag in fields and not isinstance(fields[flag], bool):
            raise InvalidInput(f"{flag} must be true or false", field=flag)
    if "position" in fields and (not isinstance(fields["position"], int) or isinstance(fields["position"], bool)):
        raise InvalidInput("position must be an integer", field="position")
    shortcut = fields.get("shortcut")
    if shortcut is not None:
        if not isinstance(shortcut, str) or len(shortcut) != 1 or not shortcut.isalnum():
            raise InvalidInput("shortcut must be one letter or digit", field="shortcut")
        taken = [row for row in decision_options(project_id) + artifact_entries(project_id)
                 if row.shortcut and row.shortcut.lower() == shortcut.lower()
                 and not (isinstance(row, model) and row.id == row_id)]
        if taken:
            raise Conflict(f"shortcut {shortcut!r} is already used by {taken[0].key!r}", field="shortcut")


def add_entry(model: type, project_id: int, fields: dict[str, Any], actor: User | None) -> DecisionOption | ArtifactEntry:
    """Add a decision option or artifact entry to a project's vocabulary (a new artifact = a new model output)."""
    key = fields.get("key")
    if not isinstance(key, str) or not KEY_PATTERNS[model].match(key):
        raise InvalidInput(f"key {key!r} is not valid for a {_KIND_NAMES[model]}", field="key")
    if model is DecisionOption and "meaning" not in fields:
        raise InvalidInput("meaning is required", field="meaning")
    _check_fields(model, project_id, fields)
    clash = db.session.scalar(select(model.id).where(model.project_id == project_id, model.key == key))
    if clash is not None:
        raise Conflict(f"{_KIND_NAMES[model]} {key!r} already exists (retire or rename its label instead)", field="key")
    position = fields.get("position")
    if position is None:
        position = (db.session.scalar(select(func.max(model.position)).where(model.project_id == project_id)) or 0) + 1
    row = model(project_id=project_id, **{**fields, "label": fields.get("label") or key, "position": position})
    db.session.add(row)
    db.session.flush()
    audit.record("vocabulary.add", actor=actor, project_id=project_id, target=(model.__tablename__, row.id), key=key)
    return row


def update_entry(model: type, project_id: int, row_id: int, fields: dict[str, Any],
                 actor: User | None) -> DecisionOption | ArtifactEntry:
    """Change label, order, shortcut, note rule, meaning or retired flag; keys and ids never change."""
    row = load(model, row_id, project_id=project_id)
    if "key" in fields and fields["key"] != row.key:
        raise InvalidInput("keys are stable: add a new entry and retire this one instead", field="key")
    fields = {name: value for name, value in fields.items() if name != "key"}
    _check_fields(model, project_id, fields, row_id)
    before = {name: getattr(row, name) for name in fields}
    for name, value in fields.items():
        setattr(row, name, value)
    audit.record("vocabulary.update", actor=actor, project_id=project_id, target=(model.__tablename__, row.id),
                 key=row.key, before=before, after=fields)
    return row
