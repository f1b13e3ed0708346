"""The records training reads (training/data.py's ScanRecords) and what they hold: label counts per
output, the project's label settings, whether its images are 2-D."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.db import Decision, Experiment, Project, Scan, db
from app.services import projects, vocabulary
from app.services.errors import InvalidInput
from app.storage import StorageError, local_copy, resolve


def _scans(project_id: int) -> list[Scan]:
    return list(db.session.scalars(
        select(Scan).join(Experiment)
        .where(Experiment.project_id == project_id, Scan.archived_at.is_(None), Experiment.archived_at.is_(None))
        .options(selectinload(Scan.frames)).order_by(Scan.id)))


def _decisions(project_id: int) -> dict[int, list[Decision]]:
    rows = db.session.scalars(
        select(Decision).join(Scan).join(Experiment).where(Experiment.project_id == project_id)
        .options(selectinload(Decision.option), selectinload(Decision.artifacts)))
    by_scan: dict[int, list[Decision]] = {}
    for decision in rows:
        by_scan.setdefault(decision.scan_id, []).append(decision)
    return by_scan


def records(project_id: int, resolve_files: bool = True):
    """Plain ScanRecords of every reviewed scan; with ``resolve_files``, every frame as a local path.

    Raises InvalidInput listing (up to five) frames whose files are missing or outside the roots.
    """
    from training.data import DecisionRecord, FrameRecord, ScanRecord

    by_scan = _decisions(project_id)
    result, missing = [], []
    cache = Path(current_app.config["CACHE_DIR"])
    for scan in _scans(project_id):
        if scan.id not in by_scan:
            continue
        frames = []
        for frame in scan.frames:
            path = frame.file_location
            if resolve_files:
                try:
                    path = str(local_copy(resolve(frame.file_location), cache))
                except StorageError as err:
                    missing.append(f"{scan.name} frame {frame.frame_number}: {err}")
                    continue
            frames.append(FrameRecord(frame.id, path, frame.checksum or ""))
        decisions = tuple(DecisionRecord(d.option.meaning, d.creator_role, d.created_at,
                                         {a.entry_id: a.state for a in d.artifacts}, d.id) for d in by_scan[scan.id])
        result.append(ScanRecord(scan.id, scan.subject_id or f"scan-{scan.id}", tuple(frames), decisions))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise InvalidInput(f"{len(missing)} image file(s) missing or unreadable: {'; '.join(missing[:5])}{more}")
    return result


def candidate_outputs(project_id: int):
    from training.data import USABLE, Output

    return [USABLE] + [Output("artifact", e.key, e.id) for e in vocabulary.artifact_entries(project_id)]


def label_settings(project: Project):
    from training.data import DatasetError, LabelSettings

    try:
        return LabelSettings.from_project(asdict(projects.settings_of(project)))
    except DatasetError as err:
        raise InvalidInput(str(err), field="settings") from err


def min_labels(project: Project) -> int:
    """The project's minimum of present and of absent labels per trained output (setting min_labels_per_class)."""
    return int(projects.settings_of(project).min_labels_per_class)


@dataclass(frozen=True)
class LabelCount:
    """How many settled present and absent labels an output has, and whether both reach the minimum."""

    key: str
    kind: str
    entry_id: int | None
    present: int
    absent: int
    enough: bool


def label_counts(project: Project) -> list[LabelCount]:
    """How many present/absent labels each possible output has (settled decisions, every frame)."""
    from training.data import label_counts as count, label_items

    outputs = candidate_outputs(project.id)
    counts = count(label_items(records(project.id, resolve_files=False), outputs, label_settings(project)), outputs)
    minimum = min_labels(project)
    return [LabelCount(o.key, o.kind, o.entry_id, counts[o.key]["present"], counts[o.key]["absent"],
                       min(counts[o.key].values()) >= minimum) for o in outputs]


def is_2d(project_id: int) -> bool:
    """True when every frame of the project is a 2-D image (the 2-D backbone is then the default)."""
    shapes = [frame.shape for scan in _scans(project_id) for frame in scan.frames if frame.shape]
    return bool(shapes) and all(len(s) == 2 or (len(s) == 3 and s[2] == 1) for s in shapes)

