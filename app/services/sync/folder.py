"""A folder of image files as a sync source, registered in place (the engine, :mod:`.engine`, runs the
cycle: export, add what is new or changed, push decisions back, record the run).

Paths relative to the source are matched against patterns with named groups ``experiment``, ``scan``,
``type``, ``frame``, ``subject`` and ``session``; the first pattern that matches decides. Without
``experiment`` a file's experiment is ``<subject>_<session>`` (what it has of them), else the source
folder's name. A folder holding DICOM files is one frame (its series), matched as its path with a
trailing ``/``. Every file not taken is reported with the reason; the uploads folder is never walked.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

from flask import current_app

from app.db import Project
from app.services import imaging
from app.services.errors import InvalidInput
from app.services.sync.base import Listing, Outgoing, Pushed, SourceError, SourceItem
from app.services.transfer.csvfile import CsvSink
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
class Found:
    """What a walk of the folder did not take, with the reasons."""

    skipped: list[dict[str, str]] = field(default_factory=list)

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
    """Where the project's sync exports and pushed decisions are kept: by its id, which no rename or look-alike
    name shares."""
    return Path(current_app.config["INSTANCE_PATH"]) / "sync" / str(project.id)


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


class FolderSource:
    """A folder of image files and DICOM series folders, read with the patterns above and registered in
    place. Decisions go back as a CSV in the run's folder (a plain folder has nowhere else for them)."""

    kind: ClassVar[str] = "folder"

    def __init__(self, root: Path | str, *, patterns: str | Iterable[str] | None = None) -> None:
        self.root = Path(os.path.abspath(root))
        self.patterns = compile_patterns(patterns)
        self.url = str(self.root)

    def check(self) -> None:
        """The folder is still there."""
        if not self.root.is_dir():
            raise SourceError(self.url, "not a folder (any more)")

    def list(self, cursor: dict[str, Any] | None) -> Listing:
        found = Found()
        items = []
        roots = Roots.from_config()
        for item in _items(self.root, found, roots.data_root / UPLOADS):
            matched = _match(item, self.root, self.patterns, found)
            if matched is None:
                continue
            experiment, scan, frame = matched.slot
            items.append(SourceItem(
                key=item.relative, version=file_version(item.path), experiment=experiment, subject=matched.subject,
                session=matched.session, scan_name=scan, scan_type=matched.type, metadata={},
                local_path=item.stored, frame=frame))
        return Listing(items, {}, [(line["path"], line["reason"]) for line in found.skipped])

    def fetch(self, item: SourceItem, into: Path) -> Path:
        """The file registered in place; a DICOM folder must hold one series (its first file names only its
        own series, so the folder is read whole here: 400 naming the series otherwise)."""
        if item.key.endswith("/"):
            imaging.frame_files(item.local_path.parent)
        return item.local_path

    def forget(self, cursor: dict[str, Any], key: str) -> None:
        """Nothing to do: every run lists the whole folder, so an item that failed is tried again."""

    def push(self, decisions: list[Outgoing], run_folder: Path) -> Pushed:
        if not decisions:
            return Pushed(0)
        sink = CsvSink()
        sink.row(["path", "scan_id", "decision", "label", "code", "artifacts_present", "artifacts_absent", "note",
                  "reviewer", "created"])
        for out in decisions:
            sink.row([out.key, out.scan_id, out.decision, out.label, out.code,
                      ";".join(key for key, state in out.artifacts.items() if state == "present"),
                      ";".join(key for key, state in out.artifacts.items() if state == "absent"),
                      out.note, out.reviewer, out.created.isoformat()])
        run_folder.mkdir(parents=True, exist_ok=True)
        path = run_folder / "decisions.csv"
        partial = path.with_suffix(".partial")
        partial.write_text(sink.drain(), encoding="utf-8")
        os.replace(partial, path)
        return Pushed(len(decisions), file=path)
