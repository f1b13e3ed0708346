"""The job queue runs a Job row to a final state with progress, errors and cancellation."""
from app.db import Job, db
from app.services import jobs
from app.services.errors import InvalidInput


@jobs.handler("test.count")
def _count(params, context):
    for step in range(params["steps"]):
        context.progress((step + 1) / params["steps"], f"step {step + 1}")
    if params.get("fail"):
        raise InvalidInput("row 3, field frame_number: not an integer")
    return {"counted": params["steps"]}


def test_job_succeeds_with_result(app):
    job = jobs.enqueue("test.count", {"steps": 3})
    job = db.session.get(Job, job.id)
    assert job.state == "succeeded" and job.progress == 1.0 and job.result == {"counted": 3}
    assert job.started_at and job.finished_at


def test_job_failure_records_the_reason(app):
    job = jobs.enqueue("test.count", {"steps": 2, "fail": True})
    assert job.state == "failed"
    assert "row 3, field frame_number" in job.error


def test_cancelled_job_stops(app):
    job = Job(kind="test.count", params={"steps": 5}, cancel_requested=True)
    db.session.add(job)
    db.session.commit()
    jobs.run_job(job.id)
    db.session.refresh(job)
    assert job.state == "cancelled"


def test_queue_backends_from_url(tmp_path):
    import pytest
    from huey import RedisHuey, SqliteHuey

    from app.queue import make_huey

    assert isinstance(make_huey(f"sqlite:///{tmp_path / 'q.db'}"), SqliteHuey)
    assert isinstance(make_huey("redis://127.0.0.1:6379/0"), RedisHuey)
    with pytest.raises(ValueError, match="QCLOOP_QUEUE_URL"):
        make_huey("amqp://broker")
