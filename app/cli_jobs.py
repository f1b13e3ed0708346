"""``qcloop jobs``: list and cancel background jobs; how inline runs (train, evaluate) run in this process and
how ``serve --with-worker`` keeps its worker running."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import click
from flask import current_app

from app.cli import cli, follow_job, preflight

log = logging.getLogger(__name__)


def run_inline(job_id: int):
    """Run the job in a thread of this process and follow it until it ends; returns the final row.

    One Ctrl-C ends the job (and what it runs: its training run, its MLflow run KILLED) as
    cancelled and leaves at once: a handler cannot be interrupted from outside its thread.
    """
    from app.db import Job, db
    from app.services import jobs

    app = current_app._get_current_object()

    def work() -> None:
        with app.app_context():
            jobs.run_job(job_id)

    thread = threading.Thread(target=work, name=f"qcloop-job-{job_id}", daemon=True)
    thread.start()
    try:
        job = follow_job(job_id)
    except KeyboardInterrupt:
        db.session.rollback()
        try:
            jobs.end_abandoned(db.session.get(Job, job_id), "cancelled", "interrupted (Ctrl-C)")
            click.echo(f"job {job_id} cancelled (Ctrl-C)", err=True)
        except Exception:  # noqa: BLE001 - leaving is the point; the lease ends the job later
            log.exception("job %s could not be marked cancelled", job_id)
            click.echo(f"job {job_id} stopped; it ends failed when its lease expires", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # the handler's thread (and MLflow's exit hooks) would otherwise hold the process
    thread.join()
    return job


def keep_worker_running(command: list[str], stop: threading.Event, restart_delay_s: float = 2.0) -> None:
    """``serve --with-worker``: run the worker process and start it again whenever it exits, until
    ``stop`` is set (then end it)."""
    while True:
        process = subprocess.Popen(command)
        while process.poll() is None:
            if stop.wait(1.0):
                process.terminate()
                process.wait(timeout=30)
                return
        log.warning("the job worker (pid %s) exited with code %s; starting it again", process.pid, process.returncode)
        if stop.wait(restart_delay_s):
            return


@cli.group("jobs")
def jobs_group() -> None:
    """Background jobs (imports, training, evaluation)."""


@jobs_group.command("list")
@click.option("--project", "project_name", default=None, help="Only this project's jobs.")
@click.option("--limit", default=50, show_default=True, type=int)
def list_command(project_name: str | None, limit: int) -> None:
    """The newest jobs with state, progress and why they failed; jobs whose worker is gone end here."""
    from app.db import boundary
    from app.services import jobs, projects

    preflight()
    project_id = None
    if project_name is not None:
        project = projects.find_project(project_name)
        if project is None:
            raise click.ClickException(f"no project named {project_name!r}")
        project_id = project.id
    for job in jobs.list_jobs(project_id, limit):
        line = f"job {job.id} {job.kind} {job.state} {job.progress * 100:.0f}%"
        if job.state == "running" and job.worker:
            line += f" on {job.worker}"
        detail = job.error if job.state == "failed" else job.message
        click.echo(f"{line}: {detail}" if detail else line)
    boundary.commit()


@jobs_group.command("cancel")
@click.argument("job_id", type=int)
def cancel_command(job_id: int) -> None:
    """Cancel a job: queued, or its worker gone, it ends now; running, it stops at its next progress report."""
    from app.db import db
    from app.services import jobs
    from app.services.errors import ServiceError

    preflight()
    try:
        job = jobs.cancel(jobs.get_job(job_id))
    except ServiceError as err:
        db.session.rollback()
        raise click.ClickException(err.message if err.message != "Not found." else f"no job {job_id}") from err
    click.echo(f"job {job.id} cancelled" if job.state == "cancelled"
               else f"job {job.id} asked to stop (it is running on {job.worker})")
