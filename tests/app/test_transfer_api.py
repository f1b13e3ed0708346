"""Import and export through the API and the admin pages; uploaded frames; large imports as jobs."""
from __future__ import annotations

import io
import json

from sqlalchemy import func, select

from app.db import Decision, Frame, Job, Project, Scan, db
from app.services import projects
from tests.app.transfer_helpers import MIQA_HEADER, read_csv_text, write_csv
from tests.factories import login, token_headers


def _site(factory, tmp_path):
    admin = factory.user("siteadmin")
    project = factory.project("Site", creator=admin)
    factory.member(project, "tier1", "rev1")
    factory.nifti("site/a.nii.gz", shape=(16, 16, 16))
    factory.nifti("site/b.nii.gz", shape=(16, 16, 16))
    rows = [["Site", "v1", "a", "T1", 0, "site/a.nii.gz", "", "", "", "", "U", "rev1@example.org", "", "", "", ""],
            ["Site", "v1", "b", "T2", 0, "site/b.nii.gz", "", "", "", "", "", "", "", "", "", ""]]
    return project, write_csv(tmp_path / "site.csv", rows).read_bytes()


def _upload(client, url, content: bytes, headers, name="site.csv", **form):
    return client.post(url, data={"file": (io.BytesIO(content), name), **form}, headers=headers,
                       content_type="multipart/form-data")


def test_project_import_dry_run_then_import_then_export(client, factory, tmp_path):
    project, content = _site(factory, tmp_path)
    headers = token_headers(client, "siteadmin")
    url = f"/api/v1/projects/{project.id}/import"
    preview = _upload(client, url, content, headers, dry_run="true")
    assert preview.status_code == 200, preview.get_json()
    assert preview.get_json()["dry_run"] and preview.get_json()["counts"]["scans_added"] == 2
    assert db.session.scalar(select(func.count()).select_from(Scan)) == 0
    done = _upload(client, url, content, headers)
    assert done.status_code == 200 and done.get_json()["counts"]["decisions_added"] == 1
    again = _upload(client, url, content, headers, mode="replace")
    assert again.status_code == 200 and again.get_json()["changes"] == 0

    exported = client.post(f"/api/v1/projects/{project.id}/export", json={"format": "miqa-csv"}, headers=headers)
    assert exported.status_code == 200 and exported.is_streamed
    assert "attachment" in exported.headers["Content-Disposition"]
    rows = read_csv_text(exported.get_data(as_text=True))
    assert [(r["scan_name"], r["last_decision"]) for r in rows] == [("a", "U"), ("b", "")]
    full = client.post(f"/api/v1/projects/{project.id}/export?format=json", headers=headers)
    body = json.loads(full.get_data(as_text=True))
    assert body["format"] == "qcloop-full"
    assert body["projects"]["Site"]["experiments"]["v1"]["scans"]["a"]["decisions"][0]["creator_role"] == "tier1"
    bad = client.post(f"/api/v1/projects/{project.id}/export", json={"format": "xlsx"}, headers=headers)
    assert bad.status_code == 400 and bad.get_json()["field"] == "format"


def test_refused_import_lists_row_and_field(client, factory, tmp_path):
    project, content = _site(factory, tmp_path)
    headers = token_headers(client, "siteadmin")
    broken = content.replace(b",T2,", b",X9,")
    answer = _upload(client, f"/api/v1/projects/{project.id}/import", broken, headers)
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["error"] == "invalid" and body["errors"][0] == {
        "where": "row 3", "field": "scan_type", "message": body["errors"][0]["message"]}
    assert "unknown scan type 'X9'" in body["detail"]
    assert db.session.scalar(select(func.count()).select_from(Scan)) == 0
    nothing = client.post(f"/api/v1/projects/{project.id}/import", json={}, headers=headers)
    assert nothing.status_code == 400  # an empty JSON body is an import file without projects


def test_roles_global_import_and_export(client, factory, tmp_path):
    project, content = _site(factory, tmp_path)
    reviewer = token_headers(client, "rev1")
    assert _upload(client, f"/api/v1/projects/{project.id}/import", content, reviewer).status_code == 403
    assert _upload(client, "/api/v1/global/import", content, reviewer).status_code == 403
    factory.user("root", superuser=True)
    root = token_headers(client, "root")
    other = content.replace(b"Site,", b"Brand New,")
    answer = _upload(client, "/api/v1/global/import", other, root)
    assert answer.status_code == 200 and answer.get_json()["counts"]["projects_added"] == 1
    created = projects.find_project("Brand New")
    assert created is not None and db.session.scalar(select(func.count()).select_from(Project)) == 2
    exported = client.post("/api/v1/global/export", data={"format": "csv"}, headers=root)
    records = read_csv_text(exported.get_data(as_text=True))
    assert {r["project_name"] for r in records if r["record"] == "scan"} == {"Brand New"}


