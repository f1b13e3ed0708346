"""Decision and artifact vocabularies: the global defaults (MIQA's) and per-project copies."""
from __future__ import annotations

from sqlalchemy import select

from app.db import ArtifactEntry, DecisionOption, db

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


def copy_defaults_to(project_id: int) -> None:
    """Give a new project its own copy of the global vocabulary (stable ids it can then change)."""
    seed_defaults()
    for option in db.session.scalars(select(DecisionOption).where(DecisionOption.project_id.is_(None))):
        db.session.add(DecisionOption(project_id=project_id, key=option.key, label=option.label,
                                      meaning=option.meaning, position=option.position, shortcut=option.shortcut,
                                      requires_note=option.requires_note, retired=option.retired))
    for entry in db.session.scalars(select(ArtifactEntry).where(ArtifactEntry.project_id.is_(None))):
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
