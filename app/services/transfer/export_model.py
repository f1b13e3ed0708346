"""What the exporter hands the writers (projects, experiments, scans with their decisions and
evaluations) and the formatting every writer shares (times, locations, MIQA's artifact names)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from app.db import VOXEL
from app.services.transfer.model import AXES, FLIPPED, MIQA_INVERTED


def miqa_states(states: dict[str, str], invert: bool) -> dict[str, str]:
    """Artifact states as MIQA names them: with ``invert`` (the project has full_brain_coverage and no
    partial_brain_coverage entry) full_brain_coverage is written as partial_brain_coverage, flipped."""
    if not invert:
        return states
    out: dict[str, str] = {}
    for key, state in states.items():
        alias = next((name for name, target in MIQA_INVERTED.items() if target == key), None)
        if alias is None:
            out[key] = state
        else:
            out[alias] = FLIPPED[state]
    return out


def miqa_present(decision: DecisionOut) -> list[str]:
    """The artifact names a MIQA file lists for a decision: present entries, then present unmatched names."""
    return [key for key, state in decision.states.items() if state == "present"] + [
        name for name, state in decision.unmatched.items() if state == "present"]


def format_time(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).isoformat() if moment else ""


def format_number(value: float) -> str:
    """A location's number as short as it reads back the same: 3 for 3.0, -45.504, 15.5."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_location(i: float | None, j: float | None = None, k: float | None = None) -> str:
    return "" if i is None else f"i={format_number(i)};j={format_number(j)};k={format_number(k)}"


def location_object(ijk: tuple | None) -> dict[str, float] | None:
    """A location as JSON numbers (whole ones as integers)."""
    if ijk is None or ijk[0] is None:
        return None
    return {axis: int(v) if float(v).is_integer() else float(v) for axis, v in zip(AXES, ijk)}


@dataclass(slots=True)
class ProjectOut:
    name: str
    options: list[dict[str, Any]]
    entries: list[dict[str, Any]]
    model_versions: list[dict[str, Any]]
    members: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class ExperimentOut:
    project: str
    name: str
    note: str
    archived: bool


@dataclass(slots=True)
class DecisionOut:
    code: str
    creator: str | None
    role: str | None
    note: str
    created: datetime | None  # None: the imported file gave no time
    location: tuple[float | None, float | None, float | None]
    states: dict[str, str]
    source: str
    space: str = VOXEL
    frame_locations: dict[int, tuple[float, float, float] | None] = field(default_factory=dict)
    unmatched: dict[str, str] = field(default_factory=dict)

    def location_of(self, frame: int) -> tuple[float | None, float | None, float | None]:
        """The point of interest on one frame (a frame row of a file may have pointed elsewhere)."""
        if frame in self.frame_locations:
            return self.frame_locations[frame] or (None, None, None)
        return self.location


@dataclass(slots=True)
class EvaluationOut:
    model: tuple[str, str]
    frame_number: int | None
    scores: dict[str, Any]
    created: datetime


@dataclass(slots=True)
class ScanOut:
    experiment: ExperimentOut
    name: str
    scan_type: str
    subject_id: str | None
    session_id: str | None
    link: str | None
    archived: bool
    frames: list[tuple[int, str]]
    decisions: list[DecisionOut]
    evaluations: list[EvaluationOut]
