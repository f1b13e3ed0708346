"""Jobs survive their worker: a kill -9'd worker's job ends failed and frees the project, cancel always
ends a job, `qcloop jobs` lists and cancels, and one Ctrl-C ends an inline run as cancelled."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

from click.testing import CliRunner
from mlflow import MlflowClient

from app.db import Job, TrainingRun, db, utcnow
from tests.app.test_training_api import SMALL, _labelled_project
from tests.factories import Factory, token_headers

LEASE_S = 2

# The real `qcloop` command in a process whose "training" handler only marks its run running, opens its
# MLflow run and then sleeps reporting progress: a training job that lasts until it is killed.
SLEEPING_TRAINING = """
import sys, time
from app.services import job_kinds, jobs
from app.cli import cli

@jobs.handler("training")
def sleeping(params, ctx):
    from flask import current_app
    from app.db import TrainingRun, db
    from training import tracking
    run = db.session.get(TrainingRun, params["run_id"])
    uri = current_app.config["MLFLOW_TRACKING_URI"]
    experiment = tracking.ensure_experiment(uri, "sleeping", current_app.config["MLFLOW_ARTIFACT_ROOT"])
    run.job_id, run.state = ctx.job_id, "running"
    run.mlflow_run_id = tracking.open_run(uri, experiment, "sleeping", {})
    db.session.commit()
    while True:
        ctx.progress(0.5, "sleeping")
        time.sleep(0.2)

cli(sys.argv[1:])
"""


def _env(app, database_url: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "QCLOOP_QUEUE_URL": app.config["QUEUE_URL"],
            "QCLOOP_INSTANCE_PATH": app.config["INSTANCE_PATH"], "QCLOOP_DATA_ROOT": app.config["DATA_ROOT"],
            "MLFLOW_TRACKING_URI": app.config["MLFLOW_TRACKING_URI"],
            "QCLOOP_MLFLOW_ARTIFACT_ROOT": app.config["MLFLOW_ARTIFACT_ROOT"], "QCLOOP_JOB_LEASE_S": str(LEASE_S)}


def _job(job_id: int) -> Job:
    db.session.expire_all()
    job = db.session.get(Job, job_id)
    db.session.rollback()  # end the read so the other process's SQLite writes never wait on it
    return job


def _wait_for(job_id: int, states: set[str], timeout_s: float = 60.0) -> Job:
    deadline = time.monotonic() + timeout_s
    while True:
        job = _job(job_id)
        if job.state in states or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def _run_with_mlflow(project_id: int, timeout_s: float = 60.0) -> TrainingRun | None:
    """The project's training run once its (sleeping) handler recorded the MLflow run."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = db.session.scalar(db.select(TrainingRun).where(TrainingRun.project_id == project_id,
                                                             TrainingRun.mlflow_run_id.is_not(None)))
        db.session.rollback()
        if run is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _queued_app(make_app, tmp_path):
    return make_app(QUEUE_IMMEDIATE=False, QUEUE_URL=f"sqlite:///{tmp_path / 'queue.db'}", JOB_LEASE_S=LEASE_S)


