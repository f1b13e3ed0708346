"""DICOMweb sync against a real Orthanc (tests/orthanc.py): the source alone (list, fetch, push, refusals),
then the whole cycle through the sync engine and the API."""
from __future__ import annotations

import csv
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pydicom
import pytest

from app.services import imaging
from app.services.sync.base import Outgoing, SourceError
from app.services.sync.dicomweb import DicomwebSource, scan_type
from tests.factories import write_dicom_series
from tests.orthanc import Orthanc

ROOT = "1.2.826.0.1.3680043.8.498.7"  # a UID root for test data
STUDY_A, STUDY_B = f"{ROOT}.1", f"{ROOT}.2"
T1, FLAIR, T2 = f"{ROOT}.1.1", f"{ROOT}.1.2", f"{ROOT}.2.1"


def store_series(orthanc: Orthanc, tmp_path: Path, uid: str, *, study: str, number: int, description: str,
                 patient: str = "P001", study_description: str = "Brain MRI", seed: int = 0) -> None:
    """A 16 x 32 x 32 series written with pydicom's help and stored in Orthanc (``POST /instances``)."""
    folder = tmp_path / "dicom" / uid
    volume = np.random.default_rng(seed).integers(0, 1000, (16, 32, 32)).astype(np.int16)
    write_dicom_series(folder, volume, uid, description=description)
    for path in folder.iterdir():
        dataset = pydicom.dcmread(path)
        dataset.PatientID, dataset.PatientName = patient, "Test^Patient"
        dataset.StudyInstanceUID, dataset.StudyDescription = study, study_description
        dataset.StudyDate, dataset.StudyID, dataset.SeriesNumber = "20260102", "7", number
        dataset.save_as(path)
    orthanc.store(folder)


def source(orthanc: Orthanc, **credentials: str) -> DicomwebSource:
    return DicomwebSource(orthanc.dicomweb, **({"username": orthanc.username, "password": orthanc.password}
                                               | credentials))


def outgoing(key: str, decision: str = "usable", note: str = "fine") -> Outgoing:
    return Outgoing(key=key, scan_id=1, decision=decision, artifacts={"ghosting": "absent", "motion": "present"},
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
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1 MPRAGE")
    dicomweb = source(orthanc)
    item = dicomweb.list(None).items[0]

    into = tmp_path / "data" / "fetched"
    folder = dicomweb.fetch(item, into)
    assert folder.parent == into and [p.name for p in into.iterdir()] == [folder.name]
    assert len(list(folder.glob("*.dcm"))) == 16
    assert imaging.read_info(folder).shape == [32, 32, 16]


def test_a_series_that_cannot_be_fetched_leaves_nothing(app, orthanc, tmp_path):
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1 MPRAGE")
    dicomweb = source(orthanc)
    item = dicomweb.list(None).items[0]
    orthanc.request("DELETE", f"series/{orthanc.series_id(T1)}")

    into = tmp_path / "fetched"
    with pytest.raises(SourceError) as refused:
        dicomweb.fetch(item, into)
    assert orthanc.dicomweb in refused.value.message and T1 in refused.value.message
    assert list(into.iterdir()) == []


def test_push_writes_each_decision_as_orthanc_series_metadata(orthanc, tmp_path):
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1 MPRAGE")
    dicomweb = source(orthanc)

    pushed = dicomweb.push([outgoing(f"{STUDY_A}/{T1}"), outgoing(f"{STUDY_A}/{ROOT}.9.9")], tmp_path / "run")
    assert pushed.pushed == 1 and pushed.file is None
    assert pushed.failed == [(f"{STUDY_A}/{ROOT}.9.9", "the server no longer holds the series")]
    assert orthanc.decision(T1) == {"decision": "usable", "artifacts": {"ghosting": "absent", "motion": "present"},
                                    "note": "fine", "reviewer": "alice", "time": "2026-01-02T03:04:05+00:00"}


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
                     "artifacts": "ghosting=absent;motion=present", "note": "'=SUM(A1)", "reviewer": "alice",
                     "time": "2026-01-02T03:04:05+00:00"}]


def test_wrong_password_is_a_clear_refusal(orthanc):
    with pytest.raises(SourceError) as refused:
        source(orthanc, password="wrong").list(None)
    assert refused.value.status == 400
    assert refused.value.message.startswith(orthanc.dicomweb + ": the server refused the credentials (HTTP 401)")


def test_an_unreachable_server_is_a_clear_refusal(orthanc_server):
    from tests.orthanc import _free_port

    url = f"dicomweb+http://127.0.0.1:{_free_port()}/dicom-web"
    with pytest.raises(SourceError) as refused:
        DicomwebSource(url).list(None)
    assert refused.value.message.startswith(f"{url}: the server cannot be reached while searching the studies")
    assert "refused" in refused.value.message.lower()


@pytest.mark.parametrize("url", ["http://host/dicom-web", "dicomweb+ftp://host/dicom-web", "dicomweb+http:///x",
                                 "dicomweb+http://host:99999/x"])
def test_a_url_that_is_not_dicomweb_is_refused(url):
    with pytest.raises(SourceError, match="not a DICOMweb URL"):
        DicomwebSource(url)


def test_credentials_from_the_url_or_the_settings_never_in_its_name(make_app, orthanc, tmp_path):
    store_series(orthanc, tmp_path, T1, study=STUDY_A, number=1, description="T1")
    url = orthanc.dicomweb.replace("://", f"://{orthanc.username}:{orthanc.password}@")
    dicomweb = DicomwebSource(url)
    assert dicomweb.url == orthanc.dicomweb
    assert [item.key for item in dicomweb.list(None).items] == [f"{STUDY_A}/{T1}"]

    with make_app(DICOMWEB_USERNAME=orthanc.username, DICOMWEB_PASSWORD=orthanc.password).app_context():
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
