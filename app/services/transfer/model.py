"""What an import file says, read into plain objects before anything touches the database.

Every reader (MIQA CSV, MIQA/qcloop JSON, qcloop full CSV) fills the same tree of
ProjectIn -> ExperimentIn -> ScanIn, each object remembering where it came from (a row
number or a JSON path) so later checks can name the place and the field of a problem.
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from app.db import VOXEL, WORLD
from app.services.errors import InvalidInput
from app.services.transfer.limits import ATTRIBUTE_LIMITS, too_long

# MIQA's scan types (miqa.core.models.scan) plus CT, which MIQA added later.
SCAN_TYPES = (
    "T1", "T2", "FMRI", "MRA", "PD", "DTI", "DWI", "PET", "CT",
    "ncanda-t1spgr-v1", "ncanda-mprage-v1", "ncanda-t2fse-v1", "ncanda-dti6b500pepolar-v1",
    "ncanda-dti30b400-v1", "ncanda-dti60b1000-v1", "ncanda-grefieldmap-v1", "ncanda-rsfmri-v1",
)
SCAN_TYPE_MAX = 64  # the scans.scan_type column
ARTIFACT_STATES = ("present", "absent", "undefined")
# MIQA's reviewers record coverage as the artifact "partial_brain_coverage", the inverse of the
# network output "full_brain_coverage" that qcloop's vocabulary keeps (present = full coverage):
# MIQA files name the former, so it is read and written as the latter with present/absent swapped.
MIQA_INVERTED = {"partial_brain_coverage": "full_brain_coverage"}
# Names MIQA's files use for its artifacts besides the current ones: its documentation's examples write
# "partial_coverage", and its network code named susceptibility_metal "metal_susceptibility".
MIQA_ALIASES = {"partial_coverage": "partial_brain_coverage", "metal_susceptibility": "susceptibility_metal"}
FLIPPED = {"present": "absent", "absent": "present", "undefined": "undefined"}
MAX_ERRORS = 100
AXES = ("i", "j", "k")


@dataclass(slots=True)
class Problem:
    where: str
    field: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.where}, field {self.field}: {self.message}" if self.field else f"{self.where}: {self.message}"


class Problems:
    """Errors and warnings found while reading and checking a file (errors capped at MAX_ERRORS)."""

    def __init__(self) -> None:
        self.errors: list[Problem] = []
        self.error_count = 0
        self.warnings: list[Problem] = []
        self.warning_count = 0

    def error(self, where: str, field: str | None, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(Problem(where, field, message))

    def warn(self, where: str, field: str | None, message: str) -> None:
        self.warning_count += 1
        if len(self.warnings) < MAX_ERRORS:
            self.warnings.append(Problem(where, field, message))

    def raise_if_any(self) -> None:
        """All or nothing: one error refuses the whole file, naming (up to 100 of) its problems."""
        if not self.error_count:
            return
        first = self.errors[0]
        more = f" (and {self.error_count - 1} more)" if self.error_count > 1 else ""
        details: dict[str, Any] = {"errors": [asdict(p) for p in self.errors], "error_count": self.error_count}
        if first.field:
            details["field"] = first.field
        raise InvalidInput(f"{first}{more}", **details)


# Field names each format uses for the parts of a decision, so errors name the file's own column.
MIQA_CSV_FIELDS = {"decision": "last_decision", "creator": "last_decision_creator", "note": "last_decision_note",
                   "created": "last_decision_created", "artifacts": "identified_artifacts",
                   "location": "location_of_interest", "role": "creator_role"}
FULL_CSV_FIELDS = {"decision": "decision", "creator": "decision_creator", "note": "decision_note",
                   "created": "decision_created", "artifacts": "artifact", "location": "location_of_interest",
                   "role": "decision_creator_role"}
JSON_FIELDS = {"decision": "decision", "creator": "creator", "note": "note", "created": "created",
               "artifacts": "artifacts", "location": "location", "role": "creator_role"}


@dataclass(slots=True)
class DecisionIn:
    where: str
    fields: dict[str, str]
    code: str
    creator: str | None = None
    role: str | None = None
    role_given: bool = False
    note: str = ""
    created: datetime | None = None
    location: tuple[float, float, float] | None = None
    space: str = VOXEL
    # Frames whose rows point elsewhere than ``location`` (None: no point on that frame), same space; None
    # when there are none (most decisions: no dict each).
    frame_locations: dict[int, tuple[float, float, float] | None] | None = None
    present: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    undefined: tuple[str, ...] = ()
    # The state of entries the file does not name: MIQA lists present ones only.
    unlisted: str = "undefined"
    source: str = "import"

    def __post_init__(self) -> None:
        # A file repeats its few codes, reviewers, notes and artifact names on every scan: one copy each.
        self.code = sys.intern(self.code)
        self.creator = shared(self.creator)
        self.note = sys.intern(self.note)
        self.present = tuple(map(sys.intern, self.present))
        self.absent = tuple(map(sys.intern, self.absent))
        self.undefined = tuple(map(sys.intern, self.undefined))

    def set_frame_location(self, frame: int, point: tuple[float, float, float] | None) -> None:
        if self.frame_locations is None:
            self.frame_locations = {}
        self.frame_locations[frame] = point

    def add_states(self, states: dict[str, str]) -> None:
        """More artifact names with their states (qcloop's files list names no entry matched apart)."""
        for name, state in states.items():
            setattr(self, state, getattr(self, state) + (sys.intern(str(name)),))

    def identity(self) -> tuple:
        return (self.code, (self.creator or "").lower(), self.created)

    def content(self, with_location: bool = True) -> tuple:
        """Everything the decision says, without where the file says it."""
        return (self.code, self.creator, self.role, self.role_given, self.note, self.created,
                (self.location, self.space) if with_location else None, self.present, self.absent, self.undefined,
                self.unlisted, self.source)

    def same_as(self, other: DecisionIn, with_location: bool = True) -> bool:
        """The same decision: code, creator and time when the time is given, else everything it says."""
        if other.created is not None:
            return self.identity() == other.identity()
        return self.content(with_location) == other.content(with_location)


@dataclass(slots=True)
class EvaluationIn:
    where: str
    model: tuple[str, str]
    frame_number: int | None
    scores: dict[str, float]
    created: datetime | None


@dataclass(slots=True)
class ModelVersionIn:
    where: str
    registry_name: str
    version: str
    alias: str | None = None
    output_map: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    created: datetime | None = None


@dataclass(slots=True)
class FrameIn:
    where: str
    location: str


@dataclass(slots=True)
class ScanIn:
    where: str
    name: str
    scan_type: str | None = None
    subject_id: str | None = None
    session_id: str | None = None
    link: str | None = None
    archived: bool | None = None
    frames: dict[int, FrameIn] = field(default_factory=dict)
    decisions: list[DecisionIn] = field(default_factory=list)
    evaluations: list[EvaluationIn] = field(default_factory=list)

    def add_decision(self, decision: DecisionIn, frame: int | None = None) -> None:
        """Rows repeating a scan's decision (MIQA writes it on every frame row) count once, with or
        without a time; a frame row (``frame``) pointing elsewhere keeps its own location for that frame."""
        same = next((d for d in self.decisions if d.same_as(decision, with_location=frame is None)), None)
        if same is None:
            self.decisions.append(decision)
        elif frame is not None and frame not in (same.frame_locations or {}) and (
                (decision.location, decision.space) != (same.location, same.space)):
            same.set_frame_location(frame, decision.location)


@dataclass(slots=True)
class ExperimentIn:
    where: str
    name: str
    note: str | None = None
    archived: bool | None = None
    scans: dict[str, ScanIn] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MemberIn:
    """A project member in qcloop's full files: the account by username, its e-mail, the role here."""

    where: str
    username: str
    email: str | None
    role: str


@dataclass(slots=True)
class ProjectIn:
    where: str
    name: str
    experiments: dict[str, ExperimentIn] = field(default_factory=dict)
    options: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    model_versions: list[ModelVersionIn] = field(default_factory=list)
    members: list[MemberIn] = field(default_factory=list)


@dataclass
class Document:
    """A whole import file: its format, its projects, and what reading it found."""

    format: str
    projects: dict[str, ProjectIn] = field(default_factory=dict)
    problems: Problems = field(default_factory=Problems)
    rows: int = 0

    def project(self, name: str, where: str) -> ProjectIn:
        found = self.projects.get(name)
        if found is None:
            found = self.projects[name] = ProjectIn(where, name)
        return found


# --- value parsing shared by the readers ---------------------------------------------------------

def shared(text: str | None) -> str | None:
    """One copy of a text that many rows repeat (a reviewer, a session), so a big file holds it once."""
    return None if text is None else sys.intern(text)


def clean(value: Any) -> str | None:
    """A cell's text, or None when it is empty."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def set_once(obj: Any, attribute: str, value: Any, where: str, field_name: str, problems: Problems) -> None:
    """Fill an attribute from a row; rows that disagree about the same scan or experiment are an error, and
    so is a text longer than the API allows."""
    if value is None:
        return
    limit = ATTRIBUTE_LIMITS.get(attribute)
    if limit is not None and too_long(value, limit, where, field_name, problems):
        return
    current = getattr(obj, attribute)
    if current is None:
        setattr(obj, attribute, value)
    elif current != value:
        problems.error(where, field_name, f"{value!r} conflicts with {current!r} given at {obj.where}")


def parse_scan_type(value: str | None, where: str, field_name: str, problems: Problems, *,
                    own: bool = False) -> str | None:
    """MIQA's scan types, spelled as MIQA does; ``own`` (qcloop's full files) also any type qcloop holds."""
    if value is None:
        return None
    for known in SCAN_TYPES:
        if value.lower() == known.lower():
            return known
    if own and len(value) <= SCAN_TYPE_MAX:
        return value
    problems.error(where, field_name, f"unknown scan type {value!r} (expected one of {', '.join(SCAN_TYPES)})")
    return None


def parse_frame_number(value: Any, where: str, field_name: str, problems: Problems) -> int | None:
    text = clean(value)
    if text is None:
        problems.error(where, field_name, "missing")
        return None
    try:
        number = int(text)
    except (TypeError, ValueError):
        try:
            as_float = float(text)
        except ValueError:
            as_float = None
        if as_float is None or not as_float.is_integer():
            problems.error(where, field_name, f"{text!r} is not a whole number")
            return None
        number = int(as_float)
    if number < 0:
        problems.error(where, field_name, f"{number} is negative")
        return None
    return number


def parse_time(value: Any, where: str, field_name: str, problems: Problems) -> datetime | None:
    """ISO 8601 (MIQA writes Python's str(datetime)); a time without a zone is taken as UTC."""
    text = clean(value)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        problems.error(where, field_name, f"{text!r} is not a date and time (ISO 8601)")
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def parse_location(value: Any, where: str, field_name: str, problems: Problems,
                   space: str = VOXEL) -> tuple[float, float, float] | None:
    """MIQA's 'i=..;j=..;k=..' (or an {"i","j","k"} object in JSON), numbers as MIQA writes them: floats,
    negative too, in ``space``; a voxel index (qcloop's own space) cannot be negative."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, dict):
        ijk = _axes(value)
    elif isinstance(value, str):
        ijk = _ijk(value)
    else:
        ijk = "must be text such as 'i=-45.5;j=20;k=15.25' or an object with i, j and k"
    if isinstance(ijk, str):
        problems.error(where, field_name, f"{value!r}: {ijk}")
        return None
    if space == VOXEL and any(n < 0 for n in ijk):
        problems.error(where, field_name, f"{value!r}: a voxel index cannot be negative")
        return None
    return ijk  # type: ignore[return-value]


def _axes(given: dict[str, Any]) -> tuple[float, float, float] | str:
    """The i, j and k of a mapping as floats, or what is wrong with the first that is not one."""
    values = tuple(_number(given.get(axis), axis) for axis in AXES)
    return next((v for v in values if isinstance(v, str)), values)  # type: ignore[return-value]


def _number(value: Any, axis: str) -> float | str:
    """An axis's value as a float, or the reason it is none."""
    if value is None or value == "":
        return f"{axis} is missing"
    if isinstance(value, bool):
        return f"{axis} is not a number ({value!r})"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{axis} is not a number ({value!r})"
    if not math.isfinite(number):
        return f"{axis} is not a finite number ({value!r})"
    return number


@lru_cache(maxsize=4096)
def _ijk(text: str) -> tuple[float, float, float] | str:
    """'i=..;j=..;k=..' as three floats, or what is wrong with it; cached, so decisions pointing at the
    same place share one tuple."""
    found: dict[str, str] = {}
    for part in text.strip().rstrip(";").split(";"):
        axis, equals, number = part.partition("=")
        axis = axis.strip().lower()
        if not equals or axis not in AXES:
            return f"{part.strip()!r} is not one of i=.., j=.., k=.. (expected i=..;j=..;k=..)"
        if axis in found:
            return f"{axis} is given twice"
        found[axis] = number.strip()
    return _axes(found)


def parse_space(value: Any, where: str, field_name: str, problems: Problems, default: str) -> str:
    """A location's space in qcloop's files: voxel (an index of the original grid) or world (MIQA's)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if not isinstance(value, str) or value.strip().lower() not in (VOXEL, WORLD):
        problems.error(where, field_name, f"{value!r} is not {VOXEL} or {WORLD}")
        return default
    return value.strip().lower()


def split_names(value: Any) -> tuple[str, ...]:
    """Artifact names joined by ';' (MIQA), or a list, or the present ones of MIQA's {name: 1/0/-1} map."""
    if value is None:
        return ()
    if isinstance(value, dict):
        return split_states(value)[0]
    if isinstance(value, (list, tuple)):
        return tuple(str(name).strip() for name in value if str(name).strip())
    return tuple(part.strip() for part in str(value).split(";") if part.strip())


def split_states(value: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(present, absent, undefined) names of MIQA's stored {name: 1 | 0 | -1} artifact map."""
    groups: dict[str, list[str]] = {"present": [], "absent": [], "undefined": []}
    for name, flag in value.items():
        if flag is True or flag in (1, "1", "present"):
            groups["present"].append(str(name))
        elif flag is False or flag in (0, "0", "absent"):
            groups["absent"].append(str(name))
        elif flag in (-1, "-1", "undefined", None):
            groups["undefined"].append(str(name))
    return tuple(groups["present"]), tuple(groups["absent"]), tuple(groups["undefined"])


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


# --- what the exporter hands the writers ---------------------------------------------------------

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
