"""Background jobs: enqueue a kind of work, run it in the worker, report progress and errors.

Handlers register with ``@handler("kind")`` and receive the job's params and a
:class:`JobContext`; they commit their own work. Progress and heartbeats are written on
their own connection so the UI sees them while the work's transaction is still open.

A running job holds a lease: its process writes ``heartbeat_at`` every quarter of
``JOB_LEASE_S``. A job whose heartbeat is older than the lease lost its process (killed,
machine gone) and is ended failed with that reason, or cancelled when cancel was asked;
``@abandoned("kind")`` hooks then end what the job left running (its training run, its
pending rows, its MLflow run). Workers check leases on start and periodically; reading or
cancelling jobs checks them too, so a dead worker never keeps a job running.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime, timedelta
from typing import Any, Callable

from flask import Flask, current_app
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import OperationalError

from app.db import Job, User, boundary, db, utcnow
from app.services.errors import Conflict, ServiceError
from app.services.loaders import load

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], "JobContext"], dict[str, Any] | None]
Abandoned = Callable[[Job, str, str], None]
_HANDLERS: dict[str, Handler] = {}
_ABANDONED: dict[str, Abandoned] = {}
ENDED = ("succeeded", "failed", "cancelled")


class JobCancelled(Exception):
    """Raised inside a handler when its job was cancelled."""


def handler(kind: str) -> Callable[[Handler], Handler]:
    def register(function: Handler) -> Handler:
        _HANDLERS[kind] = function
        return function

    return register


def abandoned(kind: str) -> Callable[[Abandoned], Abandoned]:
    """Register what ends a job's own records when the job ended without its handler
    (lost worker, Ctrl-C): called with the job, its final state and the reason."""
    def register(function: Abandoned) -> Abandoned:
        _ABANDONED[kind] = function
        return function

    return register


class JobContext:
    def __init__(self, job_id: int) -> None:
        self.job_id = job_id

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress (0..1) and stop here if the job was cancelled or ended meanwhile."""
        fraction = min(1.0, max(0.0, float(fraction)))
        try:
            with boundary.side_engine().begin() as connection:
                connection.execute(update(Job).where(Job.id == self.job_id).values(progress=fraction, message=message))
                cancelled, state = connection.execute(
                    select(Job.cancel_requested, Job.state).where(Job.id == self.job_id)).one()
        except OperationalError:
            log.debug("progress of job %s not written: database busy", self.job_id)
            return
        if cancelled or state != "running":
            raise JobCancelled()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _lease() -> timedelta:
    return timedelta(seconds=current_app.config["JOB_LEASE_S"])


class _Heartbeat(threading.Thread):
    """Writes the job's heartbeat every quarter lease until stopped; retries soon when the database is busy."""

    def __init__(self, job_id: int, engine, lease: timedelta) -> None:
        super().__init__(daemon=True, name=f"qcloop-heartbeat-{job_id}")
        self.job_id, self.engine, self.interval = job_id, engine, max(0.2, lease.total_seconds() / 4)
        self.stopped = threading.Event()

    def run(self) -> None:
        wait = self.interval
        while not self.stopped.wait(wait):
            try:
                with self.engine.begin() as connection:
                    connection.execute(update(Job).where(Job.id == self.job_id, Job.state == "running")
                                       .values(heartbeat_at=utcnow()))
                wait = self.interval
            except OperationalError:
                log.debug("heartbeat of job %s not written: database busy", self.job_id)
                wait = 0.25


def _stale(cutoff: datetime):
    return and_(Job.state == "running", or_(Job.heartbeat_at < cutoff,
                                            and_(Job.heartbeat_at.is_(None), Job.started_at < cutoff)))


def _lost_reason(job: Job) -> str:
    beat = job.heartbeat_at or job.started_at
    seen = f"last heartbeat {beat:%Y-%m-%d %H:%M:%S} UTC" if beat else "no heartbeat"
    return f"the worker running it stopped ({seen}{f' from {job.worker}' if job.worker else ''})"


