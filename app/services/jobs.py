"""Background jobs: enqueue a kind of work, run it in the worker, report progress and errors.

Handlers register with ``@handler("kind")`` and receive the job's params and a
:class:`JobContext`; they commit their own work. Progress is written on its own
connection so the UI sees it while the work's transaction is still open.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from flask import current_app
from sqlalchemy import create_engine, select, update
from sqlalchemy.exc import OperationalError

from app.db import Job, User, db, utcnow
from app.services.errors import Conflict, NotFound, ServiceError

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], "JobContext"], dict[str, Any] | None]
_HANDLERS: dict[str, Handler] = {}


class JobCancelled(Exception):
    """Raised inside a handler when its job was cancelled."""


def handler(kind: str) -> Callable[[Handler], Handler]:
    def register(function: Handler) -> Handler:
        _HANDLERS[kind] = function
        return function

    return register


def _side_engine():
    """An engine for progress writes that never waits long on a locked SQLite file."""
    engine = current_app.extensions.get("qcloop.side_engine")
    if engine is None:
        url = db.engine.url
        engine = create_engine(url, connect_args={"timeout": 0.5}) if url.get_backend_name() == "sqlite" else db.engine
        current_app.extensions["qcloop.side_engine"] = engine
    return engine


class JobContext:
    def __init__(self, job_id: int) -> None:
        self.job_id = job_id

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress (0..1) and stop here if the job was cancelled."""
        fraction = min(1.0, max(0.0, float(fraction)))
        try:
            with _side_engine().begin() as connection:
                connection.execute(update(Job).where(Job.id == self.job_id).values(progress=fraction, message=message))
                cancelled = connection.scalar(select(Job.cancel_requested).where(Job.id == self.job_id))
        except OperationalError:
            log.debug("progress of job %s not written: database busy", self.job_id)
            return
        if cancelled:
            raise JobCancelled()


def enqueue(kind: str, params: dict[str, Any], *, project_id: int | None = None, user: User | None = None) -> Job:
    """Store a job row and queue it; the row is committed first so the worker can read it."""
    if kind not in _HANDLERS:
        raise ValueError(f"no handler for job kind {kind!r}")
    job = Job(kind=kind, params=params, project_id=project_id,
              created_by_id=user.id if user is not None and user.is_authenticated else None)
    db.session.add(job)
    db.session.commit()
    current_app.extensions["huey.execute_job"](job.id)
    db.session.refresh(job)
    return job


def get_job(job_id: int) -> Job:
    job = db.session.get(Job, job_id)
    if job is None:
        raise NotFound("Not found.")
    return job


def cancel(job: Job) -> Job:
    if job.state in ("succeeded", "failed", "cancelled"):
        raise Conflict(f"job {job.id} has already ended ({job.state})")
    job.cancel_requested = True
    if job.state == "queued":
        job.state, job.finished_at = "cancelled", utcnow()
    db.session.commit()
    return job


def _finish(job_id: int, state: str, **values: Any) -> None:
    db.session.rollback()
    db.session.execute(update(Job).where(Job.id == job_id).values(state=state, finished_at=utcnow(), **values))
    db.session.commit()


def run_job(job_id: int) -> None:
    """Run one job in the worker; every outcome ends in a final state with its reason."""
    job = db.session.get(Job, job_id)
    if job is None or job.state != "queued":
        return
    job.state, job.started_at = "running", utcnow()
    db.session.commit()
    try:
        result = _HANDLERS[job.kind](dict(job.params), JobContext(job_id))
    except JobCancelled:
        _finish(job_id, "cancelled", message="cancelled")
    except ServiceError as err:
        _finish(job_id, "failed", error=err.message)
    except Exception as err:  # noqa: BLE001 - the job row must say why it failed
        log.exception("job %s (%s) failed", job_id, job.kind)
        _finish(job_id, "failed", error=f"{type(err).__name__}: {err}")
    else:
        _finish(job_id, "succeeded", progress=1.0, result=result or {})
