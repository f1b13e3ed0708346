"""Frames: registering a file as a frame of a scan, with its checksum and header facts."""
from __future__ import annotations

from pathlib import Path

from flask import current_app

from app.db import Frame, Scan
from app.services import imaging, projects
from app.storage import local_copy, resolve
from app.storage import checksum as file_checksum


def register_frame(scan: Scan, frame_number: int, location: str) -> Frame:
    """Add a frame after checking that its location is allowed and the file is a readable image."""
    resolved = resolve(location)
    path = local_copy(resolved, Path(current_app.config["CACHE_DIR"]))
    info = imaging.read_info(path)
    digest, size = file_checksum(resolved)
    return projects.add_frame(scan, frame_number, location, checksum=digest, size_bytes=size, shape=info.shape,
                              spacing=info.spacing, orientation=info.orientation)
