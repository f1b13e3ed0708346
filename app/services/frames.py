"""Frames: registering a file as a frame of a scan, and each frame's content identity.

A frame's SHA-256 checksum names its content (caches and training sets are keyed by it), so
it is computed wherever a frame is created or its file changes: at once for an upload (the
file is already here), in a "frames.checksum" job for imports and syncs (their files may be
many and large).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from flask import current_app
from sqlalchemy import exists, select, update

from app.db import Experiment, Frame, Job, Scan, User, boundary, db
from app.services import evaluations, imaging, jobs, projects
from app.storage import Roots, local_copy, resolve
from app.storage import checksum as file_checksum

log = logging.getLogger(__name__)

BATCH = 100
MAX_PROBLEMS = 20

Progress = Callable[[float, str], None]


def register_frame(scan: Scan, frame_number: int, location: str) -> Frame:
    """Add a frame after checking that its location is allowed and the file is a readable image."""
    resolved = resolve(location)
    path = local_copy(resolved, Path(current_app.config["CACHE_DIR"]))
    info = imaging.read_info(path)
    digest, size = file_checksum(resolved)
    return projects.add_frame(scan, frame_number, location, checksum=digest, size_bytes=size, shape=info.shape,
                              spacing=info.spacing, orientation=info.orientation)


def location_in_use(location: str) -> bool:
    """Whether any frame names this location (a content-addressed file may serve several frames)."""
    return bool(db.session.scalar(select(exists().where(Frame.file_location == location))))


@dataclass
class FillReport:
    """What a checksum run did: frames filled, and frames left without one (with the first reasons)."""

    filled: int = 0
    unreadable: int = 0
    problems: list[str] = field(default_factory=list)


def _missing(project_id: int | None, frame_ids: list[int] | None) -> list[tuple[int, str]]:
    """(id, location) of the frames without a checksum, in the project and/or among the ids."""
    query = select(Frame.id, Frame.file_location).where(Frame.checksum.is_(None)).order_by(Frame.id)
    if project_id is not None:
        query = (query.join(Scan, Scan.id == Frame.scan_id).join(Experiment, Experiment.id == Scan.experiment_id)
                 .where(Experiment.project_id == project_id))
    if frame_ids is None:
        return [tuple(row) for row in db.session.execute(query)]
    found: list[tuple[int, str]] = []
    for start in range(0, len(frame_ids), 500):
        found.extend(tuple(row) for row in db.session.execute(query.where(Frame.id.in_(frame_ids[start:start + 500]))))
    return sorted(found)


def _hash(frame_id: int, location: str, roots: Roots, report: FillReport) -> tuple[str, int] | None:
    """The file's SHA-256 and size, streamed; None (logged and counted) when it cannot be read."""
    try:
        return file_checksum(resolve(location, roots), roots)
    except Exception as err:  # noqa: BLE001 - local and S3 reads fail in many ways; the rest still count
        log.warning("frame %s (%s): no checksum: %s", frame_id, location, err)
        report.unreadable += 1
        if len(report.problems) < MAX_PROBLEMS:
            report.problems.append(f"frame {frame_id} ({location}): {err}")
        return None


def fill_checksums(project_id: int | None = None, frame_ids: list[int] | None = None,
                   progress: Progress | None = None) -> FillReport:
    """Compute SHA-256 and size for frames without a checksum, committing a batch at a time.

    A batch is hashed before it is written, so no write transaction stays open while files are
    read. An unreadable file keeps NULL for a later run; a frame whose location changed
    meanwhile is left to the run its change queued.
    """
    rows = _missing(project_id, frame_ids)
    boundary.commit()
    roots, report, table = Roots.from_config(), FillReport(), Frame.__table__
    for start in range(0, len(rows), BATCH):
        batch = [(frame_id, location, _hash(frame_id, location, roots, report))
                 for frame_id, location in rows[start:start + BATCH]]
        for frame_id, location, found in batch:
            if found is not None:
                report.filled += db.session.execute(
                    update(table).where(table.c.id == frame_id, table.c.file_location == location,
                                        table.c.checksum.is_(None))
                    .values(checksum=found[0], size_bytes=found[1])).rowcount
        boundary.commit()
        done = start + len(batch)
        if progress is not None:
            progress(done / len(rows), f"checksums {done}/{len(rows)}")
    if rows:
        log.info("checksums: %s filled, %s unreadable", report.filled, report.unreadable)
    return report


@jobs.handler("frames.checksum")
def _checksum_job(params: dict[str, Any], context: jobs.JobContext) -> dict[str, Any]:
    report = asdict(fill_checksums(project_id=params.get("project_id"), frame_ids=params.get("frame_ids"),
                                   progress=context.progress))
    if params.get("project_id") is not None:  # the new frames have their identity: the champion scores them
        evaluations.score_unscored(params["project_id"])
    return report


def frames_added(project_ids: Iterable[int], user: User | None = None) -> list[Job]:
    """After frames were added or moved (committed): a "frames.checksum" job for each project with frames
    lacking a checksum (it then has the champion score them), else straight an evaluation job.

    Enqueueing commits the session: call it once the frames' own changes are meant to stay.
    """
    queued = []
    for project_id in sorted(set(project_ids)):
        lacking = db.session.scalar(select(exists().where(
            Frame.checksum.is_(None), Frame.scan_id == Scan.id, Scan.experiment_id == Experiment.id,
            Experiment.project_id == project_id)))
        job = jobs.enqueue("frames.checksum", {"project_id": project_id}, project_id=project_id, user=user) \
            if lacking else evaluations.score_unscored(project_id, user)
        if job is not None:
            queued.append(job)
    return queued
