"""The Python client against a live server and worker: the loop scripted (import, list, decide, export,
train, wait, promote, suggestions, predict) and each refusal as its typed exception."""
from __future__ import annotations

import csv
import inspect
import io
import json
import re

import pytest

import qcloop_client.client as client_module
from qcloop_client import (
    AuthError,
    Client,
    Conflict,
    ConnectionFailed,
    InvalidInput,
    JobFailed,
    NotFound,
    QcloopError,
    ServerError,
)
from tests.client.conftest import N_SCANS, PROJECT, REVIEWERS


@pytest.fixture
def client(server):
    with server.client() as logged_in:
        yield logged_in


@pytest.mark.slow
def test_lists_page_by_page_decide_and_export(server, trained, client, monkeypatch, tmp_path):
    scan_pages = []
    client._http.event_hooks["request"].append(
        lambda request: scan_pages.append(request.url) if request.url.path == "/api/v1/scans" else None)
    monkeypatch.setattr(client_module, "PAGE_SIZE", 5)
    scans = client.scans(project=PROJECT).to_list()
    assert len({scan["id"] for scan in scans}) == N_SCANS == len(scans)
    assert [url.params["offset"] for url in scan_pages] == ["0", "5", "10", "15"]
    assert {scan["name"] for scan in client.scans(experiment=scans[0]["experiment"])} <= {s["name"] for s in scans}
    assert {e["name"] for e in client.experiments(PROJECT)} == {"visit1", "visit2"}
    assert PROJECT in [p["name"] for p in client.projects()]  # the command line's loop may add its own
    assert client.project(trained["project"]["id"])["name"] == PROJECT

    first = next(scan for scan in scans if scan["name"] == "scan0")
    with client.locked(first["experiment"]) as experiment:
        assert experiment["lock_owner"] is not None
        made = client.create_decision(first["id"], "Q?", note="checked from a script", present=["ghosting_motion"],
                                      location={"i": 3, "j": 4, "k": 5})
    assert client.experiment(first["experiment"])["lock_owner"] is None
    assert made["decision"] == "Q?" and made["artifacts"]["present"] == ["ghosting_motion"]
    assert [d["id"] for d in client.decisions(scan=first["id"])][0] == made["id"]

    frame = client.decisions_frame(PROJECT)
    assert len(frame) == N_SCANS + 1
    assert set(frame["creator"]) == {*REVIEWERS, server.admin}
    assert frame.loc[frame["id"] == made["id"], "meaning"].item() == "questionable"
    assert frame.loc[frame["id"] == made["id"], "location"].item() == "i=3;j=4;k=5"
    assert str(frame["created"].dt.tz) == "UTC" and frame["created"].min().day == 1

    exported = {row["scan_name"]: row for row in csv.DictReader(io.StringIO(client.export(PROJECT)))}
    latest = {scan["name"]: scan["decisions"][0] for scan in client.scans(project=PROJECT)}
    assert {name: row["last_decision"] for name, row in exported.items()} == \
        {name: decision["decision"] for name, decision in latest.items()}
    assert exported["scan0"]["last_decision_note"] == "checked from a script"
    path = client.export(PROJECT, "json", tmp_path / "out" / "full.json")
    full = json.loads(path.read_text(encoding="utf-8"))
    assert sum(len(scan["decisions"]) for experiment in full["projects"][PROJECT]["experiments"].values()
               for scan in experiment["scans"].values()) == N_SCANS + 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["full.json"]  # no temporary file left


@pytest.mark.slow
def test_frames_upload_download_and_vocabulary(server, trained, client, tmp_path):
    scan = next(iter(client.scans(project=PROJECT)))
    frame = client.frame(scan["frames"][0]["id"])
    assert [f["id"] for f in client.frames(scan=scan["id"])] == [frame["id"]]
    saved = client.download_frame(frame["id"], tmp_path)
    assert saved.read_bytes() == (server.data_root / "client" / f"{scan['name']}.nii.gz").read_bytes()
    uploaded = client.upload_frame(saved, project=PROJECT, experiment="uploads", scan_name="uploaded")
    assert uploaded["checksum"] == frame["checksum"] and uploaded["file_location"].startswith("uploads/")
    vocabulary = client.vocabulary(PROJECT)
    assert [option["key"] for option in vocabulary["decisions"]] == ["U", "UE", "Q?", "UN"]
    assert "ghosting_motion" in {entry["key"] for entry in vocabulary["artifacts"]}


