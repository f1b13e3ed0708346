"""DICOMweb sync against a real Orthanc (tests/orthanc.py): the source alone (list, fetch, push, refusals),
then the whole cycle through the sync engine and the API."""
from __future__ import annotations

import csv
import gzip
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from flask import current_app
from sqlalchemy import func, select

from app.cli import sync_command
from app.db import Frame, Job, SyncRun, SyncSource, db
from app.services import imaging
from app.services.sync import engine
from app.services.sync.base import Outgoing, SourceError
from app.services.sync.dicomweb import DicomwebSource, scan_type
from tests.factories import Factory, token_headers, write_dicom_volume
from tests.orthanc import Orthanc, free_port, running_orthanc

ROOT = "1.2.826.0.1.3680043.8.498.7"  # a UID root for test data
STUDY_A, STUDY_B = f"{ROOT}.1", f"{ROOT}.2"
T1, FLAIR, T2 = f"{ROOT}.1.1", f"{ROOT}.1.2", f"{ROOT}.2.1"


def store_series(orthanc: Orthanc, tmp_path: Path, uid: str, *, study: str, number: int, description: str,
                 patient: str = "P001", study_description: str = "Brain MRI", seed: int = 0,
                 slices: int = 16) -> None:
    """A ``slices`` x 32 x 32 series written with pydicom from a volume and stored in Orthanc
    (``POST /instances``)."""
    folder = tmp_path / "dicom" / uid
    volume = np.random.default_rng(seed).integers(0, 1000, (slices, 32, 32)).astype(np.int16)
    write_dicom_volume(folder, volume, uid, study=study, description=description, patient=patient,
                       study_description=study_description, number=number)
    orthanc.store(folder)


def source(orthanc: Orthanc, **credentials: str) -> DicomwebSource:
    return DicomwebSource(orthanc.dicomweb, **({"username": orthanc.username, "password": orthanc.password}
                                               | credentials))


def outgoing(key: str, note: str = "fine") -> Outgoing:
    return Outgoing(key=key, scan_id=1, decision="usable", label="Usable", code="U",
                    artifacts={"ghosting": "absent", "motion": "present"},
                    note=note, reviewer="alice", created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
                    metadata={})


def test_lists_series_as_scans_then_only_what_is_new(orthanc, tmp_path):
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1 MPRAGE sag")
    store_series(orthanc, tmp_path, FLAIR, study=STUDY_A, number=2, description="t2_flair_tra")
    dicomweb = source(orthanc)

    first = dicomweb.list(None)
    assert first.incremental and first.skipped == []
    assert [(i.key, i.experiment, i.subject, i.session, i.scan_name, i.scan_type, i.version) for i in first.items] == [
        (f"{STUDY_A}/{T1}", "Brain MRI", "P001", STUDY_A, "1 T1 MPRAGE sag", "T1", "16 instances"),
        (f"{STUDY_A}/{FLAIR}", "Brain MRI", "P001", STUDY_A, "2 t2_flair_tra", "FLAIR", "16 instances")]
    metadata = first.items[0].metadata
    assert metadata["SeriesDescription"] == "T1 MPRAGE sag" and metadata["Modality"] == "MR"
    assert metadata["PatientID"] == "P001" and metadata["SeriesInstanceUID"] == T1
    assert dicomweb.url == orthanc.dicomweb  # canonical, no credentials

    assert dicomweb.list(first.cursor).items == []

    # A second study described alike is another experiment; only its series is listed.
    store_series(orthanc, tmp_path, T2, study=STUDY_B, number=1, description="T2 TSE", patient="P002")
    third = dicomweb.list(first.cursor)
    assert [(i.key, i.experiment, i.subject, i.scan_type) for i in third.items] == [
        (f"{STUDY_B}/{T2}", "Brain MRI P002", "P002", "T2")]
    assert dicomweb.list(third.cursor).items == []


def test_fetch_writes_the_series_as_a_dicom_folder(app, orthanc, tmp_path):
    app.config["DICOMWEB_URLS"] = [orthanc.dicomweb]
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1 MPRAGE")
    dicomweb = source(orthanc)
    item = dicomweb.list(None).items[0]

    into = tmp_path / "data" / "fetched"
    first = dicomweb.fetch(item, into)
    folder = first.parent
    assert folder.parent == into and [p.name for p in into.iterdir()] == [folder.name]
    assert len(list(folder.glob("*.dcm"))) == 16 and imaging.frame_files(first)[0] == first
    assert imaging.read_info(first).shape == [32, 32, 16]


