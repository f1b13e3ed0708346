"""A BIDS dataset on disk as a sync source (read with pybids, registered in place).

Subject and session make the experiment (``sub-01_ses-1``, or ``sub-01`` without sessions); each NIfTI
image is a scan named by its entities after subject and session (``acq-fast_run-1_T1w``, ``task-rest_bold``)
and typed by its suffix; its sidecar JSON, with BIDS inheritance as pybids resolves it, is the scan's
metadata. Decisions go back as a BIDS derivatives dataset, ``derivatives/qcloop/``: one JSON per image
mirroring the image's path (``sub-01/ses-1/anat/sub-01_ses-1_T1w_qc.json``) and one ``ratings.tsv`` of
every rating, in the spirit of MRIQC's rating files.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import sqlite3
import threading
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.services.sync.base import Listing, Outgoing, Pushed, SourceError, SourceItem
from app.services.sync.folder import file_version, scan_type

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".nii", ".nii.gz")
DERIVATIVE = "qcloop"
RAW = "raw"  # the raw dataset's name in the derivatives' BIDS URIs (bids:raw:sub-01/anat/...)
RATINGS = "ratings.tsv"
RATING_COLUMNS = ("bids_name", "rating", "rating_label", "rating_code", "artifacts_present", "artifacts_absent",
                  "note", "reviewer", "created", "scan_id")
# Folders BIDS keeps beside the raw data; never listed.
NOT_RAW = ("derivatives", "sourcedata", "code", "stimuli", "models")


# pybids indexes into its own SQLite database, inserting metadata tags before the entities they name: with
# the foreign keys qcloop turns on for every SQLite connection (app._sqlite_pragmas) it cannot index. The
# connections pybids opens while a layout is built get them turned off again.
_building = threading.local()


@event.listens_for(Engine, "connect")
def _pybids_without_foreign_keys(dbapi_connection, connection_record) -> None:
    if getattr(_building, "layout", False) and isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("PRAGMA foreign_keys=OFF")


def read_layout(root: Path, **options: Any):
    """pybids' ``BIDSLayout(root, **options)``, built in this process beside qcloop's database."""
    from bids import BIDSLayout

    _building.layout = True
    try:
        return BIDSLayout(root, **options)
    finally:
        _building.layout = False


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _qcloop_version() -> str:
    try:
        return package_metadata.version("qcloop")
    except package_metadata.PackageNotFoundError:
        return "unknown"


class BidsSource:
    """A BIDS dataset: refused (400) when the folder has no ``dataset_description.json`` or pybids cannot
    read it."""

    kind: ClassVar[str] = "bids"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(os.path.abspath(root))
        self.url = f"bids:{self.root}"
        self.check()

    def check(self) -> None:
        """The dataset is still there: its folder holds ``dataset_description.json``."""
        if not (self.root / "dataset_description.json").is_file():
            raise SourceError(self.url, "not a BIDS dataset: it has no dataset_description.json")

    def _layout(self):
        try:
            return read_layout(self.root)
        except Exception as err:  # noqa: BLE001 - pybids refuses a dataset in many ways; each is the reason
            raise SourceError(self.url, f"not a BIDS dataset pybids reads: {err}") from err

    def list(self, cursor: dict[str, Any] | None) -> Listing:
        layout = self._layout()
        items, skipped, taken = [], [], set()
        for image in layout.get(extension=list(IMAGE_EXTENSIONS)):
            path = Path(image.path)
            key = path.relative_to(self.root).as_posix()
            taken.add(key)
            entities = image.get_entities()
            subject, session = entities.get("subject"), entities.get("session")
            if subject is None:
                skipped.append((key, "no subject entity (sub-<label>)"))
                continue
            experiment = f"sub-{subject}" + (f"_ses-{session}" if session else "")
            name = path.name.removesuffix(entities.get("extension", ""))
            for prefix in (f"sub-{subject}_", f"ses-{session}_" if session else None):
                if prefix:
                    name = name.removeprefix(prefix)
            try:
                sidecar = image.get_metadata()
            except Exception as err:  # noqa: BLE001 - a malformed sidecar: the image is still reviewable
                skipped.append((key, f"sidecar JSON unreadable: {err}"))
                continue
            suffix = entities.get("suffix")
            metadata = json.loads(json.dumps(sidecar, default=str))
            # A sidecar edited alone changes the item too (its scan's metadata is then updated).
            digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:16]
            items.append(SourceItem(
                key=key, version=f"{file_version(path)}:{digest}", experiment=experiment, subject=subject,
                session=session, scan_name=name, scan_type=scan_type(suffix) if suffix else None,
                metadata=metadata, local_path=path))
        skipped.extend((key, "not a valid BIDS file name (pybids left it out)") for key in self._images() - taken)
        return Listing(items, {}, sorted(skipped))

    def _images(self) -> set[str]:
        """Every NIfTI file of the raw dataset, as pybids would index it with no naming rules."""
        found = set()
        for folder, folders, files in os.walk(self.root):
            here = Path(folder)
            folders[:] = [name for name in folders if not name.startswith(".")
                          and not (here == self.root and name in NOT_RAW)]
            found.update((here / name).relative_to(self.root).as_posix() for name in files
                         if name.endswith(IMAGE_EXTENSIONS) and not name.startswith("."))
        return found

    def fetch(self, item: SourceItem, into: Path) -> Path:
        return item.local_path

    def forget(self, cursor: dict[str, Any], key: str) -> None:
        """Nothing to do: every run lists the whole dataset, so an image that failed is tried again."""

    def derivatives(self) -> Path:
        return self.root / "derivatives" / DERIVATIVE

    def push(self, decisions: list[Outgoing], run_folder: Path) -> Pushed:
        if not decisions:
            return Pushed(0)
        folder = self.derivatives()
        # Each rating names its image by the BIDS URI bids:raw:<path>; DatasetLinks, which BIDS requires where
        # such URIs are used, resolves "raw" to the dataset two folders up (relative to this dataset's root).
        description = {"Name": "qcloop quality ratings", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
                       "GeneratedBy": [{"Name": DERIVATIVE, "Version": _qcloop_version(),
                                        "Description": "reviewers' quality decisions"}],
                       "SourceDatasets": [{"URL": f"bids:{RAW}:"}], "DatasetLinks": {RAW: "../../"}}
        try:
            _write_atomic(folder / "dataset_description.json", json.dumps(description, indent=2) + "\n")
        except OSError as err:
            reason = f"{folder} is not writable: {err}"
            return Pushed(0, [(out.key, reason) for out in decisions])
        rows = self._ratings(folder / RATINGS)
        pushed, failed = 0, []
        for out in decisions:
            row = {"bids_name": out.key, "rating": out.decision, "rating_label": out.label, "rating_code": out.code,
                   "artifacts_present": ",".join(k for k, state in out.artifacts.items() if state == "present"),
                   "artifacts_absent": ",".join(k for k, state in out.artifacts.items() if state == "absent"),
                   "note": out.note, "reviewer": out.reviewer, "created": out.created.isoformat(),
                   "scan_id": str(out.scan_id)}
            record = {"Sources": [f"bids:{RAW}:{out.key}"], "Rating": out.decision, "RatingLabel": out.label,
                      "RatingCode": out.code, "Artifacts": out.artifacts,
                      "Note": out.note, "Reviewer": out.reviewer, "Created": out.created.isoformat(),
                      "QcloopScanId": out.scan_id}
            try:
                _write_atomic(folder / self._rating_path(out.key), json.dumps(record, indent=2) + "\n")
            except OSError as err:
                failed.append((out.key, f"rating not written: {err}"))
                continue
            rows[out.key] = row
            pushed += 1
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, RATING_COLUMNS, delimiter="\t", lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows[key] for key in sorted(rows))
        try:
            _write_atomic(folder / RATINGS, buffer.getvalue())
        except OSError as err:
            return Pushed(0, [(out.key, f"{RATINGS} not written: {err}") for out in decisions])
        return Pushed(pushed, failed, folder / RATINGS)

    @staticmethod
    def _rating_path(key: str) -> str:
        """The derivative JSON of an image: its path with ``_qc.json`` for the extension."""
        name = key
        for extension in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
            if name.endswith(extension):
                name = name.removesuffix(extension)
                break
        return f"{name}_qc.json"

    @staticmethod
    def _ratings(path: Path) -> dict[str, dict[str, str]]:
        """The ratings already pushed, by image (a missing or unreadable file starts afresh)."""
        try:
            with path.open(encoding="utf-8", newline="") as file:
                return {row["bids_name"]: row for row in csv.DictReader(file, delimiter="\t") if row.get("bids_name")}
        except (OSError, KeyError, csv.Error):
            return {}
