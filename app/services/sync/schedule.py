"""Syncs in the worker: a "sync" job per run, started when asked or when a source's schedule is due.

The worker's periodic check (every minute, :func:`enqueue_due`) enqueues a job for each source whose
``every_minutes`` have passed since its last run, never a second one while the source's job is queued or
running.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Iterable

from sqlalchemy import or_, select, update

from app.db import Job, Project, SyncRun, SyncSource, User, boundary, db, utcnow
from app.services import jobs
from app.services.errors import Conflict, InvalidInput
from app.services.sync import engine, kind_of
from app.services.sync.base import has_userinfo

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
# What a sync job answers besides the run id and state (a SyncRun's counters).
RUN_COUNTS = ("added", "changed", "unchanged", "pushed", "skipped", "failed", "removed")


def _active_job(row: SyncSource) -> Job | None:
    job = db.session.get(Job, row.job_id) if row.job_id is not None else None
    return job if job is not None and job.state in ACTIVE else None


def _enqueue(row: SyncSource, actor: User | None) -> Job:
    """Queue a sync job for the source, claimed first in one conditional UPDATE (no job, or its job ended):
    of two requests at once only one queues a job, the other is refused (409)."""
    user = actor if actor is not None and actor.is_authenticated else None
    job = Job(kind="sync", params={"source_id": row.id, "actor_id": user.id if user is not None else None},
              project_id=row.project_id, created_by_id=user.id if user is not None else None)
    db.session.add(job)
    db.session.flush()
    ended = select(Job.id).where(Job.state.not_in(ACTIVE))
    claimed = db.session.execute(
        update(SyncSource)
        .where(SyncSource.id == row.id, or_(SyncSource.job_id.is_(None), SyncSource.job_id.in_(ended)))
        .values(job_id=job.id).execution_options(synchronize_session=False)).rowcount
    if claimed != 1:
        db.session.rollback()
        raise Conflict(f"a sync of {row.url} is already queued or running", field="source")
    boundary.commit()
    return jobs.submit(job)


def start_sync(project: Project, source: str, actor: User | None, *, every_minutes: Any = engine.UNCHANGED,
               patterns: Iterable[str] | None = None) -> Job:
    """Check the source at once (400 unreadable, refusing the credentials or unreachable, or a URL with a
    password, which the worker could not reuse; 409 another project's or already syncing), store its schedule,
    and sync it in the worker. A relative folder is taken from the data root."""
    if kind_of(source.strip()) == "dicomweb" and has_userinfo(source.strip()):
        raise InvalidInput("a DICOMweb URL names no user or password: put DICOMweb credentials in "
                           "QCLOOP_DICOMWEB_USERNAME/PASSWORD", field="source")
    _, row = engine.prepare(project, source, from_data_root=True, patterns=patterns, every_minutes=every_minutes,
                            reach=True)
    jobs.reap_abandoned()
    active = _active_job(row)
    if active is not None:
        raise Conflict(f"a sync of {row.url} is already {active.state} (job {active.id})", field="source")
    return _enqueue(row, actor)


def due(now: datetime | None = None) -> list[SyncSource]:
    """Scheduled sources whose interval has passed since their last run and that no job is syncing."""
    now = now or utcnow()
    found = []
    for row in db.session.scalars(select(SyncSource).where(SyncSource.every_minutes.is_not(None))
                                  .order_by(SyncSource.id)):
        if row.last_run_at is not None and row.last_run_at + timedelta(minutes=row.every_minutes) > now:
            continue
        if _active_job(row) is None:
            found.append(row)
    return found


def enqueue_due(now: datetime | None = None) -> list[Job]:
    """The worker's periodic check: a "sync" job for each due source."""
    jobs.reap_abandoned()
    queued = []
    for row in due(now):
        try:
            queued.append(_enqueue(row, None))
        except Conflict:  # a sync asked for meanwhile
            continue
    if queued:
        log.info("scheduled syncs queued: jobs %s", ", ".join(str(job.id) for job in queued))
    return queued


@jobs.handler("sync")
def _sync_job(params: dict[str, Any], context: jobs.JobContext) -> dict[str, Any]:
    row = db.session.get(SyncSource, params["source_id"])
    if row is None:
        raise Conflict(f"sync source {params['source_id']} no longer exists")
    actor = db.session.get(User, params["actor_id"]) if params.get("actor_id") else None
    run = engine.run_stored(row, actor, job_id=context.job_id, progress=context.progress)
    # the job's result: the run to read in the history, and its counts
    return {"run_id": run.id, "state": run.state, **{name: getattr(run, name) for name in RUN_COUNTS}}


@jobs.abandoned("sync")
def _sync_abandoned(job: Job, state: str, reason: str) -> None:
    """A sync whose worker stopped: its run ends failed with the reason (what it wrote was never committed)."""
    for run in db.session.scalars(select(SyncRun).where(SyncRun.job_id == job.id, SyncRun.state == "running")):
        run.state, run.finished_at, run.error = "failed", utcnow(), f"{state}: {reason}"
    boundary.commit()