def end_abandoned(job: Job, state: str, reason: str, *, only_if=None) -> bool:
    """End a job its handler no longer runs, then its kind's records; False when it had ended already
    (or no longer matches ``only_if``, e.g. its worker beat again meanwhile)."""
    condition = Job.state.in_(("queued", "running")) if only_if is None else only_if
    values = {"error": reason} if state == "failed" else {"message": f"cancelled: {reason}"}
    ended = db.session.execute(update(Job).where(Job.id == job.id, condition)
                               .values(state=state, finished_at=utcnow(), **values)).rowcount
    boundary.commit()
    if not ended:
        return False
    log.warning("job %s (%s) %s: %s", job.id, job.kind, state, reason)
    hook = _ABANDONED.get(job.kind)
    if hook is not None:
        try:
            hook(job, state, reason)
        except Exception:  # noqa: BLE001 - the job has ended; say what its records still show
            db.session.rollback()
            log.exception("records of job %s (%s) could not be ended", job.id, job.kind)
    return True


def reap_abandoned() -> int:
    """End every running job whose lease expired; returns how many. A busy database (SQLite locked by a
    long write) postpones this to the next check rather than failing the caller."""
    cutoff = utcnow() - _lease()
    ended = 0
    try:
        for job in list(db.session.scalars(select(Job).where(_stale(cutoff)))):
            state = "cancelled" if job.cancel_requested else "failed"
            ended += end_abandoned(job, state, _lost_reason(job), only_if=_stale(cutoff))
    except OperationalError:
        db.session.rollback()
        log.debug("lease check postponed: database busy")
    return ended


def watch_leases(app: Flask) -> None:
    """The worker's lease check (a daemon thread): at once, then every half lease."""
    with app.app_context():
        interval = max(0.5, _lease().total_seconds() / 2)
        while True:
            reap_abandoned()
            db.session.remove()
            time.sleep(interval)


def enqueue(kind: str, params: dict[str, Any], *, project_id: int | None = None, user: User | None = None) -> Job:
    """Store a job row and queue it; the row is committed first so the worker can read it."""
    if kind not in _HANDLERS:
        raise ValueError(f"no handler for job kind {kind!r}")
    job = Job(kind=kind, params=params, project_id=project_id,
              created_by_id=user.id if user is not None and user.is_authenticated else None)
    db.session.add(job)
    boundary.commit()
    return submit(job)


def submit(job: Job) -> Job:
    """Queue a job row already committed (a caller that claims something for the job in the same commit)."""
    current_app.extensions["huey.execute_job"](job.id)
    db.session.refresh(job)
    return job


def get_job(job_id: int) -> Job:
    """A job by id, after ending those whose worker is gone (so its state is current)."""
    reap_abandoned()
    return load(Job, job_id)


def list_jobs(project_id: int | None = None, limit: int = 50) -> list[Job]:
    """The newest jobs (of one project), after ending those whose worker is gone."""
    reap_abandoned()
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if project_id is not None:
        query = query.where(Job.project_id == project_id)
    return list(db.session.scalars(query))


def cancel(job: Job) -> Job:
    """Cancel a job: a queued one, or one whose worker is gone, ends at once; a running one stops at its
    next progress report, or when its lease expires if its worker died meanwhile."""
    if job.state in ENDED:
        raise Conflict(f"job {job.id} has already ended ({job.state})")
    job.cancel_requested = True
    boundary.commit()
    if job.state == "queued":
        end_abandoned(job, "cancelled", "it had not started")
    else:
        reap_abandoned()
    db.session.refresh(job)
    return job


def _finish(job_id: int, state: str, **values: Any) -> None:
    """The handler's outcome, unless the job was ended meanwhile (cancelled at once, lease expired)."""
    db.session.rollback()
    db.session.execute(update(Job).where(Job.id == job_id, Job.state == "running")
                       .values(state=state, finished_at=utcnow(), **values))
    boundary.commit()


def run_job(job_id: int) -> None:
    """Run one job in the worker; every outcome ends in a final state with its reason."""
    job = db.session.get(Job, job_id)
    if job is None or job.state != "queued":
        return
    job.state, job.started_at, job.worker = "running", utcnow(), worker_name()
    job.heartbeat_at = job.started_at
    boundary.commit()
    heartbeat = _Heartbeat(job_id, boundary.side_engine(), _lease())
    heartbeat.start()
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
    finally:
        heartbeat.stopped.set()
