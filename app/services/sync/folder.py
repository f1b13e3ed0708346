"""A folder of image files as a sync source (registered in place), and the folder cycle it grew from:
find image files in a site's tree that no frame points at yet, import them in merge mode (with a
"frames.checksum" job for the new files), and keep the project's state before the sync as an export (the
previous export kept as a timestamped backup). Run twice, the second run adds nothing.

Paths relative to the source are matched against patterns with named groups ``experiment``, ``scan``,
``type``, ``frame``, ``subject`` and ``session``; the first pattern that matches decides. Without
``experiment`` a file's experiment is ``<subject>_<session>`` (what it has of them), else the source
folder's name. A folder holding DICOM files is one frame (its series), matched as its path with a
trailing ``/``. Every file not taken is reported with the reason; a sync that fails leaves no file
behind and changes no export.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

from flask import current_app
from sqlalchemy import select
from werkzeug.utils import secure_filename

from app.db import Experiment, Frame, Project, Scan, User, db
from app.services import imaging
from app.services.errors import InvalidInput
from app.services.sync.base import Listing, Outgoing, Pushed, SourceItem
from app.services.transfer import exporter, importer, tasks
from app.services.transfer.csvfile import CsvSink
from app.services.transfer.files import FileChecker
from app.services.transfer.model import SCAN_TYPE_MAX, SCAN_TYPES
from app.storage import LocalLocation, Roots, StorageError, relative_location
from app.storage.identity import UPLOADS
from app.storage.scope import ProjectScope

# BIDS suffixes and the scan type each is imported as.
BIDS_SUFFIXES = {"T1w": "T1", "T2w": "T2", "FLAIR": "FLAIR", "dwi": "DWI", "bold": "FMRI"}
GROUPS = ("experiment", "scan", "type", "frame", "subject", "session")
_TYPE = "(?i:" + "|".join(map(re.escape, sorted({*SCAN_TYPES, *BIDS_SUFFIXES}, key=len, reverse=True))) + ")"
_IMAGE_SUFFIXES = tuple(sorted(imaging.NIFTI_SUFFIXES + imaging.NRRD_SUFFIXES, key=len, reverse=True))
# An image file's extension, or the "/" that ends a DICOM folder's path.
_END = "(?:(?i:" + "|".join(map(re.escape, _IMAGE_SUFFIXES)) + ")|/)$"

# The default patterns, tried in this order (the first that matches a path decides).
DEFAULT_PATTERNS = {
    # sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz (session optional): experiment sub-01_ses-1, scan T1w
    # (with its other entities, e.g. acq-fast_run-1_T1w), the suffix mapped by BIDS_SUFFIXES.
    "bids": (r"^(?P<subject>sub-[A-Za-z0-9]+)/(?:(?P<session>ses-[A-Za-z0-9]+)/)?[A-Za-z0-9]+/"
             r"(?P=subject)(?:_(?P=session))?_(?P<scan>(?:[A-Za-z0-9]+-[A-Za-z0-9]+_)*(?P<type>[A-Za-z0-9]+))"
             + _END),
    # visit1/sub-01_T1_0.nii.gz, visit1/sub-01_t2.nrrd, visit1/sub-01.nii, visit1/sub-01_T1/ (DICOM)
    "experiment/scan": (r"^(?P<experiment>[^/]+)/(?P<scan>[^/]+?)(?:_(?P<type>" + _TYPE + r"))?"
                        r"(?:_(?P<frame>\d+))?" + _END),
    # MIQA's samples: IXI002/0828-DTI/IXI002-Guys-0828-DTI-01.nii.gz (the scan folder's last word is its type
    # when it is one; a trailing -N or _N numbers the frame)
    "experiment/scan/frame": (r"^(?P<experiment>[^/]+)/(?P<scan>(?:[^/]*[-_])?(?P<type>" + _TYPE + r")(?=/)|[^/]+)/"
                              r"(?:[^/]*[-_](?P<frame>\d+)|[^/]+)" + _END),
    # sub-01_T1.nii.gz directly in the source folder (experiment: the source folder's name)
    "flat": r"^(?P<scan>[^/]+?)(?:_(?P<type>" + _TYPE + r"))?(?:_(?P<frame>\d+))?" + _END,
}
_DEFAULTS = [re.compile(text) for text in DEFAULT_PATTERNS.values()]


@dataclass(frozen=True, slots=True)
class Item:
    """A candidate frame: an image file, or a folder of DICOM files (``relative`` ends with "/")."""

    relative: str
    path: Path
    stored: Path  # the file the frame names: the image, or the DICOM folder's first file


@dataclass
class NewScan:
    type: str | None
    subject: str | None
    session: str | None
    first: str


@dataclass
class Found:
    rows: list[tuple[str, str, int, str]] = field(default_factory=list)  # experiment, scan, frame, location
    scans: dict[tuple[str, str], NewScan] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    known: int = 0

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append({"path": path, "reason": reason})


def compile_patterns(texts: str | Iterable[str] | None) -> list[re.Pattern]:
    """The user's patterns (one or several, tried in order), or the default ones."""
    if isinstance(texts, str):
        texts = [texts]
    texts = [text for text in (texts or []) if text]
    if not texts:
        return _DEFAULTS
    compiled = []
    for text in texts:
        try:
            pattern = re.compile(text)
        except re.error as err:
            raise InvalidInput(f"pattern {text!r} is not a regular expression: {err}", field="pattern") from err
        if "scan" not in pattern.groupindex:
            raise InvalidInput(f"pattern {text!r} needs the named group scan (and may name "
                               f"{', '.join(name for name in GROUPS if name != 'scan')})", field="pattern")
        compiled.append(pattern)
    return compiled


