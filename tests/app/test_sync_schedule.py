"""Scheduled syncs: the worker's periodic check queues one "sync" job per due source, never a second while
one is queued, and the job records its run."""
from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from app.db import Job, SyncRun, SyncSource, db, utcnow
from app.services import jobs
from app.services.sync import engine, schedule
from tests.factories import Factory, token_headers


def test_a_due_source_is_queued_once_and_its_job_records_the_run(queued_app):
    factory = Factory(queued_app)
    project = factory.project("Scheduled")
    factory.nifti("site/visit1/sub-01_T1.nii.gz", shape=(8, 8, 8))
    source = f"{current_app.config['DATA_ROOT']}/site"
    first = engine.run_sync(project, source, None, every_minutes=10)  # inline, as `qcloop sync --every 10`
    assert (first.added, first.state, first.source.every_minutes) == (1, "succeeded", 10)
    manual = factory.project("Manual")
    factory.nifti("other/visit1/sub-02_T1.nii.gz", shape=(8, 8, 8))
    engine.run_sync(manual, f"{current_app.config['DATA_ROOT']}/other", None)  # no schedule: never queued
    now = utcnow()

    assert schedule.enqueue_due(now + timedelta(minutes=5)) == []  # not due yet
    queued = schedule.enqueue_due(now + timedelta(minutes=11))
    assert [(job.kind, job.state, job.project_id) for job in queued] == [("sync", "queued", project.id)]
    assert schedule.enqueue_due(now + timedelta(minutes=12)) == []  # its job is still queued

    factory.nifti("site/visit2/sub-03_T1.nii.gz", shape=(8, 8, 8))
    jobs.run_job(queued[0].id)
    db.session.expire_all()
    job = db.session.get(Job, queued[0].id)
    assert job.state == "succeeded", job.error
    run = db.session.scalar(select(SyncRun).where(SyncRun.job_id == job.id))
    assert (run.state, run.added, run.unchanged, run.added_items) == ("succeeded", 1, 1, ["visit2/sub-03_T1.nii.gz"])
    assert job.result["run_id"] == run.id
    assert schedule.enqueue_due(utcnow() + timedelta(minutes=5)) == []  # it ran just now
    later = schedule.enqueue_due(utcnow() + timedelta(minutes=11))
    assert [job.project_id for job in later] == [project.id]
    assert db.session.scalar(select(SyncSource.job_id).where(SyncSource.project_id == project.id)) == later[0].id


def test_a_sync_whose_worker_stopped_ends_its_run_failed_with_the_reason(queued_app):
    factory = Factory(queued_app)
    project = factory.project("Lost")
    factory.nifti("lost/visit1/sub-01_T1.nii.gz", shape=(8, 8, 8))
    first = engine.run_sync(project, f"{current_app.config['DATA_ROOT']}/lost", None, every_minutes=1)
    [job] = schedule.enqueue_due(utcnow() + timedelta(minutes=2))
    started = SyncRun(source_id=first.source_id, job_id=job.id, state="running", started_at=utcnow(), added_items=[],
                      skipped_items=[], failed_items=[], removed_items=[])  # as the worker began it, then died
    db.session.add(started)
    db.session.commit()

    assert jobs.end_abandoned(job, "failed", "the worker running it stopped")
    db.session.expire_all()
    run = db.session.get(SyncRun, started.id)
    assert (run.state, run.error) == ("failed", "failed: the worker running it stopped")
    assert run.finished_at is not None and db.session.get(Job, job.id).state == "failed"


def test_the_import_page_keeps_a_schedule_unless_the_admin_clears_it(factory, client):
    project = factory.project("Page")
    factory.member(project, "admin", "page-lead")
    headers = token_headers(client, "page-lead")
    factory.nifti("page/visit1/sub-01_T1.nii.gz", shape=(8, 8, 8))
    page = f"/admin/projects/{project.id}/sync"

    def every() -> int | None:
        db.session.expire_all()
        return db.session.scalar(select(SyncSource.every_minutes).where(SyncSource.project_id == project.id))

    assert client.post(page, data={"source": "page", "every_minutes": "45"}, headers=headers).status_code == 302
    assert every() == 45
    assert client.post(page, data={"source": "page", "every_minutes": ""}, headers=headers).status_code == 302
    assert every() == 45  # "Sync now" with the field empty keeps the schedule, as the API without every_minutes
    shown = client.get(f"/admin/projects/{project.id}/import", headers=headers).get_data(as_text=True)
    assert "every 45 minute(s)" in shown and 'name="manual"' in shown and "Only when asked" in shown
    both = client.post(page, data={"source": "page", "every_minutes": "5", "manual": "on"}, headers=headers)
    assert both.status_code == 400 and "not both" in both.get_data(as_text=True) and every() == 45
    assert client.post(page, data={"source": "page", "manual": "on"}, headers=headers).status_code == 302
    assert every() is None  # cleared only when asked to
