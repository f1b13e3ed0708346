"""The loop as users reach it: decisions imported from a MIQA CSV -> training run -> promotion ->
evaluation job -> every scan's suggestion names the new version; rollback brings the previous
version's suggestions back; an uploaded frame is scored without anyone asking; bad input refused."""
from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from app.db import Evaluation, Job, db
from app.services import projects
from tests.app.transfer_helpers import write_csv
from tests.conftest import SHARED_DATA
from tests.factories import login, token_headers

SMALL = {"arch": "resnet_small", "spatial_size": [32, 32, 32], "batch_size": 4, "min_labels": 2, "lr": 3e-3}
pytestmark = pytest.mark.usefixtures("two_torch_threads")


@pytest.fixture
def app(make_app, tmp_path):
    app = make_app(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
                   MLFLOW_ARTIFACT_ROOT=str(tmp_path / "mlartifacts"), PREDICT_MAX_BYTES=2_000_000)
    with app.app_context():
        yield app
        db.session.rollback()


def _import_labelled(client, factory, tmp_path, headers, n_scans=16) -> int:
    """Phantom volumes under the data root and a MIQA CSV of reviewer decisions; the project's id."""
    rows = []
    for index in range(n_scans):
        ghosted = index % 2 == 1
        factory.nifti(f"loop/scan{index}.nii.gz", seed=200 + index, artifact="ghosting" if ghosted else None)
        rows.append(["Loop", "exp", f"scan{index}", "T1", 0, f"loop/scan{index}.nii.gz", "", f"subject{index}", "", "",
                     "UN" if ghosted else "U", "reviewer@site.org", "", "2026-01-01T00:00:00+00:00",
                     "ghosting_motion" if ghosted else "", ""])
    source = write_csv(tmp_path / "loop.csv", rows)
    with open(source, "rb") as handle:
        answer = client.post("/api/v1/global/import", data={"file": (handle, "loop.csv")}, headers=headers)
    assert answer.status_code == 200, answer.get_json()
    return projects.find_project("Loop").id


def _suggested_versions(client, project_id, headers) -> dict[str, str | None]:
    scans = client.get(f"/api/v1/scans?project={project_id}&limit=100", headers=headers).get_json()["results"]
    return {scan["name"]: scan["suggestion"]["version"] if scan["suggestion"] else None for scan in scans}


