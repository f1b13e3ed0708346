"""The job queue (Huey): SQLite-backed by default, Redis when QCLOOP_QUEUE_URL says redis://.

The Huey instance belongs to the app (``app.extensions["huey"]``); its task runs a Job row
by id inside the app context, so the worker and the web process share the rows that carry
state and progress; its periodic task queues the syncs whose schedule is due.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from flask import Flask
from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey, crontab


def make_huey(url: str, immediate: bool = False) -> Huey:
    if immediate:
        return MemoryHuey("qcloop", immediate=True)
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey("qcloop", filename=str(path))
    if parsed.scheme in ("redis", "rediss"):
        return RedisHuey("qcloop", url=url)
    raise ValueError(f"QCLOOP_QUEUE_URL must be sqlite:///PATH or redis://HOST, not {url!r}")


def init_queue(app: Flask) -> Huey:
    huey = make_huey(app.config["QUEUE_URL"], app.config["QUEUE_IMMEDIATE"])

    @huey.task(name="qcloop.execute_job")
    def execute_job(job_id: int) -> None:
        from app.services.jobs import run_job

        with app.app_context():
            run_job(job_id)

    @huey.periodic_task(crontab(minute="*"), name="qcloop.due_syncs")
    def due_syncs() -> None:
        """Every minute in the worker: queue the syncs whose schedule is due."""
        from app.services.sync.schedule import enqueue_due

        with app.app_context():
            enqueue_due()

    app.extensions["huey"] = huey
    app.extensions["huey.execute_job"] = execute_job
    return huey


def queue_status(huey: Huey) -> dict:
    return {"ok": True, "backend": type(huey).__name__, "pending": huey.pending_count()}