def test_a_killed_workers_job_ends_failed_and_the_next_run_starts(make_app, database_url, tmp_path):
    app = _queued_app(make_app, tmp_path)
    with app.app_context():
        project, admin = _labelled_project(Factory(app), n_scans=4)
        client = app.test_client()
        headers = token_headers(client, admin.username)
        url = f"/api/v1/projects/{project.id}/training-runs"
        run = client.post(url, json=SMALL, headers=headers).get_json()
        project = run["project_id"]
        db.session.remove()
        worker = subprocess.Popen([sys.executable, "-c", SLEEPING_TRAINING, "worker"], env=_env(app, database_url),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert _run_with_mlflow(project) is not None
            running = _job(run["job_id"])
            assert running.state == "running" and running.worker and running.heartbeat_at
        finally:
            worker.kill()  # SIGKILL: the worker leaves nothing behind but its rows
            output, _ = worker.communicate(timeout=30)
        assert running.state == "running", output
        time.sleep(LEASE_S + 0.5)
        again = client.post(url, json=SMALL, headers=headers)
        assert again.status_code == 201, again.get_json()
        job = _job(run["job_id"])
        assert job.state == "failed" and job.finished_at is not None
        assert "the worker running it stopped" in job.error and "last heartbeat" in job.error
        stuck = db.session.get(TrainingRun, run["id"])
        assert stuck.state == "failed" and "the worker running it stopped" in stuck.error
        status = MlflowClient(tracking_uri=app.config["MLFLOW_TRACKING_URI"]).get_run(stuck.mlflow_run_id).info.status
        assert status == "FAILED"
        shown = client.get(f"/api/v1/jobs/{job.id}", headers=headers).get_json()
        assert shown["state"] == "failed" and "the worker running it stopped" in shown["error"]
        db.session.rollback()


def _running_job(project, heartbeat_age_s: float) -> Job:
    beat = utcnow() - timedelta(seconds=heartbeat_age_s)
    job = Job(kind="frames.checksum", params={}, project_id=project.id, state="running", started_at=beat,
              worker="elsewhere:1", heartbeat_at=beat)
    db.session.add(job)
    db.session.commit()
    return job


def test_cancel_always_ends_a_job(make_app, tmp_path):
    app = _queued_app(make_app, tmp_path)
    with app.app_context():
        factory = Factory(app)
        admin = factory.user()
        project = factory.project("cancels", creator=admin)
        client = app.test_client()
        headers = token_headers(client, admin.username)
        gone = _running_job(project, heartbeat_age_s=LEASE_S + 5)
        answer = client.post(f"/api/v1/jobs/{gone.id}/cancel", headers=headers)
        assert answer.status_code == 409 and "already ended (failed)" in answer.get_json()["detail"]
        answer = client.get(f"/api/v1/jobs/{gone.id}", headers=headers).get_json()
        assert answer["state"] == "failed" and answer["finished"] and "the worker running it stopped" in answer["error"]

        run = TrainingRun(project_id=project.id, params={}, state="running")
        db.session.add(run)
        db.session.flush()
        training_job = _running_job(project, heartbeat_age_s=LEASE_S + 5)
        training_job.kind, training_job.params, run.job_id = "training", {"run_id": run.id}, training_job.id
        db.session.commit()
        answer = client.post(f"/api/v1/training-runs/{run.id}/cancel", headers=headers).get_json()
        assert answer["state"] == "cancelled", answer
        assert _job(training_job.id).state == "cancelled"

        alive = _running_job(project, heartbeat_age_s=0)
        answer = client.post(f"/api/v1/jobs/{alive.id}/cancel", headers=headers).get_json()
        assert answer["state"] == "running"  # its worker stops it at its next progress report
        time.sleep(LEASE_S + 0.2)  # ... or, when that worker died meanwhile, its lease ends it
        answer = client.get(f"/api/v1/jobs/{alive.id}", headers=headers).get_json()
        assert answer["state"] == "cancelled"
        assert client.post(f"/api/v1/jobs/{alive.id}/cancel", headers=headers).status_code == 409


def test_jobs_command_lists_and_cancels(make_app, tmp_path):
    from app.cli_jobs import jobs_group as jobs

    app = _queued_app(make_app, tmp_path)
    with app.app_context():
        factory = Factory(app)
        project = factory.project("listed", creator=factory.user())
        other = factory.project("other", creator=factory.user())
        gone = _running_job(project, heartbeat_age_s=LEASE_S + 5)
        hidden = _running_job(other, heartbeat_age_s=0)
        runner = CliRunner()
        listed = runner.invoke(jobs, ["list", "--project", "listed"])
        assert listed.exit_code == 0, listed.output
        assert f"{gone.id}" in listed.output and "frames.checksum" in listed.output
        assert "the worker running it stopped" in listed.output
        assert f"job {hidden.id} " not in listed.output
        cancelled = runner.invoke(jobs, ["cancel", str(hidden.id)])
        assert cancelled.exit_code == 0, cancelled.output
        assert _job(hidden.id).cancel_requested
        again = runner.invoke(jobs, ["cancel", str(gone.id)])
        assert again.exit_code == 1 and "already ended (failed)" in again.output
        assert runner.invoke(jobs, ["cancel", "999999"]).exit_code == 1


def test_one_ctrl_c_ends_an_inline_run_as_cancelled(make_app, database_url, tmp_path):
    app = _queued_app(make_app, tmp_path)
    with app.app_context():
        project, _ = _labelled_project(Factory(app), n_scans=4)
        name, project_id = project.name, project.id
        db.session.remove()
        process = subprocess.Popen(
            [sys.executable, "-c", SLEEPING_TRAINING, "train", "--project", name, "--inline", "--epochs", "1"],
            env=_env(app, database_url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            # as from a terminal: a suite started in the background (nohup, &) ignores SIGINT, and children inherit it
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            run = _run_with_mlflow(project_id)
            assert run is not None
            process.send_signal(signal.SIGINT)
            started = time.monotonic()
            output, _ = process.communicate(timeout=90)  # a loaded CI machine: the point is one Ctrl-C, not speed
            stopped_s = time.monotonic() - started
        finally:
            process.kill()
        assert process.returncode == 130 and stopped_s < 60, output
        assert "cancelled" in output
        db.session.expire_all()
        run = db.session.get(TrainingRun, run.id)
        assert run.state == "cancelled" and _job(run.job_id).state == "cancelled"
        status = MlflowClient(tracking_uri=app.config["MLFLOW_TRACKING_URI"]).get_run(run.mlflow_run_id).info.status
        assert status == "KILLED"


def test_a_lost_training_job_leaves_nothing_half_registered(make_app, tmp_path):
    from app.services import jobs

    app = _queued_app(make_app, tmp_path)
    with app.app_context():
        factory = Factory(app)
        project = factory.project("half", creator=factory.user())
        uri = app.config["MLFLOW_TRACKING_URI"]
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        mlflow_run = client.create_run(client.create_experiment("half")).info.run_id
        client.create_registered_model(project.model_name)
        client.create_model_version(project.model_name, source=(tmp_path / "model").as_uri(), run_id=mlflow_run)
        run = TrainingRun(project_id=project.id, params={}, state="running", mlflow_run_id=mlflow_run)
        db.session.add(run)
        db.session.flush()
        job = _running_job(project, heartbeat_age_s=LEASE_S + 5)
        job.kind, job.params, run.job_id = "training", {"run_id": run.id}, job.id
        db.session.commit()
        assert jobs.reap_abandoned() == 1
        assert db.session.get(TrainingRun, run.id).state == "failed"
        assert client.search_model_versions(f"name = '{project.model_name}'") == []
        assert client.get_run(mlflow_run).info.status == "FAILED"


def test_serve_starts_a_worker_again_when_it_dies(tmp_path):
    import threading

    from app.cli_jobs import keep_worker_running

    starts = tmp_path / "starts"
    command = [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('started\\n')"]  # a worker that dies at once
    stop = threading.Event()
    supervisor = threading.Thread(target=keep_worker_running, args=(command, stop, 0.1))
    supervisor.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not starts.exists() or len(starts.read_text().splitlines()) < 3):
        time.sleep(0.1)
    stop.set()
    supervisor.join(timeout=30)
    assert len(starts.read_text().splitlines()) >= 3 and not supervisor.is_alive()