def scan_type(value: str) -> str | None:
    """A type as qcloop stores it: MIQA's spelling of its types, BIDS suffixes mapped, others as given
    (None when too long for the column)."""
    for known in SCAN_TYPES:
        if value.lower() == known.lower():
            return known
    for suffix, known in BIDS_SUFFIXES.items():
        if value.lower() == suffix.lower():
            return known
    return value if len(value) <= SCAN_TYPE_MAX else None


def checked_root(source: Path | str, project_id: int, *, from_data_root: bool = False) -> Path:
    """The absolute folder of an on-disk source, refused (400) when it is no folder, lies outside the data
    root and allowed roots, or is another project's uploads. A relative ``source`` is taken from the working
    folder, as any command-line path, or with ``from_data_root`` (the API) from the data root."""
    roots = Roots.from_config()
    if not str(source).strip():
        raise InvalidInput("source is required", field="source")
    source = Path(os.path.abspath(roots.data_root / source if from_data_root else source))
    if not source.is_dir():
        raise InvalidInput(f"source {source} is not a folder", field="source")
    try:
        relative_location(source, roots)
    except StorageError as err:
        raise InvalidInput(f"source {source} is outside the data root and allowed roots", field="source") from err
    try:
        ProjectScope.from_config(project_id, roots).check(LocalLocation(source))
    except StorageError as err:
        raise InvalidInput(f"source {source}: {err}", field="source") from err
    return source


def file_version(path: Path) -> str:
    """What changes when an on-disk image changes: size and modification time (of every file of a DICOM
    folder)."""
    files = sorted(child for child in path.iterdir() if child.is_file()) if path.is_dir() else [path]
    stats = [child.stat() for child in files]
    return f"{len(stats)}:{sum(s.st_size for s in stats)}:{max((s.st_mtime_ns for s in stats), default=0)}"


def sync_folder(project: Project) -> Path:
    """Where the project's sync exports and imported rows are kept."""
    name = secure_filename(project.name) or f"project{project.id}"
    return Path(current_app.config["INSTANCE_PATH"]) / "sync" / name


def _is_dicom(path: Path) -> bool:
    """A DICOM file: by its extension, or by its preamble when its name says nothing."""
    try:
        return path.is_file() and imaging.format_of(path).name == "dicom"
    except InvalidInput:
        return False


