"""What a sync may reach and what it shows: DICOMweb servers only from the site's allowlist (its credentials
to those only, no proxy or ~/.netrc from the environment, a short check without retries), no password shown or
stored, one run of a source at a time, a source that cannot be opened any more recorded as a failed run, and
the project's sync folder named by its id."""
from __future__ import annotations

import base64
import os
import time
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from flask import current_app
from sqlalchemy import func, select

from app.db import Job, SyncRun, SyncSource, db, utcnow
from app.services import jobs
from app.services.errors import Conflict
from app.services.sync import dicomweb, engine, schedule
from app.services.sync.base import SourceError, display_url
from app.services.sync.dicomweb import DicomwebSource
from tests.factories import Factory, dicomweb_server, token_headers


class _Recorder(BaseHTTPRequestHandler):
    """A DICOMweb server holding no study: answers ``[]`` (or its ``status``) after its ``delay``, and
    records each request's path and Authorization header."""

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        time.sleep(self.server.delay)
        body = b"[]"
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def server(status: int = 200, delay: float = 0.0) -> Iterator[ThreadingHTTPServer]:
    """A recording server on loopback; ``.url`` is its DICOMweb source URL."""
    with dicomweb_server(_Recorder, seen=[], status=status, delay=delay) as httpd:
        yield httpd


@pytest.mark.parametrize("text, shown", [
    ("dicomweb+https://alice:s3cret@pacs.example.org:8443/dicom-web",
     "dicomweb+https://pacs.example.org:8443/dicom-web"),
    ("dicomweb+http://alice@pacs/dicom-web", "dicomweb+http://pacs/dicom-web"),
    ("dicomweb+http://alice:s3cret@[::1/dicom-web", "dicomweb+http://[::1/dicom-web"),
    ("dicomweb+http://pacs/dicom-web", "dicomweb+http://pacs/dicom-web"),
    ("bids:/data/ds@1", "bids:/data/ds@1"),
    ("/data/site@2/visit1", "/data/site@2/visit1")])
def test_display_url_drops_the_user_and_password_of_a_url_only(text, shown):
    assert display_url(text) == shown


def test_a_source_error_never_repeats_the_password():
    with pytest.raises(SourceError) as refused:
        DicomwebSource("dicomweb+ftp://alice:s3cret@pacs/dicom-web")
    assert "s3cret" not in refused.value.message and refused.value.message.startswith("dicomweb+ftp://pacs/dicom-web:")