@pytest.mark.slow
def test_imported_decisions_train_promote_score_and_roll_back(app, client, factory, tmp_path):
    admin = factory.user(superuser=True)
    headers = token_headers(client, admin.username)
    project_id = _import_labelled(client, factory, tmp_path, headers)
    base = f"/api/v1/projects/{project_id}"
    first = client.post(f"{base}/training-runs", json={"epochs": 6, **SMALL}, headers=headers).get_json()
    assert first["state"] == "succeeded", first["error"]
    if first["model_version"]["alias"] != "champion":  # the gate held it back: promoting it is the user's call
        client.post(f"{base}/training-runs/{first['id']}/promote", json={"force": True}, headers=headers)
    assert set(_suggested_versions(client, project_id, headers).values()) == {"1"}
    scan = client.get(f"/api/v1/scans?project={project_id}&limit=1", headers=headers).get_json()["results"][0]
    suggestion = scan["suggestion"]
    assert suggestion["model"] == projects.find_project("Loop").model_name
    assert suggestion["mlflow_run_id"] == first["mlflow_run_id"]
    assert set(suggestion["scores"]) == {"usable", "ghosting_motion"} and 0 <= suggestion["scores"]["usable"] <= 1
    frame = client.get(f"/api/v1/frames/{scan['frames'][0]['id']}", headers=headers).get_json()
    assert frame["suggestion"]["version"] == "1"

    second = client.post(f"{base}/training-runs", json={"epochs": 2, "seed": 1, **SMALL}, headers=headers).get_json()
    assert second["state"] == "succeeded" and second["model_version"]["alias"] == "challenger"
    assert set(_suggested_versions(client, project_id, headers).values()) == {"1"}  # a challenger suggests nothing
    promoted = client.post(f"{base}/training-runs/{second['id']}/promote", json={"force": True}, headers=headers)
    assert promoted.status_code == 200
    assert set(_suggested_versions(client, project_id, headers).values()) == {"2"}
    history = client.get(f"/api/v1/scans/{scan['id']}/evaluations", headers=headers).get_json()["results"]
    assert [row["version"] for row in history] == ["2", "1"] and {row["state"] for row in history} == {"scored"}

    models = client.get(f"{base}/models", headers=headers).get_json()
    assert [(v["version"], v["alias"]) for v in models["versions"]] == [("2", "champion"), ("1", None)]
    assert models["agreement"]["version"] == "2" and models["agreement"]["outputs"][0]["scans"] == 16
    rolled = client.post(f"{base}/models/1/rollback", json={}, headers=headers)
    assert rolled.status_code == 200 and rolled.get_json()["alias"] == "champion"
    assert set(_suggested_versions(client, project_id, headers).values()) == {"1"}
    assert client.post(f"{base}/models/1/rollback", json={}, headers=headers).status_code == 409
    assert client.post(f"{base}/models/9/rollback", json={}, headers=headers).status_code == 404
    page = login(app.test_client(), admin.username).get(f"/projects/{project_id}/models")
    assert page.status_code == 200
    assert b'id="auc-plot"' in page.data and b'data-version="2"' in page.data and b'id="agreement"' in page.data

    path = factory.nifti("uploads/new.nii.gz", seed=999)
    with open(path, "rb") as handle:
        uploaded = client.post("/api/v1/frames", headers=headers, data={
            "file": (handle, "new.nii.gz"), "frame_number": "0", "project": str(project_id), "experiment": "exp",
            "scan_name": "uploaded"})
    assert uploaded.status_code == 201, uploaded.get_json()
    scored = db.session.scalars(select(Evaluation).where(Evaluation.frame_id == uploaded.get_json()["id"])).all()
    assert [(row.model_version.version, row.state) for row in scored] == [("1", "scored")]

    with open(path, "rb") as handle:
        predicted = client.post(f"{base}/predict", data={"file": (handle, "new.nii.gz")}, headers=headers)
    assert predicted.status_code == 200, predicted.get_json()
    assert predicted.get_json()["version"] == "1" and set(predicted.get_json()["scores"]) == {"usable", "ghosting_motion"}
    assert db.session.scalar(select(Evaluation).where(Evaluation.frame_id.is_(None))) is None  # nothing stored


def test_evaluation_and_predict_refuse_bad_input(app, client, factory):
    admin = factory.user(superuser=True)
    headers = token_headers(client, admin.username)
    project = factory.project("Empty", creator=admin)
    base = f"/api/v1/projects/{project.id}"
    none_yet = client.post(f"{base}/evaluations", json={}, headers=headers)
    assert none_yet.status_code == 409 and "no champion model yet" in none_yet.get_json()["detail"]
    assert client.post(f"{base}/evaluations", json={"scope": "some"}, headers=headers).status_code == 400
    assert client.post(f"{base}/evaluations", json={"version": "7"}, headers=headers).status_code == 404
    assert client.post(f"{base}/evaluations", json={"when": 1}, headers=headers).status_code == 400
    from app.services import model_versions

    model_versions.import_miqa(project, SHARED_DATA / "miqa-weights" / "miqaT1-val0.pth", admin)
    assert db.session.scalar(select(Job).where(Job.kind == "evaluation")).state == "succeeded"  # no frames yet
    text = client.post(f"{base}/predict", data=b"hello", headers={**headers, "Content-Type": "application/octet-stream"})
    assert text.status_code == 400 and "not a NIfTI" in text.get_json()["detail"]
    big = client.post(f"{base}/predict", data=io.BytesIO(b"\x1f\x8b" + b"0" * 2_000_000),
                      headers={**headers, "Content-Type": "application/octet-stream"})
    assert big.status_code == 413
    fake = client.post(f"{base}/predict?filename=x.nii.gz", data=b"\x1f\x8b not really gzip",
                       headers={**headers, "Content-Type": "application/octet-stream"})
    assert fake.status_code == 400
    other = factory.project("Other", creator=admin)
    assert client.post(f"/api/v1/projects/{other.id}/models/1/rollback", json={}, headers=headers).status_code == 404