def _items(source: Path, found: Found, uploads: Path) -> Iterator[Item]:
    """Image files and DICOM folders under ``source``, in name order; what is not one is reported. The
    uploads folder (every project's uploaded files) is never searched, nor named."""
    companions: dict[Path, str] = {}  # data files of detached NRRD headers -> the header's relative path
    for folder, folders, files in os.walk(source):
        here = Path(folder)
        prefix = "" if here == source else here.relative_to(source).as_posix() + "/"
        for name in sorted(folders):
            if name.startswith("."):
                found.skip(prefix + name + "/", "hidden folder, not searched")
        folders[:] = sorted(name for name in folders if not name.startswith(".") and here / name != uploads)
        dicom = [name for name in sorted(files) if _is_dicom(here / name)]
        if dicom:
            if prefix:
                yield Item(prefix, here, here / dicom[0])
            else:  # one line for what may be hundreds of slices
                found.skip(dicom[0], f"{len(dicom)} DICOM file(s) directly in the source folder, {dicom[0]} first "
                                     "(sync from the folder above: each series needs its own folder)")
        for name in files:
            if name.lower().endswith(".nhdr") and not name.startswith("."):
                companions.update((Path(os.path.realpath(path)), prefix + name) for path in _nrrd_data(here / name))
        for name in sorted(set(files) - set(dicom)):
            relative = prefix + name
            lower = name.lower()
            if name.startswith("."):
                found.skip(relative, "hidden file")
            elif lower.endswith(_IMAGE_SUFFIXES):
                yield Item(relative, here / name, here / name)
            elif Path(os.path.realpath(here / name)) in companions:
                found.skip(relative, f"data file of the NRRD header {companions[Path(os.path.realpath(here / name))]}"
                                     " (the header is the frame)")
            else:
                found.skip(relative, f"not an image file (qcloop reads {imaging.SUPPORTED})")


def _nrrd_data(header: Path) -> list[Path]:
    """The files of a detached NRRD besides its header (none when the header is unreadable: its own check
    reports that)."""
    try:
        return [path for path in imaging.frame_files(header) if path != header]
    except InvalidInput:
        return []


def _known(project: Project, checker: FileChecker) -> tuple[set[str], set[tuple[str, str, int]], set[tuple[str, str]]]:
    """Resolved locations of the project's frames (and the folders of its DICOM frames), its
    (experiment, scan, frame) slots and its (experiment, scan) names."""
    locations, slots, scans = set(), set(), set()
    for experiment, scan, number, location in db.session.execute(
            select(Experiment.name, Scan.name, Frame.frame_number, Frame.file_location)
            .join(Scan, Scan.id == Frame.scan_id).join(Experiment, Experiment.id == Scan.experiment_id)
            .where(Experiment.project_id == project.id)):
        slots.add((experiment, scan, number))
        resolved = checker.resolve(location, project.id)
        if isinstance(resolved, LocalLocation):
            locations.add(str(resolved.path))
            if resolved.path.is_dir() or _is_dicom(resolved.path):
                locations.add(str(resolved.path if resolved.path.is_dir() else resolved.path.parent) + "/")
    for experiment, scan in db.session.execute(
            select(Experiment.name, Scan.name).join(Scan, Scan.experiment_id == Experiment.id)
            .where(Experiment.project_id == project.id)):
        scans.add((experiment, scan))
    return locations, slots, scans


def _experiment(groups: dict[str, str | None], source: Path) -> str:
    if groups.get("experiment"):
        return groups["experiment"]
    named = "_".join(groups[name] for name in ("subject", "session") if groups.get(name))
    return named or source.name


@dataclass(frozen=True)
class Matched:
    """What a pattern made of a path: its (experiment, scan, frame) slot, type, subject and session."""

    slot: tuple[str, str, int]
    type: str | None
    subject: str | None
    session: str | None


