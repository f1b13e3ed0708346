"""Frames uploaded through the API or the review UI: stored under the data root, so every export
names a real file (MIQA could not export uploaded scans)."""
from __future__ import annotations

from typing import BinaryIO, Mapping

from app.db import Frame, Project, Scan, User, db
from app.services import access, frames, imaging, projects
from app.services.errors import Conflict, InvalidInput
from app.services.loaders import load
from app.services.transfer.model import parse_frame_number, parse_scan_type
from app.services.transfer.problems import Problems
from app.storage import Roots
from app.storage.identity import Stored, store, suffix_of

# Formats held in one file (an NRRD with a detached .nhdr header, or a DICOM series, is several).
UPLOADABLE = imaging.UPLOADABLE_SUFFIXES


def _target_scan(user: User, form: Mapping[str, str]) -> Scan:
    """The scan named by ``scan`` (id), or by ``project`` (id) + ``experiment`` + ``scan_name`` (created if new)."""
    raw_scan = (form.get("scan") or "").strip()
    if raw_scan:
        if not raw_scan.isdigit():
            raise InvalidInput("scan must be a scan id", field="scan")
        project_id = access.project_of("scan_id", int(raw_scan))
        access.require_project_role(user, project_id, "tier1")
        return db.session.get(Scan, int(raw_scan))
    raw_project = (form.get("project") or "").strip()
    if not raw_project.isdigit():
        raise InvalidInput("give scan (an id), or project (an id) with experiment and scan_name", field="scan")
    project_id = access.project_of("project_id", int(raw_project))
    access.require_project_role(user, project_id, "tier1")
    experiment_name, scan_name = (form.get("experiment") or "").strip(), (form.get("scan_name") or "").strip()
    for field, value in (("experiment", experiment_name), ("scan_name", scan_name)):
        if not value or len(value) > 255:
            raise InvalidInput(f"{field} must be 1-255 characters", field=field)
    problems = Problems()
    scan_type = parse_scan_type((form.get("scan_type") or "T1").strip(), "form", "scan_type", problems)
    problems.raise_if_any()
    experiment = projects.get_or_create_experiment(load(Project, project_id), experiment_name)
    return projects.get_or_create_scan(experiment, scan_name, scan_type=scan_type)


def upload_frame(user: User, stream: BinaryIO | None, filename: str, form: Mapping[str, str]) -> Frame:
    """Store an uploaded image as a frame of a scan (committed with the request); the champion then scores it."""
    if stream is None or not filename:
        raise InvalidInput("send the image as the multipart field 'file' (or MIQA's 'content')", field="file")
    if not filename.lower().endswith(UPLOADABLE):
        raise InvalidInput(f"{filename}: an upload is one file holding a whole volume: {imaging.UPLOADABLE}; "
                           f"{imaging.SEVERAL_FILES} are several files: import or sync them from their folder",
                           field="file")
    problems = Problems()
    number = parse_frame_number(form.get("frame_number") or "0", "form", "frame_number", problems)
    problems.raise_if_any()
    scan = _target_scan(user, form)
    if any(frame.frame_number == number for frame in scan.frames):
        raise Conflict(f"scan {scan.name!r} already has frame {number}", field="frame_number")
    stored = store(stream, scan.experiment.project_id, suffix_of(filename), Roots.from_config())
    try:
        frame = _register(scan, number, stored, filename)
        db.session.flush()
        frames.frames_added([scan.experiment.project_id], user)  # queues the scoring: commits the frame
    except Exception:
        db.session.rollback()
        if stored.created and not frames.location_in_use(stored.location):  # else another frame's file
            stored.path.unlink(missing_ok=True)
        raise
    return frame


def _register(scan: Scan, number: int, stored: Stored, filename: str) -> Frame:
    """The stored file as a frame once it holds a whole, readable 3-D volume; problems name the file as sent,
    not its content path."""
    try:
        if len(imaging.frame_files(stored.path)) > 1:
            raise InvalidInput(f"{filename}: its voxels are in another file; upload an NRRD holding its own data")
        return frames.register_frame(scan, number, stored.location)
    except InvalidInput as err:
        raise InvalidInput(err.message.replace(stored.path.name, filename), field="file") from err