def test_only_allowlisted_dicomweb_servers_are_called_and_only_they_get_the_sites_credentials(make_app, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # honoured, every request would fail
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with server() as listed, server() as other:
        app = make_app(DICOMWEB_URLS=[listed.url.removeprefix("dicomweb+") + "/"], DICOMWEB_USERNAME="site",
                       DICOMWEB_PASSWORD="site-secret")
        with app.app_context():
            factory = Factory(app)
            project = factory.project("Pacs")
            factory.user("root", superuser=True)
            client = app.test_client()
            headers = token_headers(client, "root")  # superusers too
            url = f"/api/v1/projects/{project.id}/sync"
            for refused_url in (other.url, listed.url + "-other", listed.url.replace("127.0.0.1", "localhost")):
                refused = client.post(url, json={"source": refused_url}, headers=headers)
                assert refused.status_code == 400, refused.get_json()
                assert refused.get_json()["detail"] == (
                    f"{refused_url} is not an allowed DICOMweb server: an administrator of the site lists the "
                    "servers qcloop may sync from in the setting QCLOOP_DICOMWEB_URLS")
            assert other.seen == [] and listed.seen == []
            assert db.session.scalar(select(func.count(SyncSource.id))) == 0

            started = client.post(url, json={"source": listed.url}, headers=headers)
            assert started.status_code == 202, started.get_json()
            assert started.get_json()["job"]["state"] == "succeeded", started.get_json()
            credentials = "Basic " + base64.b64encode(b"site:site-secret").decode()
            assert listed.seen[0][0] == "/dicom-web/studies?limit=1&includefield=StudyInstanceUID"  # the check
            assert len(listed.seen) >= 2 and {header for _, header in listed.seen} == {credentials}
            db.session.rollback()


def test_the_check_asks_once_and_waits_a_few_seconds_at_most(make_app):
    with server(status=503) as failing, server(delay=8) as slow:
        app = make_app(DICOMWEB_URLS=[failing.url, slow.url])
        with app.app_context():
            with pytest.raises(SourceError, match="answered HTTP 503"):
                DicomwebSource(failing.url).check()
            assert len(failing.seen) == 1  # no retries
            began = time.monotonic()
            with pytest.raises(SourceError, match="did not answer in time while checking the server"):
                DicomwebSource(slow.url).check()
            assert time.monotonic() - began < dicomweb.CHECK_TIMEOUT[1] + 2 and len(slow.seen) == 1


def _folder_source(factory, name: str, folder: str) -> str:
    factory.nifti(f"{folder}/visit1/sub-01_T1.nii.gz", shape=(8, 8, 8))
    return f"{current_app.config['DATA_ROOT']}/{folder}"


def test_a_scheduled_source_that_cannot_be_opened_records_a_failed_run_and_waits_its_interval(queued_app):
    factory = Factory(queued_app)
    project = factory.project("Gone")
    source = _folder_source(factory, "Gone", "gone")
    first = engine.run_sync(project, source, None, every_minutes=10)
    for path in sorted(Path(source).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    Path(source).rmdir()

    [job] = schedule.enqueue_due(utcnow() + timedelta(minutes=11))
    jobs.run_job(job.id)
    db.session.expire_all()
    assert db.session.get(Job, job.id).state == "failed"
    run = db.session.scalar(select(SyncRun).where(SyncRun.job_id == job.id))
    assert (run.state, run.error) == ("failed", f"source {source} is not a folder")
    row = db.session.get(SyncSource, first.source_id)
    assert row.last_run_at == run.started_at and run.finished_at is not None
    assert schedule.due(utcnow() + timedelta(minutes=5)) == []  # not re-queued every minute


def test_a_source_is_synced_by_one_run_at_a_time(queued_app):
    factory = Factory(queued_app)
    project = factory.project("Once")
    factory.member(project, "admin", "once-lead")
    source = _folder_source(factory, "Once", "once")
    first = engine.run_sync(project, source, None, every_minutes=10)
    row = db.session.get(SyncSource, first.source_id)

    [job] = schedule.enqueue_due(utcnow() + timedelta(minutes=11))
    client = queued_app.test_client()
    again = client.post(f"/api/v1/projects/{project.id}/sync", json={"source": source},
                        headers=token_headers(client, "once-lead"))
    assert again.status_code == 409 and again.get_json()["detail"] == (
        f"a sync of {source} is already queued (job {job.id})")
    with pytest.raises(Conflict, match="already queued or running"):  # a request that passed that check meanwhile
        schedule._enqueue(row, None)
    assert db.session.scalar(select(func.count(Job.id))) == 1

    running = SyncRun(source_id=row.id, job_id=job.id, state="running", started_at=utcnow(), added_items=[],
                      skipped_items=[], failed_items=[], removed_items=[])  # the worker's run of that job
    db.session.add(running)
    db.session.commit()
    with pytest.raises(Conflict) as refused:  # the command line waits for it too
        engine.run_sync(project, source, None)
    assert refused.value.status == 409
    assert refused.value.message == f"a sync of {source} is already running (run {running.id}, job {job.id})"

    running.job_id = None  # a command-line run going on: the worker's job is refused
    db.session.commit()
    jobs.run_job(job.id)
    db.session.expire_all()
    assert db.session.get(Job, job.id).state == "failed"
    assert db.session.scalar(select(func.count(SyncRun.id)).where(SyncRun.source_id == row.id)) == 2


@pytest.mark.parametrize("every", ["²", "9" * 40, "-1", "1.5", "0"])
def test_a_schedule_that_is_no_small_whole_number_is_a_400(factory, client, every):
    project = factory.project("Every")
    factory.member(project, "admin", "every-lead")
    source = _folder_source(factory, "Every", "every")
    answer = client.post(f"/api/v1/projects/{project.id}/sync", json={"source": source, "every_minutes": every},
                         headers=token_headers(client, "every-lead"))
    assert answer.status_code == 400, answer.get_json()
    assert "every_minutes must" in answer.get_json()["detail"]


def test_each_projects_sync_folder_is_named_by_its_id(factory):
    spaced, underscored = factory.project("My Project"), factory.project("My_Project")
    runs = [engine.run_sync(project, _folder_source(factory, project.name, f"site{project.id}"), None)
            for project in (spaced, underscored)]
    folders = [Path(run.export_file).parent for run in runs]
    assert folders == [Path(current_app.config["INSTANCE_PATH"]) / "sync" / str(project.id)
                       for project in (spaced, underscored)]


def test_a_folder_belongs_to_one_project_whatever_its_spelling_kind_or_link(factory, client):
    data = Path(current_app.config["DATA_ROOT"])
    factory.nifti("lab/ds/sub-01/anat/sub-01_T1w.nii.gz", shape=(8, 8, 8))
    (data / "lab" / "ds" / "dataset_description.json").write_text('{"Name": "ds", "BIDSVersion": "1.9.0"}')
    (data / "link").symlink_to(data / "lab" / "ds")
    owner = factory.project("Owner")
    assert engine.run_sync(owner, f"bids:{data / 'lab' / 'ds'}", None).added == 1
    other = factory.project("Other")
    factory.member(other, "admin", "other-lead")
    headers = token_headers(client, "other-lead")

    for source, relation in ((f"{data}/lab/ds", "is the folder of"), ("bids:link", "is the folder of"),
                             ("link", "is the folder of"), ("lab/ds/sub-01", "lies inside the folder of"),
                             ("lab", "holds the folder of"), (".", "holds the folder of")):
        answer = client.post(f"/api/v1/projects/{other.id}/sync", json={"source": source}, headers=headers)
        assert answer.status_code == 409, (source, answer.get_json())
        shown = display_url(source if source.startswith(("/", "bids:/")) else (
            f"bids:{data}/{source[5:]}" if source.startswith("bids:") else str(Path(os.path.abspath(data / source)))))
        assert answer.get_json()["detail"] == (f"source {shown} {relation} a source already synced into another "
                                               "project; a folder belongs to one project")
    assert db.session.scalar(select(func.count(SyncSource.id))) == 1  # nothing claimed for Other

    factory.nifti("elsewhere/visit1/sub-02_T1.nii.gz", shape=(8, 8, 8))
    apart = client.post(f"/api/v1/projects/{other.id}/sync", json={"source": "elsewhere"}, headers=headers)
    assert apart.status_code == 202 and apart.get_json()["job"]["result"]["added"] == 1
    assert engine.run_sync(owner, f"{data}/lab/ds", None).unchanged == 1  # its own project may name it anyhow