def test_a_series_that_cannot_be_fetched_leaves_nothing(app, orthanc, tmp_path):
    app.config["DICOMWEB_URLS"] = [orthanc.dicomweb]
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1 MPRAGE")
    dicomweb = source(orthanc)
    listing = dicomweb.list(None)
    orthanc.request("DELETE", f"series/{orthanc.series_id(T1)}")

    into = tmp_path / "fetched"
    with pytest.raises(SourceError) as refused:
        dicomweb.fetch(listing.items[0], into)
    assert orthanc.dicomweb in refused.value.message and T1 in refused.value.message
    assert list(into.iterdir()) == []

    # The engine takes a series that failed out of the cursor it stores: back on the server, it is listed again.
    dicomweb.forget(listing.cursor, listing.items[0].key)
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1 MPRAGE")
    assert [item.key for item in dicomweb.list(listing.cursor).items] == [f"{STUDY_A}/{T1}"]


def test_push_writes_each_decision_as_orthanc_series_metadata(orthanc, tmp_path):
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1 MPRAGE")
    dicomweb = source(orthanc)

    pushed = dicomweb.push([outgoing(f"{STUDY_A}/{T1}"), outgoing(f"{STUDY_A}/{ROOT}.9.9")], tmp_path / "run")
    assert pushed.pushed == 1 and pushed.file is None
    assert pushed.failed == [(f"{STUDY_A}/{ROOT}.9.9", "the server no longer holds the series")]
    assert orthanc.decision(T1) == {"decision": "usable", "label": "Usable", "code": "U",
                                    "artifacts": {"ghosting": "absent", "motion": "present"},
                                    "note": "fine", "reviewer": "alice", "time": "2026-01-02T03:04:05+00:00"}


def test_an_orthanc_without_the_metadata_declared_says_how_to_declare_it(tmp_path):
    (tmp_path / "orthanc").mkdir()
    with running_orthanc(tmp_path / "orthanc", declare_metadata=False) as bare:
        store_series(bare, tmp_path, T1, study=STUDY_A, number=1, description="T1 MPRAGE")
        pushed = source(bare).push([outgoing(f"{STUDY_A}/{T1}")], tmp_path / "run")
    assert pushed.pushed == 0 and pushed.failed == [(f"{STUDY_A}/{T1}", (
        'Orthanc refused the metadata QcloopDecision (HTTP 404): declare it in the server\'s configuration, '
        '"UserMetadata": {"QcloopDecision": 1024}'))]


class _NotOrthanc(BaseHTTPRequestHandler):
    """A server that is not Orthanc: every path is unknown."""

    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, *args) -> None:
        pass


def test_push_to_another_server_writes_the_decisions_file(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotOrthanc)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        dicomweb = DicomwebSource(f"dicomweb+http://127.0.0.1:{server.server_port}/pacs/dicomweb")
        pushed = dicomweb.push([outgoing("1.2/3.4", note="=SUM(A1)")], tmp_path / "run")
    finally:
        server.shutdown()
        server.server_close()
    assert pushed.pushed == 1 and pushed.failed == [] and pushed.file == tmp_path / "run" / "decisions.csv"
    with open(pushed.file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"study_instance_uid": "1.2", "series_instance_uid": "3.4", "decision": "usable",
                     "label": "Usable", "code": "U", "artifacts": "ghosting=absent;motion=present",
                     "note": "'=SUM(A1)", "reviewer": "alice", "time": "2026-01-02T03:04:05+00:00"}]


def test_wrong_password_is_a_clear_refusal(orthanc):
    with pytest.raises(SourceError) as refused:
        source(orthanc, password="wrong").list(None)
    assert refused.value.status == 400
    assert refused.value.message.startswith(orthanc.dicomweb + ": the server refused the credentials (HTTP 401)")
    with pytest.raises(SourceError) as checked:
        source(orthanc, password="wrong").check()
    assert checked.value.message == (f"{orthanc.dicomweb}: the server refused the credentials (HTTP 401) while "
                                     "checking the server (QIDO-RS search for one study); check the user name and "
                                     "password")
    source(orthanc).check()  # the right ones: no error


def test_an_unreachable_server_is_a_clear_refusal():
    url = f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(SourceError) as refused:
        DicomwebSource(url).list(None)
    assert refused.value.message.startswith(f"{url}: the server cannot be reached while searching the studies")
    assert "refused" in refused.value.message.lower()
    with pytest.raises(SourceError, match="the server cannot be reached while checking the server"):
        DicomwebSource(url).check()


