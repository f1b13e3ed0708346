"""Recording reviewer decisions (append-only) and the tier rule that settles a scan."""
from __future__ import annotations

import math
from datetime import datetime
from typing import Iterable

from sqlalchemy import select

from app.db import (
    NOTE_MAX_LENGTH, VOXEL, WORLD, ArtifactEntry, Decision, DecisionArtifact, DecisionOption, Experiment, Scan, User, db,
)
from app.services import vocabulary
from app.services.errors import InvalidInput

SCAN_STATES = ("unreviewed", "needs_tier2", "complete")


def scan_state(latest: Decision | None) -> str:
    """MIQA's rule (:func:`decided_state`) on a scan's latest decision; unreviewed without one."""
    if latest is None:
        return "unreviewed"
    return decided_state(latest.option.meaning, latest.creator_role)


def decided_state(meaning: str, creator_role: str | None) -> str:
    """MIQA's rule for a scan with a decision: complete when the latest decision is usable or was made
    by tier 2 (or admin), else it needs tier 2."""
    if meaning == "usable" or creator_role in ("tier2", "admin"):
        return "complete"
    return "needs_tier2"


def artifact_states(
    entries: Iterable[ArtifactEntry], present: Iterable[str] = (), absent: Iterable[str] = ()
) -> dict[int, str]:
    """Entry id -> state for every entry; names not in the vocabulary are refused."""
    by_key = {entry.key: entry for entry in entries}
    present, absent = list(present or []), list(absent or [])
    for field, keys in (("present", present), ("absent", absent)):
        unknown = [key for key in keys if key not in by_key]
        if unknown:
            raise InvalidInput(f"unknown artifact(s): {', '.join(map(str, unknown))}", field=f"artifacts.{field}")
    both = set(present) & set(absent)
    if both:
        raise InvalidInput(f"artifact(s) both present and absent: {', '.join(sorted(both))}", field="artifacts")
    states = {entry.id: "undefined" for entry in by_key.values()}
    states.update({by_key[key].id: "present" for key in present})
    states.update({by_key[key].id: "absent" for key in absent})
    return states


def _check_location(scan: Scan, location: dict | None) -> tuple[float | None, float | None, float | None, str | None]:
    """(i, j, k, space) of a posted point of interest: a voxel of the original grid (space None; integers,
    inside the volume) or, as MIQA's viewer posts it, a world position in millimetres (space "world";
    any finite numbers). ``space`` in the object says which; without it, numbers that are not all whole
    are MIQA's world position."""
    if not location:
        return None, None, None, None
    if not isinstance(location, dict):
        raise InvalidInput("location must be an object with i, j and k", field="location")
    space = location.get("space")
    if space not in (None, VOXEL, WORLD):
        raise InvalidInput(f"location space must be 'voxel' or 'world', not {space!r}", field="location")
    try:
        numbers = tuple(_coordinate(location[axis]) for axis in ("i", "j", "k"))
    except KeyError as err:
        raise InvalidInput(f"location needs i, j and k ({err.args[0]} is missing)", field="location") from err
    except (TypeError, ValueError) as err:
        raise InvalidInput(f"location: {err}", field="location") from err
    if space == WORLD or (space is None and not all(value.is_integer() for value in numbers)):
        return (*numbers, WORLD)
    if not all(value.is_integer() for value in numbers):
        raise InvalidInput(f"a voxel location needs whole numbers, not {numbers}", field="location")
    ijk = tuple(int(value) for value in numbers)
    shapes = [frame.shape for frame in scan.frames if frame.shape]
    if any(value < 0 for value in ijk) or any(
        any(value >= size for value, size in zip(ijk, shape[:3])) for shape in shapes
    ):
        raise InvalidInput(f"location {ijk} is outside the volume", field="location")
    return (*ijk, None)


def _coordinate(value: object) -> float:
    """A finite number (or its text); never a boolean, which JSON would otherwise turn into 0 or 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"{value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def record_decision(
    scan: Scan,
    creator: User | None,
    option_key: str,
    *,
    role: str | None,
    note: str = "",
    present: Iterable[str] = (),
    absent: Iterable[str] = (),
    location: dict | None = None,
    source: str = "review",
    created_at: datetime | None = None,
    creator_name: str | None = None,
) -> Decision:
    """Append a decision with the state of every artifact entry of the scan's project."""
    project_id = db.session.scalar(select(Experiment.project_id).where(Experiment.id == scan.experiment_id))
    option = db.session.scalar(
        select(DecisionOption).where(DecisionOption.project_id == project_id, DecisionOption.key == option_key)
    )
    if option is None or (option.retired and source == "review"):
        raise InvalidInput(f"unknown decision {option_key!r}", field="decision")
    note = note or ""
    if not isinstance(note, str) or len(note) > NOTE_MAX_LENGTH:
        raise InvalidInput(f"note must be text of at most {NOTE_MAX_LENGTH} characters", field="note")
    if source == "review" and option.requires_note and not note.strip():
        raise InvalidInput(f"a note is required for decision {option.label!r}", field="note")
    states = artifact_states(vocabulary.artifact_entries(project_id, include_retired=True), present, absent)
    i, j, k, space = _check_location(scan, location)
    decision = Decision(scan_id=scan.id, option_id=option.id, creator_id=creator.id if creator else None,
                        creator_name=creator_name, creator_role=role, note=note, location_i=i,
                        location_j=j, location_k=k, location_space=space, source=source)
    if created_at is not None:
        decision.created_at = created_at
    decision.artifacts = [DecisionArtifact(entry_id=entry_id, state=state) for entry_id, state in states.items()]
    db.session.add(decision)
    db.session.flush()
    return decision
