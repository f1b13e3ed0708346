"""Files qcloop writes itself, stored by content: ``uploads/<project id>/<sha[:2]>/<sha><suffix>``.

A path derived from the bytes cannot collide with another frame's file: equal paths hold equal
bytes. Writes go to a temporary file that is linked into place (``os.link`` refuses to replace an
existing file), so nothing ever overwrites or half-writes a file another frame reads.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.storage import Roots, iter_chunks

UPLOADS = "uploads"


@dataclass(frozen=True)
class Stored:
    """Where content landed, its identity, and whether this call created the file (only then may it remove it)."""

    location: str
    path: Path
    checksum: str
    size: int
    created: bool


def uploads_folder(project_id: int) -> str:
    """The folder (relative to the data root) that holds a project's uploaded files."""
    return f"{UPLOADS}/{project_id}"


def content_location(project_id: int, checksum: str, suffix: str) -> str:
    """The location (relative to the data root) of a project's file with this SHA-256."""
    return f"{uploads_folder(project_id)}/{checksum[:2]}/{checksum}{suffix}"


def suffix_of(name: str) -> str:
    """A file name's format suffix: ``.nii.gz`` (the last two when compressed), ``.nii``, ``.nrrd``."""
    suffixes = Path(name).suffixes
    return "".join(suffixes[-2:] if suffixes and suffixes[-1].lower() == ".gz" else suffixes[-1:]).lower()


def _link_into_place(temporary: Path, target: Path) -> bool:
    """Give the temporary file its final name unless that name exists already; True when it was created."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(temporary, target)
    except FileExistsError:
        return False
    return True


def store(stream: BinaryIO, project_id: int, suffix: str, roots: Roots) -> Stored:
    """Write a stream under the project's uploads folder at the path its SHA-256 names."""
    folder = roots.data_root / uploads_folder(project_id)
    folder.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".incoming-", delete=False) as handle:
        temporary = Path(handle.name)
        try:
            for chunk in iter_chunks(stream):
                digest.update(chunk)
                size += len(chunk)
                handle.write(chunk)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    try:
        location = content_location(project_id, digest.hexdigest(), suffix)
        created = _link_into_place(temporary, roots.data_root / location)
    finally:
        temporary.unlink(missing_ok=True)
    return Stored(location, roots.data_root / location, digest.hexdigest(), size, created)