@pytest.mark.parametrize("url", ["http://host/dicom-web", "dicomweb+ftp://host/dicom-web", "dicomweb+http:///x",
                                 "dicomweb+http://host:99999/x", "dicomweb+http://host/dicom-web/../tools",
                                 "dicomweb+http://host/dicom-web?x=1"])
def test_a_url_that_is_not_dicomweb_is_refused(url):
    with pytest.raises(SourceError, match="not a DICOMweb URL"):
        DicomwebSource(url)


def test_credentials_from_the_url_or_the_settings_never_in_its_name(make_app, orthanc, tmp_path):
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1")
    url = orthanc.dicomweb.replace("://", f"://{orthanc.username}:{orthanc.password}@")
    dicomweb = DicomwebSource(url)
    assert dicomweb.url == orthanc.dicomweb
    assert [item.key for item in dicomweb.list(None).items] == [f"{STUDY_A}/{T1}"]

    with make_app(DICOMWEB_URLS=[orthanc.dicomweb], DICOMWEB_USERNAME=orthanc.username,
                  DICOMWEB_PASSWORD=orthanc.password).app_context():
        assert [item.key for item in DicomwebSource(orthanc.dicomweb).list(None).items] == [f"{STUDY_A}/{T1}"]


@pytest.mark.parametrize("description, protocol, modality, expected", [
    ("T1 MPRAGE sag", "", "MR", "T1"), ("t2_flair_tra", "", "MR", "FLAIR"), ("Ax T2 TSE", "", "MR", "T2"),
    ("ep2d_diff_3scan", "", "MR", "DWI"), ("DTI 30 directions", "", "MR", "DTI"), ("", "rs_BOLD", "MR", "FMRI"),
    ("Localizer", "", "MR", None), ("Head 5mm", "", "CT", "CT")])
def test_scan_type_from_description_protocol_or_modality(description, protocol, modality, expected):
    def element(vr: str, value: str) -> dict:
        return {"vr": vr, "Value": [value]} if value else {"vr": vr}

    series = {"0008103E": element("LO", description), "00181030": element("LO", protocol),
              "00080060": element("CS", modality)}
    assert scan_type(series) == expected


# -- the whole cycle: API, engine, viewer, Orthanc ----------------------------------------------------------


@pytest.fixture
def make_pacs(make_app, orthanc):
    """An app that allows the test Orthanc (and ``more`` servers) and whose DICOMweb credentials are its own (or
    a wrong password): the worker reopens a source by its URL, which never keeps the password. Gives a project,
    its admin's token headers, a client."""
    contexts = []

    def make(password: str = orthanc.password, more: tuple[str, ...] = ()) -> dict:
        app = make_app(DICOMWEB_URLS=[orthanc.dicomweb, *more], DICOMWEB_USERNAME=orthanc.username,
                       DICOMWEB_PASSWORD=password)
        contexts.append(app.app_context())
        contexts[-1].push()
        factory = Factory(app)
        project = factory.project("pacs")
        factory.member(project, "admin", "pacs-admin")
        client = app.test_client()
        return {"project": project, "client": client, "headers": token_headers(client, "pacs-admin")}

    yield make
    for context in reversed(contexts):
        db.session.rollback()
        context.pop()


def sync(pacs, source: str) -> dict:
    """Sync through the API (the job runs at once in tests): the run, as sync-runs answers it (the job's result
    names it and repeats its counts)."""
    answer = pacs["client"].post(f"/api/v1/projects/{pacs['project'].id}/sync", json={"source": source},
                                 headers=pacs["headers"])
    assert answer.status_code == 202, answer.get_json()
    job = answer.get_json()["job"]
    assert job["state"] == "succeeded", job
    runs = get(pacs, f"/api/v1/projects/{pacs['project'].id}/sync-runs").get_json()
    run = next(run for run in runs if run["id"] == job["result"]["run_id"])
    assert {key: run[key] for key in job["result"] if key != "run_id"} == {
        key: value for key, value in job["result"].items() if key != "run_id"}
    return run


def get(pacs, url: str):
    answer = pacs["client"].get(url, headers=pacs["headers"])
    assert answer.status_code == 200, answer.data[:300]
    return answer


def scans_by_name(pacs) -> dict[str, dict]:
    found = {}
    for experiment in get(pacs, f"/api/v1/experiments?project={pacs['project'].id}").get_json()["results"]:
        for scan in get(pacs, f"/api/v1/scans?experiment={experiment['id']}").get_json()["results"]:
            found[scan["name"]] = scan | {"experiment_name": experiment["name"]}
    return found


