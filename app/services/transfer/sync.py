"""The repository sync cycle: export the project's state (keeping the previous export as a
timestamped backup), find image files in the site's tree that no frame points at yet, write
them as MIQA CSV rows and import those in merge mode (committed, with a "frames.checksum" job for the
new files). Run twice, the second run adds nothing."""
from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import select
from werkzeug.utils import secure_filename

from app.db import Experiment, Frame, Project, Scan, db
from app.services.errors import InvalidInput
from app.services.transfer import exporter, importer, miqa_csv, tasks
from app.services.transfer.csvfile import CsvSink
from app.services.transfer.model import SCAN_TYPES
from app.storage import Roots, StorageError, relative_location, resolve

# <experiment>/<scan>[_<type>][_<frame>].<nii, nii.gz, nrrd or nhdr>, e.g. visit1/sub-01_T1_0.nii.gz,
# visit1/sub-01_t2.nrrd or visit1/sub-01.nii (type and extension in any case)
DEFAULT_PATTERN = (r"^(?P<experiment>[^/]+)/(?P<scan>[^/]+?)(?:_(?P<type>(?i:"
                   + "|".join(map(re.escape, SCAN_TYPES)) + r")))?(?:_(?P<frame>\d+))?(?i:\.nii(?:\.gz)?|\.nrrd|\.nhdr)$")


def _pattern(text: str | None) -> re.Pattern:
    try:
        pattern = re.compile(text or DEFAULT_PATTERN)
    except re.error as err:
        raise InvalidInput(f"pattern is not a regular expression: {err}", field="pattern") from err
    missing = {"experiment", "scan"} - set(pattern.groupindex)
    if missing:
        raise InvalidInput(f"pattern needs the named group(s) {', '.join(sorted(missing))} "
                           "(and may name type and frame)", field="pattern")
    return pattern


def sync_folder(project: Project) -> Path:
    return Path(current_app.config["INSTANCE_PATH"]) / "sync" / (secure_filename(project.name) or f"project{project.id}")


def _known(project: Project, roots: Roots) -> tuple[set[str], set[tuple[str, str, int]]]:
    """Resolved locations of the project's frames, and its (experiment, scan, frame) slots."""
    locations, slots = set(), set()
    for experiment, scan, number, location in db.session.execute(
            select(Experiment.name, Scan.name, Frame.frame_number, Frame.file_location)
            .join(Scan, Scan.id == Frame.scan_id).join(Experiment, Experiment.id == Scan.experiment_id)
            .where(Experiment.project_id == project.id)):
        slots.add((experiment, scan, number))
        try:
            locations.add(str(resolve(location, roots)))
        except StorageError:
            continue
    return locations, slots


def sync(project: Project, source: Path, pattern: str | None = None,
         progress: importer.Progress = importer._no_progress) -> dict[str, Any]:
    """One cycle; returns the export path, its backup, the new rows file and what was added."""
    regex = _pattern(pattern)
    roots = Roots.from_config()
    source = Path(source)
    if not source.is_dir():
        raise InvalidInput(f"source {source} is not a folder", field="source")
    try:
        relative_location(source, roots)
    except StorageError as err:
        raise InvalidInput(f"source {source} is outside the data root and allowed roots", field="source") from err
    folder = sync_folder(project)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    current, backup = folder / "export.csv", None
    if current.exists():
        backup = folder / f"export-{stamp}.csv"
        os.replace(current, backup)
    progress(0.05, "exporting the current state")
    exporter.export_to_file("csv", [project.id], current)
    known, slots = _known(project, roots)
    rows, skipped = [], []
    progress(0.3, f"looking for new files under {source}")
    for folder_path, folders, files in os.walk(source):
        folders.sort()
        for name in sorted(files):
            path = Path(folder_path) / name
            relative = path.relative_to(source).as_posix()
            match = regex.search(relative)
            if match is None:
                continue
            try:
                resolved = str(resolve(str(path), roots))
            except StorageError as err:
                skipped.append(f"{relative}: {err}")
                continue
            if resolved in known:
                continue
            groups = match.groupdict()
            frame = (groups.get("frame") or "0").strip()
            if not frame.isdigit():
                skipped.append(f"{relative}: frame {frame!r} is not a whole number")
                continue
            slot = (groups["experiment"], groups["scan"], int(frame))
            if slot in slots:
                skipped.append(f"{relative}: frame {slot[2]} of {slot[0]}/{slot[1]} already exists")
                continue
            slots.add(slot)
            known.add(resolved)
            rows.append([project.name, slot[0], slot[1], groups.get("type") or "T1", slot[2],
                         relative_location(path, roots)])
    report: dict[str, Any] = {"export": str(current), "backup": str(backup) if backup else None, "rows_file": None,
                              "added": [row[5] for row in rows], "skipped": skipped, "summary": None}
    if not rows:
        progress(1.0, "nothing new")
        return report
    rows_file = folder / f"new-{stamp}.csv"
    sink = CsvSink()
    sink.row(miqa_csv.REQUIRED)
    for row in rows:
        sink.row(row)
    rows_file.write_text(sink.drain(), encoding="utf-8")
    report["rows_file"] = str(rows_file)
    report["summary"] = importer.import_file(
        rows_file, project=project, mode="merge", actor=None,
        progress=lambda fraction, message: progress(0.4 + 0.6 * fraction, message))
    tasks.frames_added(report["summary"])
    return report