def test_large_import_runs_as_a_job_with_progress(make_app, tmp_path):
    from tests.factories import Factory

    app = make_app(IMPORT_INLINE_MAX_BYTES=10)
    with app.app_context():
        factory = Factory(app)
        client = app.test_client()
        project, content = _site(factory, tmp_path)
        headers = token_headers(client, "siteadmin")
        answer = _upload(client, f"/api/v1/projects/{project.id}/import", content, headers)
        assert answer.status_code == 202
        job = answer.get_json()["job"]
        assert answer.get_json()["url"] == f"/api/v1/jobs/{job['id']}"
        polled = client.get(answer.get_json()["url"], headers=headers).get_json()
        assert polled["state"] == "succeeded" and polled["progress"] == 1.0
        assert polled["result"]["counts"]["scans_added"] == 2
        assert db.session.scalar(select(func.count()).select_from(Decision)) == 1
        cancel = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=headers)
        assert cancel.status_code == 409  # it has ended already
        broken = _upload(client, f"/api/v1/projects/{project.id}/import", content.replace(b",T2,", b",X9,"), headers)
        failed = client.get(broken.get_json()["url"], headers=headers).get_json()
        assert failed["state"] == "failed" and "row 3, field scan_type" in failed["error"]
        assert db.session.scalar(select(func.count()).select_from(Job).where(Job.kind == "transfer.import")) == 2


def test_uploaded_frames_are_stored_and_exported(client, factory, tmp_path):
    project, _ = _site(factory, tmp_path)
    headers = token_headers(client, "rev1")
    image = factory.nifti("elsewhere/upload.nii.gz", shape=(16, 16, 16)).read_bytes()
    answer = client.post("/api/v1/frames", headers=headers, content_type="multipart/form-data", data={
        "project": str(project.id), "experiment": "uploads", "scan_name": "my scan", "scan_type": "T2",
        "frame_number": "0", "content": (io.BytesIO(image), "upload.nii.gz")})
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert body["file_location"] == f"uploads/{project.id}/{body['checksum'][:2]}/{body['checksum']}.nii.gz"
    assert body["shape"] == [16, 16, 16] and body["checksum"]
    second = client.post("/api/v1/frames", headers=headers, content_type="multipart/form-data", data={
        "scan": str(body["scan"]), "frame_number": "1", "file": (io.BytesIO(image), "second.nii.gz")})
    assert second.status_code == 201
    clash = client.post("/api/v1/frames", headers=headers, content_type="multipart/form-data", data={
        "scan": str(body["scan"]), "frame_number": "1", "file": (io.BytesIO(image), "second.nii.gz")})
    assert clash.status_code == 409
    junk = client.post("/api/v1/frames", headers=headers, content_type="multipart/form-data", data={
        "scan": str(body["scan"]), "frame_number": "2", "file": (io.BytesIO(b"junk"), "junk.nii.gz")})
    assert junk.status_code == 400 and "not a readable NIfTI" in junk.get_json()["detail"]
    outsider = factory.user("outsider")
    hidden = client.post("/api/v1/frames", headers=token_headers(client, outsider.username),
                         content_type="multipart/form-data",
                         data={"scan": str(body["scan"]), "file": (io.BytesIO(image), "x.nii.gz")})
    assert hidden.status_code == 404

    admin = token_headers(client, "siteadmin")
    for fmt in ("miqa-csv", "csv"):
        text = client.post(f"/api/v1/projects/{project.id}/export", json={"format": fmt},
                           headers=admin).get_data(as_text=True)
        locations = {r["file_location"] for r in read_csv_text(text) if r.get("record", "frame") == "frame"}
        assert body["file_location"] in locations
    frame = db.session.get(Frame, body["id"])
    from app.storage import resolve

    assert resolve(frame.file_location).path.read_bytes() == image  # a real file under the data root