def test_orthanc_sync_cycle_adds_new_series_once_and_writes_decisions_back(make_pacs, orthanc, tmp_path):
    pacs = make_pacs()
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1 MPRAGE sag", seed=1)
    store_series(orthanc, tmp_path, FLAIR, study=STUDY_A, number=2, description="t2_flair_tra", seed=2)

    first = sync(pacs, orthanc.dicomweb)
    assert first["added"] == 2 and first["failed"] == 0, repr(first)
    scans = scans_by_name(pacs)
    assert {name: (scan["experiment_name"], scan["scan_type"], scan["subject_id"]) for name, scan in scans.items()} \
        == {"1 T1 MPRAGE sag": ("Brain MRI", "T1", "P001"), "2 t2_flair_tra": ("Brain MRI", "FLAIR", "P001")}
    for scan in scans.values():  # each series is a frame the viewer reads
        frame = get(pacs, f"/api/v1/frames?scan={scan['id']}").get_json()["results"][0]
        volume = nib.Nifti1Image.from_bytes(gzip.decompress(get(pacs, f"/api/v1/frames/{frame['id']}/volume").data))
        assert volume.shape == (32, 32, 16)

    again = sync(pacs, orthanc.dicomweb)
    assert (again["added"], again["changed"], again["failed"]) == (0, 0, 0)

    store_series(orthanc, tmp_path, T2, study=STUDY_B, number=1, description="T2 TSE", patient="P002", seed=3)
    third = sync(pacs, orthanc.dicomweb)
    assert third["added_items"] == [f"{STUDY_B}/{T2}"]
    assert set(scans_by_name(pacs)) == {"1 T1 MPRAGE sag", "2 t2_flair_tra", "1 T2 TSE"}

    t1 = scans_by_name(pacs)["1 T1 MPRAGE sag"]
    client, headers = pacs["client"], pacs["headers"]
    assert client.post(f"/api/v1/experiments/{t1['experiment']}/lock", headers=headers).status_code == 200
    decided = client.post("/api/v1/scan-decisions", headers=headers, json={
        "scan": t1["id"], "decision": "U", "note": "sharp", "artifacts": {"present": [], "absent": ["lesions"]}})
    assert decided.status_code == 201, decided.get_json()

    pushed = sync(pacs, orthanc.dicomweb)
    assert (pushed["added"], pushed["pushed"], pushed["failed"]) == (0, 1, 0), pushed
    written = orthanc.decision(T1)
    assert (written["decision"], written["label"], written["code"]) == ("usable", "Usable", "U")
    assert (written["note"], written["reviewer"]) == ("sharp", "pacs-admin")
    assert written["artifacts"]["lesions"] == "absent"
    assert sync(pacs, orthanc.dicomweb)["pushed"] == 0  # nothing new to push

    runs = get(pacs, f"/api/v1/projects/{pacs['project'].id}/sync-runs").get_json()
    assert [run["added"] for run in runs] == [0, 0, 1, 0, 2] and {run["source"] for run in runs} == {orthanc.dicomweb}


def test_an_unreadable_series_fails_alone_with_its_reason_and_only_it_is_tried_again(make_pacs, orthanc, tmp_path):
    pacs = make_pacs()
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1 MPRAGE sag", seed=1)
    store_series(orthanc, tmp_path, FLAIR, study=STUDY_A, number=2, description="t2_flair_tra", seed=2,
                 slices=1)  # one 2-D slice: no volume to review
    fetched = Path(current_app.config["DATA_ROOT"]) / "uploads" / str(pacs["project"].id) / "sync"

    first = sync(pacs, orthanc.dicomweb)
    assert (first["state"], first["added_items"]) == ("succeeded", [f"{STUDY_A}/{T1}"])
    assert first["failed_items"] == [{"item": f"{STUDY_A}/{FLAIR}", "reason": (
        f"{orthanc.dicomweb}: series {FLAIR}: not one readable DICOM volume: 2-D image (32 x 32 x 1): qcloop "
        "reviews 3-D volumes")}]
    assert set(scans_by_name(pacs)) == {"1 T1 MPRAGE sag"}
    frames = db.session.scalars(select(Frame)).all()
    assert len(frames) == 1 and (Path(current_app.config["DATA_ROOT"]) / frames[0].file_location).is_file()
    files = [path for path in fetched.rglob("*") if path.is_file()]
    assert len(files) == 16 and {pydicom.dcmread(path).SeriesInstanceUID for path in files} == {T1}

    again = sync(pacs, orthanc.dicomweb)  # the failed series alone is listed and fetched again
    assert (again["added"], again["unchanged"], [line["item"] for line in again["failed_items"]]) == (
        0, 0, [f"{STUDY_A}/{FLAIR}"])
    assert len([path for path in fetched.rglob("*") if path.is_file()]) == 16

    store_series(orthanc, tmp_path, FLAIR, study=STUDY_A, number=2, description="t2_flair_tra", seed=2)
    fixed = sync(pacs, orthanc.dicomweb)
    assert (fixed["added_items"], fixed["failed_items"]) == ([f"{STUDY_A}/{FLAIR}"], [])
    assert set(scans_by_name(pacs)) == {"1 T1 MPRAGE sag", "2 t2_flair_tra"}