def test_a_cancelled_evaluation_leaves_the_champions_suggestions_and_a_changed_vocabulary_is_refused(
        app, client, factory, monkeypatch):
    from app.db import ArtifactEntry
    from app.services import jobs, model_versions

    admin = factory.user(superuser=True)
    headers = token_headers(client, admin.username)
    project = factory.project("Guarded", creator=admin)
    scans = [factory.scan(project, name=f"s{index}") for index in range(2)]
    weights = SHARED_DATA / "miqa-weights" / "miqaT1-val0.pth"
    first = model_versions.import_miqa(project, weights, admin)  # champion: scores both scans at once
    second = model_versions.import_miqa(project, weights, admin)
    assert (first.alias, second.alias) == ("champion", None)

    def cancelled(self, fraction, message=""):
        raise jobs.JobCancelled()

    monkeypatch.setattr(jobs.JobContext, "progress", cancelled)
    answer = client.post(f"/api/v1/projects/{project.id}/evaluations", json={"version": "2"}, headers=headers)
    assert answer.status_code == 202 and answer.get_json()["job"]["state"] == "cancelled"
    rows = db.session.scalars(select(Evaluation).where(Evaluation.model_version_id == second.id)).all()
    assert len(rows) == 2 and {row.state for row in rows} == {"failed"}
    assert all("did not complete: cancelled" in row.error for row in rows)
    monkeypatch.undo()
    for scan in scans:
        assert client.get(f"/api/v1/scans/{scan.id}", headers=headers).get_json()["suggestion"]["version"] == "1"

    entry = db.session.scalar(select(ArtifactEntry).where(ArtifactEntry.project_id == project.id,
                                                          ArtifactEntry.key == "ghosting_motion"))
    entry.retired = True
    db.session.commit()
    refused = client.post(f"/api/v1/projects/{project.id}/evaluations", json={"scope": "all"}, headers=headers)
    assert refused.status_code == 400 and "no longer has (ghosting_motion)" in refused.get_json()["detail"]


def test_frame_answers_carry_the_champions_suggestion_in_a_fixed_number_of_queries(app, client, factory):
    from app.services import model_versions
    from tests.app.test_review_pages import count_queries

    admin = factory.user(superuser=True)
    headers = token_headers(client, admin.username)
    project = factory.project("Framed", creator=admin)
    scans = [factory.scan(project, name=f"s{index}") for index in range(6)]
    model_versions.import_miqa(project, SHARED_DATA / "miqa-weights" / "miqaT1-val0.pth", admin)
    client.get("/api/v1/frames?limit=1", headers=headers)  # the token's first use of the day writes once
    with count_queries() as few:
        small = client.get("/api/v1/frames?limit=2", headers=headers).get_json()["results"]
    with count_queries() as many:
        large = client.get("/api/v1/frames?limit=6", headers=headers).get_json()["results"]
    assert len(small) == 2 and len(large) == 6 == len(scans)
    assert all(frame["suggestion"]["version"] == "1" and frame["suggestion"]["frame"] == frame["id"] for frame in large)
    assert len(many) <= len(few), "queries grow with the number of frames (N+1)"
    one = client.get(f"/api/v1/frames/{large[0]['id']}", headers=headers).get_json()
    assert one["suggestion"] == large[0]["suggestion"]