def _match(item: Item, source: Path, patterns: list[re.Pattern], found: Found) -> Matched | None:
    """The first pattern's reading of the item's path; None (reported in ``found``) when none fits."""
    match = next((m for m in (p.search(item.relative) for p in patterns) if m is not None), None)
    if match is None:
        found.skip(item.relative, "matches no pattern" + (
            f" (default patterns: {', '.join(DEFAULT_PATTERNS)})" if patterns == _DEFAULTS else ""))
        return None
    groups = {name: (value.strip() if isinstance(value, str) else None) or None
              for name, value in match.groupdict().items()}
    frame = groups.get("frame") or "0"
    if not frame.isdigit():
        found.skip(item.relative, f"frame {frame!r} is not a whole number")
        return None
    kind = scan_type(groups["type"]) if groups.get("type") else None
    if groups.get("type") and kind is None:
        found.skip(item.relative, f"scan type is longer than {SCAN_TYPE_MAX} characters")
        return None
    if not groups.get("scan"):
        found.skip(item.relative, "the pattern's scan group is empty")
        return None
    return Matched((_experiment(groups, source), groups["scan"], int(frame)), kind, groups.get("subject"),
                   groups.get("session"))


def _find(project: Project, source: Path, patterns: list[re.Pattern], roots: Roots) -> Found:
    found = Found()
    checker = FileChecker(roots, "error")
    known, slots, existing_scans = _known(project, checker)
    taken: dict[tuple[str, str, int], str] = {}
    for item in _items(source, found, roots.data_root / UPLOADS):
        real = os.path.realpath(item.path) + ("/" if item.relative.endswith("/") else "")
        if real in known or os.path.realpath(item.stored) in known:
            found.known += 1
            continue
        matched = _match(item, source, patterns, found)
        if matched is None:
            continue
        slot, kind = matched.slot, matched.type
        if slot in slots:
            found.skip(item.relative, f"{slot[0]}/{slot[1]} already has a frame {slot[2]} (another file)")
            continue
        if slot in taken:
            found.skip(item.relative, f"frame {slot[2]} of {slot[0]}/{slot[1]} is taken by {taken[slot]}")
            continue
        resolved = checker.resolve(str(item.path), project.id)
        if isinstance(resolved, str):
            found.skip(item.relative, resolved)
            continue
        checked = checker.check(resolved)
        if checked.problem:
            found.skip(item.relative, checked.problem)
            continue
        scan_key = slot[:2]
        if scan_key not in existing_scans:
            first = found.scans.get(scan_key)
            if first is None:
                found.scans[scan_key] = NewScan(kind, matched.subject, matched.session, item.relative)
            elif kind and first.type and kind != first.type:
                found.skip(item.relative, f"scan type {kind} differs from {first.type} of {first.first} "
                                          f"(the same scan {slot[0]}/{slot[1]})")
                continue
        taken[slot] = item.relative
        found.rows.append((*slot, relative_location(item.stored, roots)))
    return found


def _rows_text(project: Project, found: Found) -> str:
    """The new frames as qcloop CSV records (which, unlike MIQA's CSV, carry any scan type)."""
    columns = ["record", "project_name", "experiment_name", "scan_name", "frame_number", "file_location",
               "scan_type", "subject_id", "session_id"]
    sink = CsvSink()
    sink.row(columns)
    for (experiment, scan), new in found.scans.items():
        sink.row(["scan", project.name, experiment, scan, None, None, new.type, new.subject, new.session])
    for experiment, scan, number, location in found.rows:
        sink.row(["frame", project.name, experiment, scan, number, location, None, None, None])
    return sink.drain()