def test_a_sync_refused_by_the_server_or_unreachable_is_a_400_at_once_and_stores_nothing(make_pacs, orthanc):
    gone = f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web"
    pacs = make_pacs(password="wrong", more=(gone,))
    url, client, headers = f"/api/v1/projects/{pacs['project'].id}/sync", pacs["client"], pacs["headers"]
    refused = client.post(url, json={"source": orthanc.dicomweb, "every_minutes": 5}, headers=headers)
    assert refused.status_code == 400, refused.get_json()
    assert refused.get_json()["detail"].startswith(
        f"{orthanc.dicomweb}: the server refused the credentials (HTTP 401) while checking the server")

    unreachable = client.post(url, json={"source": gone}, headers=headers)
    assert unreachable.status_code == 400
    assert unreachable.get_json()["detail"].startswith(f"{gone}: the server cannot be reached while checking")

    page = client.post(f"/admin/projects/{pacs['project'].id}/sync", data={"source": orthanc.dicomweb},
                       headers=headers)  # the import page's form
    assert page.status_code == 400 and "Not synced:" in page.data.decode()
    assert "the server refused the credentials" in page.data.decode()
    assert (db.session.scalar(select(func.count(SyncSource.id))), db.session.scalar(select(func.count(Job.id))),
            db.session.scalar(select(func.count(SyncRun.id)))) == (0, 0, 0)  # nothing stored, no job queued
    assert get(pacs, f"/api/v1/projects/{pacs['project'].id}/sync-runs").get_json() == []

    # A run the worker starts (a schedule set before the password changed) records the refusal.
    with pytest.raises(SourceError, match="refused the credentials"):
        engine.run_sync(pacs["project"], orthanc.dicomweb, None)
    runs = get(pacs, f"/api/v1/projects/{pacs['project'].id}/sync-runs").get_json()
    assert [(run["state"], run["error"][:60]) for run in runs] == [
        ("failed", f"{orthanc.dicomweb}: the server refused the credentials"[:60])]


def test_a_series_deleted_on_the_server_is_reported_removed_and_its_scan_and_decision_stay(make_pacs, orthanc,
                                                                                             tmp_path):
    pacs = make_pacs()
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1 MPRAGE sag", seed=1)
    store_series(orthanc, tmp_path, FLAIR, study=STUDY_A, number=2, description="t2_flair_tra", seed=2)
    assert sync(pacs, orthanc.dicomweb)["added"] == 2
    flair = scans_by_name(pacs)["2 t2_flair_tra"]
    client, headers = pacs["client"], pacs["headers"]
    assert client.post(f"/api/v1/experiments/{flair['experiment']}/lock", headers=headers).status_code == 200
    decided = client.post("/api/v1/scan-decisions", headers=headers, json={"scan": flair["id"], "decision": "UN",
                                                                           "note": "motion"})
    assert decided.status_code == 201, decided.get_json()

    orthanc.request("DELETE", f"series/{orthanc.series_id(FLAIR)}")
    run = sync(pacs, orthanc.dicomweb)
    assert (run["removed"], run["removed_items"], run["added"], run["failed"]) == (1, [f"{STUDY_A}/{FLAIR}"], 0, 0)
    assert run["pushed"] == 0  # a removed series gets no decision pushed
    scans = scans_by_name(pacs)
    assert set(scans) == {"1 T1 MPRAGE sag", "2 t2_flair_tra"}  # the scan stays
    kept = get(pacs, f"/api/v1/scan-decisions?scan={flair['id']}").get_json()["results"]
    assert [(decision["decision"], decision["note"]) for decision in kept] == [("UN", "motion")]
    assert sync(pacs, orthanc.dicomweb)["removed"] == 0  # reported once

    # The whole study gone: its other series is reported too.
    orthanc.request("DELETE", f"series/{orthanc.series_id(T1)}")
    gone = sync(pacs, orthanc.dicomweb)
    assert gone["removed_items"] == [f"{STUDY_A}/{T1}"] and set(scans_by_name(pacs)) == set(scans)


