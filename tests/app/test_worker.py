"""A real `qcloop worker` process takes a queued import job from the SQLite queue and runs it."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from sqlalchemy import func, select

from app.db import Scan, db
from tests.app.test_transfer_api import _site, _upload
from tests.factories import Factory, token_headers


def _poll(client, url: str, headers: dict, until: set[str], timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(url, headers=headers).get_json()
        # End the read transaction so the worker's writes to SQLite are not blocked by this process.
        db.session.remove()
        if body["state"] in until or time.monotonic() > deadline:
            return body
        time.sleep(0.3)


def test_worker_process_runs_a_queued_import(make_app, database_url, tmp_path):
    queue_url = f"sqlite:///{tmp_path / 'queue.db'}"
    app = make_app(IMPORT_INLINE_MAX_BYTES=10, QUEUE_IMMEDIATE=False, QUEUE_URL=queue_url)
    env = {**os.environ, "DATABASE_URL": database_url, "QCLOOP_QUEUE_URL": queue_url,
           "QCLOOP_INSTANCE_PATH": app.config["INSTANCE_PATH"], "QCLOOP_DATA_ROOT": app.config["DATA_ROOT"],
           "MLFLOW_TRACKING_URI": app.config["MLFLOW_TRACKING_URI"]}
    with app.app_context():
        client = app.test_client()
        project, content = _site(Factory(app), tmp_path)
        headers = token_headers(client, "siteadmin")
        answer = _upload(client, f"/api/v1/projects/{project.id}/import", content, headers)
        assert answer.status_code == 202
        url = answer.get_json()["url"]
        assert _poll(client, url, headers, until={"queued"}, timeout_s=0)["state"] == "queued"

        worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            job = _poll(client, url, headers, until={"succeeded", "failed", "cancelled"})
        finally:
            worker.terminate()
            output, _ = worker.communicate(timeout=30)
        assert job["state"] == "succeeded", (job, output)
        assert job["progress"] == 1.0 and job["result"]["counts"]["scans_added"] == 2
        assert job["started"] and job["finished"]
        assert "qcloop worker on SqliteHuey" in output
        assert db.session.scalar(select(func.count()).select_from(Scan)) == 2