def test_admin_page_preview_apply_and_download(client, factory, tmp_path):
    project, content = _site(factory, tmp_path)
    login(client, "siteadmin")
    page = client.get(f"/admin/projects/{project.id}/import")
    assert page.status_code == 200 and b"Import a file" in page.data
    preview = client.post(f"/admin/projects/{project.id}/import", content_type="multipart/form-data",
                          data={"file": (io.BytesIO(content), "site.csv"), "mode": "merge", "dry_run": "on"})
    assert preview.status_code == 200 and b"Preview (nothing written yet)" in preview.data
    assert db.session.scalar(select(func.count()).select_from(Scan)) == 0
    token = preview.data.split(b'name="token" value="')[1].split(b'"')[0].decode()
    applied = client.post(f"/admin/projects/{project.id}/import/apply",
                          data={"token": token, "mode": "merge", "filename": "site.csv"})
    assert applied.status_code == 200 and b"Imported" in applied.data
    assert db.session.scalar(select(func.count()).select_from(Scan)) == 2
    gone = client.post(f"/admin/projects/{project.id}/import/apply", data={"token": token, "mode": "merge"})
    assert gone.status_code == 400 and b"upload it again" in gone.data
    refused = client.post(f"/admin/projects/{project.id}/import", content_type="multipart/form-data",
                          data={"file": (io.BytesIO(content.replace(b",T2,", b",X9,")), "site.csv")})
    assert refused.status_code == 400 and b"row 3" in refused.data and b"scan_type" in refused.data
    download = client.post(f"/admin/projects/{project.id}/export", data={"format": "miqa-json"})
    assert json.loads(download.get_data(as_text=True))["projects"]["Site"]["experiments"]["v1"]["scans"]["a"]


def test_admin_page_uploads_a_scan_image_that_exports_with_its_location(client, factory, tmp_path):
    project, _ = _site(factory, tmp_path)
    login(client, "siteadmin")
    page = client.get(f"/admin/projects/{project.id}/import")
    assert b'id="upload-form"' in page.data
    image = factory.nifti("elsewhere/scan.nii.gz", shape=(16, 16, 16)).read_bytes()
    url = f"/admin/projects/{project.id}/frames"
    done = client.post(url, content_type="multipart/form-data", follow_redirects=True, data={
        "experiment": "walk-in", "scan_name": "new scan", "scan_type": "T2", "frame_number": "0",
        "file": (io.BytesIO(image), "scan.nii.gz")})
    assert done.status_code == 200 and b"Uploaded scan.nii.gz as frame 0 of walk-in / new scan" in done.data
    frame = db.session.scalar(select(Frame).join(Scan).where(Scan.name == "new scan"))
    from app.storage import resolve

    assert resolve(frame.file_location).path.read_bytes() == image
    rows = read_csv_text(client.post(f"/admin/projects/{project.id}/export",
                                     data={"format": "miqa-csv"}).get_data(as_text=True))
    assert [(r["experiment_name"], r["scan_name"], r["scan_type"], r["file_location"]) for r in rows
            if r["scan_name"] == "new scan"] == [("walk-in", "new scan", "T2", frame.file_location)]
    junk = client.post(url, content_type="multipart/form-data", data={
        "experiment": "walk-in", "scan_name": "junk", "frame_number": "0", "file": (io.BytesIO(b"junk"), "j.nii.gz")})
    assert junk.status_code == 400 and b"not a readable NIfTI" in junk.data
    assert db.session.scalar(select(func.count()).select_from(Scan).where(Scan.name == "junk")) == 0
    reviewer = login(client.application.test_client(), "rev1")
    assert reviewer.post(url, data={}).status_code == 403  # a project admin's page


def test_admin_page_shows_a_job_progress_bar(make_app, tmp_path):
    from tests.factories import Factory

    app = make_app(IMPORT_INLINE_MAX_BYTES=10, QUEUE_IMMEDIATE=False)
    with app.app_context():
        factory = Factory(app)
        client = app.test_client()
        project, content = _site(factory, tmp_path)
        login(client, "siteadmin")
        answer = client.post(f"/admin/projects/{project.id}/import", content_type="multipart/form-data",
                             data={"file": (io.BytesIO(content), "site.csv"), "mode": "merge"})
        assert answer.status_code == 200 and b"<progress" in answer.data
        job = db.session.scalar(select(Job))
        assert job.kind == "transfer.import" and job.state == "queued"
        assert f'data-poll="/api/v1/jobs/{job.id}"'.encode() in answer.data
        polled = client.get(f"/api/v1/jobs/{job.id}")
        assert polled.status_code == 200 and polled.get_json()["state"] == "queued"
        from app.services.jobs import run_job

        run_job(job.id)
        assert client.get(f"/api/v1/jobs/{job.id}").get_json()["state"] == "succeeded"
        assert db.session.scalar(select(func.count()).select_from(Scan)) == 2


def test_raw_csv_body_is_accepted(client, factory, tmp_path):
    project, content = _site(factory, tmp_path)
    headers = {**token_headers(client, "siteadmin"), "Content-Type": "text/csv"}
    answer = client.post(f"/api/v1/projects/{project.id}/import?dry_run=1", data=content, headers=headers)
    assert answer.status_code == 200 and answer.get_json()["dry_run"]
    assert MIQA_HEADER[0] == "project_name"