def test_the_command_line_syncs_with_the_credentials_of_the_url(make_app, orthanc, tmp_path):
    app = make_app(DICOMWEB_URLS=[orthanc.dicomweb])
    context = app.app_context()
    context.push()
    Factory(app).project("pacs")
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1 MPRAGE")
    runner = CliRunner()

    with_user = orthanc.dicomweb.replace("://", f"://{orthanc.username}:{orthanc.password}@")
    first = runner.invoke(sync_command, ["--project", "pacs", "--source", with_user])
    assert first.exit_code == 0, first.output
    assert "added 1 file(s)" in first.output and f"{STUDY_A}/{T1}" in first.output
    assert orthanc.password not in first.output

    wrong = runner.invoke(sync_command, ["--project", "pacs", "--source", with_user.replace(orthanc.password, "x")])
    assert wrong.exit_code == 1
    assert f"{orthanc.dicomweb}: the server refused the credentials (HTTP 401)" in wrong.output
    assert "x@" not in wrong.output
    db.session.rollback()
    context.pop()


def test_fetched_series_are_the_projects_own_no_other_project_may_sync_them(make_pacs, orthanc, tmp_path):
    pacs = make_pacs()
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1 MPRAGE")
    assert sync(pacs, orthanc.dicomweb)["added"] == 1
    factory = Factory(current_app._get_current_object())
    other = factory.project("other")
    factory.member(other, "admin", "other-admin")
    client = pacs["client"]
    headers = token_headers(client, "other-admin")
    url = f"/api/v1/projects/{other.id}/sync"
    fetched = f"uploads/{pacs['project'].id}/sync"
    assert any((Path(current_app.config["DATA_ROOT"]) / fetched).rglob("*.dcm"))
    for source in (fetched, f"{fetched}/{db.session.scalar(select(SyncSource.id))}"):
        refused = client.post(url, json={"source": source}, headers=headers)
        assert refused.status_code == 400 and "another project's upload" in refused.get_json()["detail"]
    whole_root = client.post(url, json={"source": "."}, headers=headers)
    assert whole_root.status_code == 202 and whole_root.get_json()["job"]["result"]["added"] == 0
    assert db.session.scalar(select(func.count(Job.id)).where(Job.project_id == other.id)) == 1


def test_no_password_is_taken_shown_or_stored(make_pacs, orthanc, tmp_path):
    pacs = make_pacs()
    secret = "wrong-secret-1234"
    with_password = orthanc.dicomweb.replace("://", f"://{orthanc.username}:{secret}@")
    client, headers, project = pacs["client"], pacs["headers"], pacs["project"]
    refused = client.post(f"/api/v1/projects/{project.id}/sync", json={"source": with_password}, headers=headers)
    assert refused.status_code == 400 and secret not in refused.get_data(as_text=True)
    assert refused.get_json()["detail"] == ("a DICOMweb URL names no user or password: put DICOMweb credentials in "
                                            "QCLOOP_DICOMWEB_USERNAME/PASSWORD")
    page = client.post(f"/admin/projects/{project.id}/sync", data={"source": with_password}, headers=headers)
    assert page.status_code == 400 and "put DICOMweb credentials in" in page.get_data(as_text=True)
    assert secret not in page.get_data(as_text=True)
    with client.session_transaction() as session:
        assert secret not in str(dict(session))
    assert db.session.scalar(select(func.count(SyncSource.id))) == 0

    started = client.post(f"/admin/projects/{project.id}/sync", data={"source": orthanc.dicomweb}, headers=headers)
    assert started.status_code == 302
    with client.session_transaction() as session:
        assert f"Sync of {orthanc.dicomweb} started" in str(session["_flashes"])

    with pytest.raises(SourceError) as failed:  # the command line's own run takes them, and shows them nowhere
        engine.run_sync(project, with_password, None)
    assert secret not in failed.value.message
    runs = db.session.scalars(select(SyncRun).order_by(SyncRun.id)).all()
    assert runs[-1].state == "failed" and secret not in runs[-1].error and orthanc.dicomweb in runs[-1].error
    assert db.session.scalars(select(SyncSource.url)).all() == [orthanc.dicomweb]
