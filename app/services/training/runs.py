"""Training runs: started, read and cancelled here, trained by :mod:`app.services.training_job`.

Services flush; the request boundary or the CLI commits (:mod:`app.db.boundary`), except where a job boundary
commits for it: ``jobs.enqueue`` commits the new run with its job row so the worker can read both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select

from app.db import Job, ModelVersion, Project, TrainingRun, User, db, utcnow
from app.services import jobs
from app.services.errors import Conflict
from app.services.loaders import load
from app.services.training.params import clean_params
from app.services.training.reports import RunReport, mlflow_url, run_report

FINAL_STATES = ("succeeded", "failed", "cancelled")


def _new_run(project: Project, user: User | None, body: dict[str, Any]) -> TrainingRun:
    params = clean_params(project, body)
    jobs.reap_abandoned()  # a run whose worker is gone ends here instead of blocking the project
    active = db.session.scalar(select(TrainingRun.id).where(TrainingRun.project_id == project.id,
                                                            TrainingRun.state.in_(("queued", "running"))))
    if active is not None:
        raise Conflict(f"training run {active} of this project has not finished yet", run_id=active)
    run = TrainingRun(project_id=project.id, created_by_id=user.id if user is not None and user.is_authenticated
                      else None, params=params, state="queued")
    db.session.add(run)
    db.session.flush()
    return run


def start_run(project: Project, user: User | None, body: dict[str, Any]) -> TrainingRun:
    """Create the run and queue its job (which runs at once when the queue is immediate); the job's
    enqueueing commits the run with it. The caller commits the run's job id (the job sets it too)."""
    run = _new_run(project, user, body)
    job = jobs.enqueue("training", {"run_id": run.id}, project_id=project.id, user=user)
    db.session.expire_all()
    run = load(TrainingRun, run.id)
    if run.job_id is None:
        run.job_id = job.id
    return run


def create_run(project: Project, user: User | None, body: dict[str, Any]) -> TrainingRun:
    """Create the run and its job row without queuing it (the CLI's --inline runs it in its own process);
    the caller commits."""
    run = _new_run(project, user, body)
    job = Job(kind="training", params={"run_id": run.id}, project_id=project.id, created_by_id=run.created_by_id)
    db.session.add(job)
    db.session.flush()
    run.job_id = job.id
    return run


def runs_query(project_id: int) -> Select:
    return select(TrainingRun).where(TrainingRun.project_id == project_id).order_by(TrainingRun.id.desc())


def recent_runs(project_id: int, limit: int) -> list[TrainingRun]:
    return list(db.session.scalars(runs_query(project_id).limit(limit)))


def cancel_run(run: TrainingRun) -> TrainingRun:
    """Cancel the run's job (``jobs.cancel`` commits the request, the worker's boundary); a job that ended
    at once ends the run too, which the caller commits."""
    job = db.session.get(Job, run.job_id) if run.job_id else None
    if job is None or run.state in FINAL_STATES:
        raise Conflict(f"training run {run.id} has already ended ({run.state})")
    jobs.cancel(job)
    if job.state == "cancelled":
        run.state, run.finished_at = "cancelled", utcnow()
    return run


@dataclass(frozen=True)
class RunStatus:
    """A run as it stands: its job's state and progress (the job may have ended before the run row
    says so), the version it registered, and its report."""

    run: TrainingRun
    job: Job | None
    model_version: ModelVersion | None

    @property
    def state(self) -> str:
        if self.job is not None and self.job.state in FINAL_STATES and self.run.state not in FINAL_STATES:
            return self.job.state
        return self.run.state

    @property
    def error(self) -> str | None:
        return self.run.error or (self.job.error if self.job is not None and self.state == "failed" else None)

    @property
    def progress(self) -> float:
        return self.job.progress if self.job is not None and self.job.progress is not None else 0.0

    @property
    def message(self) -> str:
        return (self.job.message or "") if self.job is not None else ""

    @property
    def mlflow_url(self) -> str | None:
        return mlflow_url(self.run)

    @property
    def report(self) -> RunReport:
        return run_report(self.run)


def run_status(run: TrainingRun) -> RunStatus:
    """The run with its job and model version (two lookups by primary key)."""
    return RunStatus(run, db.session.get(Job, run.job_id) if run.job_id else None,
                     db.session.get(ModelVersion, run.model_version_id) if run.model_version_id else None)
