"""Frames stored by identity: uploads under paths from their content hash, never by names; a migration
moves older uploads there; a project may only import locations under its own roots or files it owns."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import flask_migrate
from sqlalchemy import select

from app import create_app
from app.db import Frame, Scan, db
from app.services import projects
from tests.app.test_frame_identity import _volume
from tests.app.test_transfer_api import _upload
from tests.app.transfer_helpers import write_csv
from tests.conftest import _test_settings
from tests.factories import token_headers


def _post(client, headers, image: bytes, **form):
    return client.post("/api/v1/frames", headers=headers, content_type="multipart/form-data",
                       data={**form, "file": (io.BytesIO(image), "upload.nii.gz")})


def test_colliding_names_keep_both_images_intact(client, factory):
    admin = factory.user("siteadmin")
    project = factory.project("Site", creator=admin)
    factory.member(project, "tier1", "rev1")
    headers = token_headers(client, "rev1")
    root = Path(factory.app.config["DATA_ROOT"])
    images = [_volume(str(root), f"elsewhere/{n}.nii.gz", n).read_bytes() for n in (1, 2, 3)]
    existing = projects.get_or_create_scan(projects.get_or_create_experiment(project, "up"), "c_d")
    db.session.commit()
    bodies = []
    for target, image in zip(({"scan_name": "c d"}, {"scan_name": f"c_d-{existing.id}"}, {"scan": str(existing.id)}),
                             images):
        answer = _post(client, headers, image, project=str(project.id), experiment="up", **target)
        assert answer.status_code == 201, answer.get_json()
        bodies.append(answer.get_json())
    refused = _post(client, headers, b"not an image", project=str(project.id), experiment="up", scan_name="c/d")
    assert refused.status_code in (400, 422)
    assert len({body["file_location"] for body in bodies}) == 3
    for body, image in zip(bodies, images):
        digest = hashlib.sha256(image).hexdigest()
        assert digest in body["file_location"] and "c_d" not in body["file_location"]
        assert (root / body["file_location"]).read_bytes() == image and body["checksum"] == digest
    assert not list(root.rglob("*.tmp*")), "no temporary file is left behind"


def test_the_same_image_uploaded_twice_shares_one_file_that_a_failed_upload_keeps(client, factory):
    admin = factory.user("siteadmin")
    project = factory.project("Site", creator=admin)
    factory.member(project, "tier1", "rev1")
    headers = token_headers(client, "rev1")
    image = _volume(factory.app.config["DATA_ROOT"], "elsewhere/1.nii.gz", 1).read_bytes()
    first = _post(client, headers, image, project=str(project.id), experiment="up", scan_name="a")
    assert first.status_code == 201
    again = _post(client, headers, image, project=str(project.id), experiment="up", scan_name="a")
    assert again.status_code == 409
    second = _post(client, headers, image, project=str(project.id), experiment="up", scan_name="b")
    assert second.status_code == 201 and second.get_json()["file_location"] == first.get_json()["file_location"]
    assert (Path(factory.app.config["DATA_ROOT"]) / first.get_json()["file_location"]).read_bytes() == image


def test_a_project_cannot_import_another_projects_upload(client, factory, tmp_path):
    owner = factory.user("owner")
    theirs = factory.project("Theirs", creator=owner)
    mine = factory.project("Mine", creator=factory.user("attacker"))
    image = _volume(factory.app.config["DATA_ROOT"], "elsewhere/1.nii.gz", 1).read_bytes()
    uploaded = _post(client, token_headers(client, "owner"), image, project=str(theirs.id), experiment="e",
                     scan_name="s")
    assert uploaded.status_code == 201
    location = uploaded.get_json()["file_location"]

    def row(project: str) -> list:
        return [project, "e", "stolen", "T1", 0, location] + [""] * 10

    stolen = _upload(client, f"/api/v1/projects/{mine.id}/import",
                     write_csv(tmp_path / "steal.csv", [row("Mine")]).read_bytes(), token_headers(client, "attacker"))
    assert stolen.status_code == 400, stolen.get_json()
    assert "project" in str(stolen.get_json()) and "root" in str(stolen.get_json())
    assert db.session.scalar(select(Scan).where(Scan.name == "stolen")) is None
    own = _upload(client, f"/api/v1/projects/{theirs.id}/import",
                  write_csv(tmp_path / "own.csv", [row("Theirs")]).read_bytes(), token_headers(client, "owner"))
    assert own.status_code in (200, 202), own.get_json()


def test_configured_project_roots_bound_import_locations(make_app, tmp_path):
    app = make_app(PROJECT_ROOTS=["projects/{project_id}"])
    with app.app_context():
        from tests.factories import Factory

        factory = Factory(app)
        client = app.test_client()
        project = factory.project("Site", creator=factory.user("siteadmin"))
        factory.nifti(f"projects/{project.id}/a.nii.gz", shape=(16, 16, 16))
        factory.nifti("shared/b.nii.gz", shape=(16, 16, 16))
        headers = token_headers(client, "siteadmin")
        url = f"/api/v1/projects/{project.id}/import"
        outside = [["Site", "e", "b", "T1", 0, "shared/b.nii.gz"] + [""] * 10]
        refused = _upload(client, url, write_csv(tmp_path / "out.csv", outside).read_bytes(), headers)
        assert refused.status_code == 400 and "root" in str(refused.get_json())
        inside = [["Site", "e", "a", "T1", 0, f"projects/{project.id}/a.nii.gz"] + [""] * 10]
        done = _upload(client, url, write_csv(tmp_path / "in.csv", inside).read_bytes(), headers)
        assert done.status_code in (200, 202), done.get_json()


def test_the_migration_moves_existing_uploads_to_their_identity_paths(database_factory, tmp_path):
    app = create_app(_test_settings(tmp_path / "instance", database_factory("uploads")))
    with app.app_context():
        flask_migrate.upgrade(revision="0003")
        root = Path(app.config["DATA_ROOT"])
        old = _volume(str(root), "uploads/1/up/a_b/0_upload.nii.gz", 1)
        content = old.read_bytes()
        kept = _volume(str(root), "site/kept.nii.gz", 2)
        scan = projects.get_or_create_scan(projects.get_or_create_experiment(projects.create_project("Old", None),
                                                                             "up"), "a b")
        projects.add_frame(scan, 0, "uploads/1/up/a_b/0_upload.nii.gz")
        projects.add_frame(scan, 1, "site/kept.nii.gz")
        db.session.commit()
        db.session.remove()

        flask_migrate.upgrade()
        locations = dict(db.session.execute(select(Frame.frame_number, Frame.file_location)).all())
        digest = hashlib.sha256(content).hexdigest()
        assert digest in locations[0] and "a_b" not in locations[0]
        assert (root / locations[0]).read_bytes() == content and not old.exists()
        assert locations[1] == "site/kept.nii.gz" and kept.is_file()
        db.session.remove()
        db.engine.dispose()
