"""Checking the image files an import points at: allowed root, existence, readable header.

Local files are opened through app.services.imaging (NIfTI lazily, header only); S3 objects
are read with a ranged GET of their first bytes (NIfTI headers parsed, other formats only
found). Each distinct location is checked once per import.
"""
from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import nibabel as nib
from sqlalchemy import select

from app.db import Experiment, Frame, Scan, db
from app.services import imaging
from app.services.errors import InvalidInput
from app.storage import LocalLocation, Location, Roots, StorageError, _s3_client, resolve
from app.storage.scope import ProjectScope

HEADER_BYTES = 1 << 16


@dataclass(frozen=True, slots=True)
class Checked:
    """A location's verdict: its problem (None when fine) and the header facts when read."""

    problem: str | None
    info: imaging.ImageInfo | None = None


class FileChecker:
    def __init__(self, roots: Roots, mode: str) -> None:
        if mode not in ("error", "warn", "off"):
            raise InvalidInput("QCLOOP_IMPORT_MISSING_FILES must be error, warn or off", field="missing_files")
        self.roots, self.mode = roots, mode
        self._resolved: dict[str, Location | str] = {}
        self._checked: dict[str, Checked] = {}
        self._scopes: dict[int | None, ProjectScope] = {}
        self._owned: dict[int, set[str]] = {}

    def resolve(self, location: str, project_id: int | None = None) -> Location | str:
        """The resolved location, or the reason it is refused (outside the allowed roots or the project's
        roots, malformed); ``project_id`` None is a project the import creates."""
        found = self._resolved.get(location)
        if found is None:
            try:
                found = resolve(location, self.roots)
            except StorageError as err:
                found = str(err)
            self._resolved[location] = found
        if isinstance(found, str):
            return found
        scope = self._scopes.get(project_id)
        if scope is None:
            scope = self._scopes[project_id] = ProjectScope.from_config(project_id, self.roots)
        try:
            scope.check(found)
        except StorageError as err:
            return found if location in self._owned_by(project_id) else str(err)
        return found

    def _owned_by(self, project_id: int | None) -> set[str]:
        """The locations the project's frames name already."""
        if project_id is None:
            return set()
        if project_id not in self._owned:
            self._owned[project_id] = set(db.session.scalars(
                select(Frame.file_location).join(Scan, Scan.id == Frame.scan_id)
                .join(Experiment, Experiment.id == Scan.experiment_id).where(Experiment.project_id == project_id)))
        return self._owned[project_id]

    def check(self, resolved: Location) -> Checked:
        if self.mode == "off":
            return Checked(None)
        key = str(resolved)
        found = self._checked.get(key)
        if found is None:
            found = self._checked[key] = self._probe(resolved)
        return found

    def _probe(self, resolved: Location) -> Checked:
        if isinstance(resolved, LocalLocation):
            if not resolved.path.exists():  # a file, or a folder holding a DICOM series
                return Checked(f"file {resolved.path} does not exist")
            try:
                return Checked(None, imaging.read_info(resolved.path))
            except InvalidInput as err:
                return Checked(err.message)
        return self._probe_s3(resolved)

    def _probe_s3(self, resolved) -> Checked:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = _s3_client(self.roots).get_object(Bucket=resolved.bucket, Key=resolved.key,
                                                      Range=f"bytes=0-{HEADER_BYTES - 1}")["Body"].read()
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return Checked(f"{resolved} does not exist")
            return Checked(f"cannot read {resolved}: {code or err}")
        except BotoCoreError as err:
            return Checked(f"cannot read {resolved}: {err}")
        name = resolved.key.lower()
        if name.endswith(imaging.NRRD_SUFFIXES + imaging.DICOM_SUFFIXES):
            return Checked(None)  # it exists; only NIfTI headers are read from S3 here
        if not name.endswith(imaging.NIFTI_SUFFIXES):
            return Checked(f"{resolved.key}: unsupported image format (expected {imaging.SUPPORTED})")
        try:
            if name.endswith(".gz"):
                body = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body)
            header_class = nib.Nifti2Header if body[:4] == (540).to_bytes(4, "little") else nib.Nifti1Header
            header = header_class.from_fileobj(io.BytesIO(body))
            shape = [int(n) for n in header.get_data_shape()]
            spacing = [round(float(z), 6) for z in header.get_zooms()[: len(shape)]]
            orientation = "".join(nib.aff2axcodes(header.get_best_affine()))
        except Exception as err:  # noqa: BLE001 - nibabel and zlib raise many types for bad bytes
            return Checked(f"{resolved.key}: not a readable NIfTI image ({err})")
        try:
            imaging.check_volume(resolved.key, shape)
        except InvalidInput as err:
            return Checked(err.message)
        return Checked(None, imaging.ImageInfo(shape, spacing, orientation))