@pytest.mark.slow
def test_training_promotion_evaluations_and_prediction(server, trained, client):
    run = client.training_run(trained["run"]["id"])  # the command line's tests may have promoted it
    assert run["state"] == "succeeded", run["error"]
    assert run["model_version"]["version"] == "1" and run["metrics"]["epochs_run"] == 2
    assert [r["id"] for r in client.training_runs(PROJECT)] == [run["id"]]
    job = client.job(run["job_id"])
    assert job["state"] == "succeeded" and job["progress"] == 1.0 and client.wait(run, progress=False) == job
    if run["model_version"]["alias"] != "champion":  # the gate held it back: refused, then forced
        with pytest.raises(Conflict) as refused:
            client.promote(run)
        assert refused.value.status == 409 and "comparison" in refused.value.body
        assert client.promote(run["id"], force=True)["forced"] is True
    with pytest.raises(Conflict, match="already the champion"):
        client.promote(run)
    models = client.models(PROJECT)
    assert [(v["version"], v["alias"]) for v in models["versions"]] == [("1", "champion")]
    for evaluation_job in models["evaluation_jobs"]:
        client.wait(evaluation_job, progress=False, timeout=300)
    scans = client.scans(project=PROJECT).to_list()
    assert {scan["suggestion"]["version"] for scan in scans if scan["frames"]} == {"1"}
    assert client.evaluations(scans[0]["id"])[0]["state"] == "scored"
    predicted = client.predict(PROJECT, server.data_root / "client" / "scan1.nii.gz")
    assert predicted["version"] == "1" and 0 <= predicted["scores"]["usable"] <= 1
    with pytest.raises(Conflict, match="already the champion"):
        client.make_champion(PROJECT, 1)
    with pytest.raises(InvalidInput) as bad:
        client.train(PROJECT, epochs=0)
    assert bad.value.status == 400 and bad.value.body["field"] == "epochs"


@pytest.mark.slow
def test_typed_errors_carry_the_servers_answer(server, trained, client):
    with pytest.raises(AuthError) as wrong:
        Client.login(server.url, server.admin, "not the password")
    assert wrong.value.status == 400 and "Unable to log in" in wrong.value.detail
    with pytest.raises(NotFound) as missing:
        client.scan(999_999)
    assert missing.value.status == 404 and missing.value.error == "not_found" and missing.value.body["detail"]
    with pytest.raises(NotFound, match="no project named"):
        client.project("no such project")
    with pytest.raises(InvalidInput) as invalid:
        client.create_project("")
    assert invalid.value.status == 400 and invalid.value.error == "invalid"
    with pytest.raises(Conflict):
        client.create_project(PROJECT)
    made = client.create_token("script", expires_in_days=1)
    with Client(server.url, made["token"]) as scripted:
        assert scripted.me()["username"] == server.admin
        client.revoke_token(made["id"])
        with pytest.raises(AuthError) as revoked:
            scripted.projects().to_list()
    assert revoked.value.status == 401 and revoked.value.detail == "Invalid token."
    assert [t["state"] for t in client.tokens() if t["id"] == made["id"]] == ["revoked"]
    with pytest.raises(ConnectionFailed, match="cannot reach"), Client("http://127.0.0.1:9", "x") as nowhere:
        nowhere.projects().to_list()
    assert issubclass(ServerError, QcloopError) and issubclass(JobFailed, QcloopError)


@pytest.mark.slow
def test_waiting_on_a_failed_job_raises_job_failed(server, trained, client):
    run = client.train(PROJECT, **{"min_labels": 1000, "arch": "resnet_small", "epochs": 1})
    with pytest.raises(JobFailed) as failed:
        client.wait(run, progress=False, interval=0.2, timeout=120)
    assert failed.value.body["state"] == "failed" and failed.value.body["error"]
    assert client.training_run(run["id"])["state"] == "failed"


def test_every_path_the_client_calls_is_in_the_openapi_description(server):
    """The client is written against the published description: each API path it names is described there."""
    with server.client() as client:
        spec = client._json("GET", "/api/v1/openapi.json")
    described = {re.sub(r"\{[^}]+\}", "{}", path) for path in spec["paths"]}
    named = {re.sub(r"\{[^}]+\}", "{}", "/api/v1" + path)
             for path in re.findall(r'f"\{API\}(/[^"]*)"', inspect.getsource(client_module))}
    assert len(named) >= 25 and named <= described, sorted(named - described)