def sync(project: Project, source: Path | str, patterns: str | Iterable[str] | None = None,
         progress: importer.Progress = importer._no_progress, *, from_data_root: bool = False,
         actor: User | None = None) -> dict[str, Any]:
    """One cycle; returns the export path, its backup, the new rows file, what was added, what was
    skipped (path and reason each) and how many files the project has already. A relative ``source`` is
    taken from the working folder, as any command-line path, or with ``from_data_root`` (the API) from
    the data root. Nothing is written when it fails; what it adds is committed with its checksum job."""
    compiled = compile_patterns(patterns)
    roots = Roots.from_config()
    source = checked_root(source, project.id, from_data_root=from_data_root)
    progress(0.05, f"looking for new files under {source}")
    found = _find(project, source, compiled, roots)
    folder = sync_folder(project)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    current = folder / "export.csv"
    backup = folder / f"export-{stamp}.csv" if current.exists() else None
    rows_file = folder / f"new-{stamp}.csv" if found.rows else None
    report: dict[str, Any] = {
        "export": str(current), "backup": str(backup) if backup else None,
        "rows_file": str(rows_file) if rows_file else None, "added": [row[3] for row in found.rows],
        "skipped": found.skipped, "known": found.known, "summary": None}
    created_folder = not folder.exists()
    staged: list[Path] = []
    try:
        progress(0.3, "exporting the current state")
        staged.append(exporter.export_to_file("csv", [project.id], folder / f".export-{stamp}.partial"))
        if rows_file is not None:
            staged.append(folder / f".new-{stamp}.partial")
            staged[-1].write_text(_rows_text(project, found), encoding="utf-8")
            report["summary"] = importer.import_file(
                staged[-1], project=project, mode="merge", actor=None, filename=rows_file.name,
                progress=lambda fraction, message: progress(0.4 + 0.6 * fraction, message))
        if backup is not None:
            os.replace(current, backup)
        os.replace(staged[0], current)
        if rows_file is not None:
            os.replace(staged[1], rows_file)
    except BaseException:
        for path in staged:
            path.unlink(missing_ok=True)
        if created_folder and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
    if report["summary"] is not None:
        tasks.frames_added(report["summary"], actor)
    progress(1.0, f"added {len(found.rows)} file(s)" if found.rows else "nothing new")
    return report


class FolderSource:
    """A folder of image files and DICOM series folders, read with the patterns above and registered in
    place. Decisions go back as a CSV in the run's folder (a plain folder has nowhere else for them)."""

    kind: ClassVar[str] = "folder"

    def __init__(self, root: Path | str, *, patterns: str | Iterable[str] | None = None) -> None:
        self.root = Path(os.path.abspath(root))
        self.patterns = compile_patterns(patterns)
        self.url = str(self.root)

    def list(self, cursor: dict[str, Any] | None) -> Listing:
        found = Found()
        items = []
        roots = Roots.from_config()
        for item in _items(self.root, found, roots.data_root / UPLOADS):
            matched = _match(item, self.root, self.patterns, found)
            if matched is None:
                continue
            experiment, scan, _ = matched.slot
            items.append(SourceItem(
                key=item.relative, version=file_version(item.path), experiment=experiment, subject=matched.subject,
                session=matched.session, scan_name=scan, scan_type=matched.type, metadata={},
                local_path=item.stored))
        return Listing(items, {}, [(line["path"], line["reason"]) for line in found.skipped])

    def fetch(self, item: SourceItem, into: Path) -> Path:
        return item.local_path

    def push(self, decisions: list[Outgoing], run_folder: Path) -> Pushed:
        if not decisions:
            return Pushed(0)
        sink = CsvSink()
        sink.row(["path", "scan_id", "decision", "artifacts_present", "artifacts_absent", "note", "reviewer",
                  "created"])
        for out in decisions:
            sink.row([out.key, out.scan_id, out.decision,
                      ";".join(key for key, state in out.artifacts.items() if state == "present"),
                      ";".join(key for key, state in out.artifacts.items() if state == "absent"),
                      out.note, out.reviewer, out.created.isoformat()])
        run_folder.mkdir(parents=True, exist_ok=True)
        path = run_folder / "decisions.csv"
        partial = path.with_suffix(".partial")
        partial.write_text(sink.drain(), encoding="utf-8")
        os.replace(partial, path)
        return Pushed(len(decisions), file=path)
