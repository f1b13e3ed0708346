"""A frame's original files for download: the file itself, or a zip of every file of a frame made of
several (a detached NRRD's header and data file, a DICOM series), written while it is sent.

The zip stores its members as they are (no compression): image files are often compressed already,
and a download should cost the server reading the files, not deflating them. Members sit in one folder
named after the frame's file, with the paths they have beside each other, so a detached header still
finds its data file once unpacked.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from app.db import Frame
from app.services import imaging, volumes
from app.services.errors import InvalidInput

CHUNK = 1 << 20


@dataclass(frozen=True)
class Download:
    """What ``/download`` sends: one file as it is, or the members of a zip (file, name in the zip)."""

    name: str
    members: tuple[tuple[Path, str], ...]
    zipped: bool
    etag: str | None = None


def of_frame(frame: Frame) -> Download:
    """The frame's original files: FrameFileMissing when gone, FrameUnreadable when a companion file is
    missing or its folder holds several DICOM series."""
    path = volumes.source_path(frame)
    try:
        files = imaging.frame_files(path)
    except InvalidInput as err:
        raise volumes.FrameUnreadable(f"frame {frame.id}: {err.message}") from err
    if files == [path]:
        return Download(path.name, ((path, path.name),), zipped=False, etag=frame.checksum)
    base = path if path.is_dir() else path.parent
    stem = base.name if imaging.image_format(path) == "dicom" else path.stem
    return Download(f"{stem}.zip", tuple((item, f"{stem}/{item.relative_to(base).as_posix()}") for item in files),
                    zipped=True)


class _Sink:
    """An unseekable stream collecting what ``zipfile`` writes, handed on in pieces as it comes."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: pieces leave through :meth:`take`."""

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def zip_stream(members: tuple[tuple[Path, str], ...]) -> Iterator[bytes]:
    """A zip of the members, yielded a megabyte of file at a time (never the whole archive in memory)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        for path, name in members:
            info = zipfile.ZipInfo.from_file(path, name)
            with open(path, "rb") as source, archive.open(info, "w") as target:
                while chunk := source.read(CHUNK):
                    target.write(chunk)
                    if data := sink.take():
                        yield data
    yield sink.take()
