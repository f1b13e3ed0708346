"""Creating projects directly: POST /api/v1/projects, the form on the projects list, `qcloop projects
create`, and import/sync into a project they create; only superusers may, and every way is audited."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import func, select

from app.db import ArtifactEntry, AuditEvent, Membership, Project, db
from app.services import projects, vocabulary
from tests.app.transfer_helpers import write_csv
from tests.factories import login, token_headers


def _count() -> int:
    return db.session.scalar(select(func.count()).select_from(Project))


def _membership(project_id: int) -> list[tuple[str, str]]:
    return [(m.user.username, m.role) for m in db.session.scalars(
        select(Membership).where(Membership.project_id == project_id))]


def test_api_creates_a_project_for_superusers_only(factory, client):
    factory.user("root", superuser=True)
    other = factory.project("Other")
    factory.member(other, "admin", "lead")
    headers = token_headers(client, "root")

    answer = client.post("/api/v1/projects", json={"name": "  Lab A  "}, headers=headers)
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert (body["name"], body["my_role"], body["model_name"]) == ("Lab A", "admin", "qcloop-lab-a")
    assert _membership(body["id"]) == [("root", "admin")]
    assert [o.key for o in vocabulary.decision_options(body["id"])] == ["U", "UE", "Q?", "UN"]
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "project.create",
                                                       AuditEvent.project_id == body["id"]))
    assert event.actor_id == db.session.scalar(select(Membership.user_id).where(Membership.project_id == body["id"]))
    assert client.get(f"/api/v1/projects/{body['id']}", headers=headers).get_json()["name"] == "Lab A"

    taken = client.post("/api/v1/projects", json={"name": "Lab A"}, headers=headers)
    assert taken.status_code == 409 and "already exists" in taken.get_json()["detail"]
    for bad in ({"name": ""}, {"name": "   "}, {"name": "a\tb"}, {"name": "x" * 256}, {}, {"name": 5},
                {"name": "B", "template": "No such project"}):
        refused = client.post("/api/v1/projects", json=bad, headers=headers)
        assert refused.status_code == 400, (bad, refused.get_json())
    assert "template" in client.post("/api/v1/projects", json={"name": "B", "template": "Nope"},
                                     headers=headers).get_json()["detail"]

    before = _count()
    lead = client.post("/api/v1/projects", json={"name": "Mine"}, headers=token_headers(client, "lead"))
    assert lead.status_code == 403
    assert client.post("/api/v1/projects", json={"name": "Anyone"}).status_code == 401
    assert _count() == before


def test_a_template_gives_its_active_vocabularies_and_settings(factory, client):
    root = factory.user("root", superuser=True)
    source = factory.project("Template")
    factory.member(source, "tier1", "reviewer")
    vocabulary.add_entry(ArtifactEntry, source.id, {"key": "zipper", "label": "Zipper"}, root)
    lesions = next(e for e in vocabulary.artifact_entries(source.id) if e.key == "lesions")
    vocabulary.update_entry(ArtifactEntry, source.id, lesions.id, {"retired": True}, root)
    projects.update_settings(source, {"min_labels_per_class": 7, "questionable": 0.5}, root)

    answer = client.post("/api/v1/projects", json={"name": "Copy", "template": "Template"},
                         headers=token_headers(client, "root"))
    assert answer.status_code == 201
    copy = db.session.get(Project, answer.get_json()["id"])
    keys = [e.key for e in vocabulary.artifact_entries(copy.id, include_retired=True)]
    assert "zipper" in keys and "lesions" not in keys
    assert keys == [e.key for e in vocabulary.artifact_entries(source.id)]
    assert projects.settings_of(copy).min_labels_per_class == 7 and projects.settings_of(copy).questionable == 0.5
    assert _membership(copy.id) == [("root", "admin")]  # members are not copied
    assert copy.model_name == "qcloop-copy"


def test_the_projects_page_form(factory, client):
    factory.user("root", superuser=True)
    factory.project("Existing")
    login(client, "root")
    page = client.get("/").get_data(as_text=True)
    assert 'id="new-project"' in page and '<option value="Existing">Existing</option>' in page

    created = client.post("/projects", data={"name": "From the page", "template": "Existing"})
    assert created.status_code == 302
    project = projects.find_project("From the page")
    assert created.headers["Location"].endswith(f"/projects/{project.id}")
    shown = client.get(created.headers["Location"]).get_data(as_text=True)
    assert "From the page" in shown and "you are its admin" in shown

    again = client.post("/projects", data={"name": "From the page"}, follow_redirects=True)
    assert again.status_code == 200 and "already exists" in again.get_data(as_text=True)

    client.post("/logout")
    reviewer = factory.member(project, "admin", "lead")
    login(client, reviewer.username)
    assert 'id="new-project"' not in client.get("/").get_data(as_text=True)
    before = _count()
    assert client.post("/projects", data={"name": "Not mine"}).status_code == 403
    assert _count() == before


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    return {**os.environ, "QCLOOP_INSTANCE_PATH": str(tmp_path / "instance"), "DATABASE_URL": url,
            "QCLOOP_DATA_ROOT": str(tmp_path / "data")}


def _qcloop(env, *args, cwd: Path | None = None):
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=cwd)


@pytest.mark.slow
def test_the_command_line_creates_projects_and_imports_or_syncs_into_new_ones(tmp_path, database_factory):
    env = _env(tmp_path, database_factory("projects_cli"))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    assert _qcloop(env, "db", "upgrade").returncode == 0
    assert _qcloop(env, "users", "create", "alice", "--password", "a-long-password-1").returncode == 0

    made = _qcloop(env, "projects", "create", "Lab")
    assert made.returncode == 0 and "created project Lab" in made.stdout, made.stderr
    copied = _qcloop(env, "projects", "create", "Lab 2", "--from-template", "Lab", "--admin", "alice")
    assert copied.returncode == 0 and "from template Lab, admin alice" in copied.stdout, copied.stderr
    taken = _qcloop(env, "projects", "create", "Lab")
    assert taken.returncode == 1 and "a project named 'Lab' already exists" in taken.stderr
    missing = _qcloop(env, "projects", "create", "Lab 3", "--from-template", "Nope")
    assert missing.returncode == 1 and "no project named 'Nope' to use as a template" in missing.stderr

    data = tmp_path / "data"
    (data / "site" / "visit1").mkdir(parents=True)
    for name in ("sub-01_T1.nii.gz", "sub-02_T2.nii.gz"):
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), dtype=np.uint8), np.eye(4)), str(data / "site/visit1" / name))
    (data / "site" / "visit1" / "README").write_text("scanned on Monday")
    rows = [["Imported", "visit1", "sub-01", "T1", 0, "site/visit1/sub-01_T1.nii.gz"]]
    header = ["project_name", "experiment_name", "scan_name", "scan_type", "frame_number", "file_location"]
    source = write_csv(tmp_path / "rows.csv", rows, header=header)
    broken = write_csv(tmp_path / "broken.csv", [["Imported", "visit1", "s", "T1", "zero", rows[0][5]]], header=header)
    absent = _qcloop(env, "import", str(broken), "--project", "Imported")
    assert absent.returncode == 1 and "no project named 'Imported' (--create-project creates it)" in absent.stderr
    failed = _qcloop(env, "import", str(broken), "--project", "Imported", "--create-project")
    assert failed.returncode == 1 and "nothing imported" in failed.stderr
    assert "no project named 'Imported'" in _qcloop(env, "import", str(broken), "--project", "Imported").stderr
    imported = _qcloop(env, "import", str(source), "--project", "Imported", "--create-project")
    assert imported.returncode == 0 and "frames added: 1" in imported.stdout, imported.stderr

    synced = _qcloop(env, "sync", "--project", "Synced", "--create-project", "--source", "data/site", cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    assert "creating project Synced" in synced.stdout and "added 2 file(s), skipped 1" in synced.stdout
    assert "skipped: visit1/README: not an image file" in synced.stderr
    again = _qcloop(env, "sync", "--project", "Synced", "--source", str(data / "site"))
    assert again.returncode == 0 and "2 file(s) already in the project" in again.stdout
    assert "nothing new to add (1 file(s) skipped)" in again.stdout and "already exists" not in again.stderr
