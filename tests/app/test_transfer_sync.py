"""Folder sources through the sync engine: which files of a site's tree the default patterns and custom ones
take (flat folders, experiment/scan folders, BIDS-like trees, DICOM folders), what each file not taken is
reported with, relative sources, an item that fails alone, and the API that never walks the uploads."""
from __future__ import annotations

from pathlib import Path

import nrrd
import numpy as np
import pytest
from flask import current_app
from sqlalchemy import select

from app.db import Frame, SyncRun, db
from app.services import imaging
from app.services.errors import InvalidInput
from app.services.sync import engine
from tests.app.transfer_helpers import snapshot
from tests.factories import token_headers, write_dicom_series


def _data() -> Path:
    return Path(current_app.config["DATA_ROOT"])


def _sync(project, source: Path | str, patterns: list[str] | None = None) -> SyncRun:
    return engine.run_sync(project, str(source), None, patterns=patterns)


def _reasons(run: SyncRun) -> dict[str, str]:
    """Every item not taken (skipped by the listing or failed when read) and why."""
    return {line["item"]: line["reason"] for line in run.skipped_items + run.failed_items}


def test_default_pattern_takes_nrrd_and_any_case(factory):
    project = factory.project("Site")
    db.session.commit()
    root = _data() / "repo"
    factory.nifti("repo/visit1/sub-01_T1_0.nii.gz", shape=(8, 8, 8))
    factory.nifti("repo/visit1/sub-01_T1_1.NII.GZ", shape=(8, 8, 8))
    (root / "visit2").mkdir(parents=True)
    nrrd.write(str(root / "visit2" / "sub-02_t2.nrrd"), np.zeros((8, 8, 8), dtype=np.uint8),
               {"space": "left-posterior-superior", "space directions": np.eye(3), "space origin": np.zeros(3)})
    (root / "visit2" / "sub-02_t2.json").write_text("{}")  # a sidecar, not an image

    run = _sync(project, root)
    assert run.added_items == ["visit1/sub-01_T1_0.nii.gz", "visit1/sub-01_T1_1.NII.GZ", "visit2/sub-02_t2.nrrd"]
    assert list(_reasons(run)) == ["visit2/sub-02_t2.json"]
    assert _reasons(run)["visit2/sub-02_t2.json"].startswith("not an image file (qcloop reads NIfTI")
    scans = snapshot()["Site"]["experiments"]
    assert scans["visit1"]["scans"]["sub-01"]["frames"] == {0: "repo/visit1/sub-01_T1_0.nii.gz",
                                                            1: "repo/visit1/sub-01_T1_1.NII.GZ"}
    assert scans["visit2"]["scans"]["sub-02"]["type"] == "T2"
    assert Path(run.export_file).is_file() and run.backup_file is None

    again = _sync(project, root)
    assert (again.added, again.changed, again.unchanged) == (0, 0, 3) and Path(again.backup_file).is_file()
    assert list(_reasons(again)) == ["visit2/sub-02_t2.json"]


def test_custom_patterns_with_subject_and_session_and_a_frame_that_is_not_a_number(factory):
    project = factory.project("Site")
    db.session.commit()
    root = _data() / "bids"
    factory.nifti("bids/sub-01/ses-1/anat/sub-01_ses-1_run-1_T1w.nii.gz", shape=(8, 8, 8))
    factory.nifti("bids/sub-01/ses-1/anat/sub-01_ses-1_run-x_T1w.nii.gz", shape=(8, 8, 8))
    pattern = r"^(?P<subject>sub-[^/]+)/(?P<session>ses-[^/]+)/anat/.*_run-(?P<frame>[^_]+)_(?P<scan>T1w)\.nii\.gz$"

    run = _sync(project, root, [pattern])
    assert run.added_items == ["sub-01/ses-1/anat/sub-01_ses-1_run-1_T1w.nii.gz"]
    assert run.skipped_items == [{"item": "sub-01/ses-1/anat/sub-01_ses-1_run-x_T1w.nii.gz",
                                  "reason": "frame 'x' is not a whole number"}]
    scan = snapshot()["Site"]["experiments"]["sub-01_ses-1"]["scans"]["T1w"]
    assert scan["frames"] == {1: "bids/sub-01/ses-1/anat/sub-01_ses-1_run-1_T1w.nii.gz"}
    assert (scan["subject"], scan["session"], scan["type"]) == ("sub-01", "ses-1", "T1")
    assert run.source.patterns == [pattern]  # kept for the source's later runs
    with pytest.raises(InvalidInput, match="named group scan"):
        _sync(project, root, [r"(?P<experiment>.*)"])
    with pytest.raises(InvalidInput, match="not a regular expression"):
        _sync(project, root, [r"(?P<scan>"])


def test_a_flat_folder_and_what_it_skips(factory):
    project = factory.project("Flat")
    db.session.commit()
    for name in ("sub-01_T1.nii.gz", "sub-02_T2_1.nii.gz", "sub-03.nii", "sub-04_FLAIR.nii.gz"):
        factory.nifti(f"lab/visit3/{name}", shape=(8, 8, 8))
    root = _data() / "lab" / "visit3"
    (root / "protocol.pdf").write_bytes(b"%PDF-1.4")
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "broken.nii.gz").write_bytes(b"not gzip at all")
    nrrd.write(str(root / "sub-05_T2.nhdr"), np.zeros((8, 8, 8), dtype=np.uint8),
               {"space": "left-posterior-superior", "space directions": np.eye(3), "space origin": np.zeros(3)},
               detached_header=True)  # a header and its data file sub-05_T2.raw.gz: one frame
    (root / "deeper" / "and" / "deeper").mkdir(parents=True)
    factory.nifti("lab/visit3/deeper/and/deeper/x.nii.gz", shape=(8, 8, 8))

    run = _sync(project, root)
    assert run.added_items == ["sub-01_T1.nii.gz", "sub-02_T2_1.nii.gz", "sub-03.nii", "sub-04_FLAIR.nii.gz",
                               "sub-05_T2.nhdr"]
    experiment = snapshot()["Flat"]["experiments"]["visit3"]["scans"]  # the source folder names the experiment
    assert {name: (scan["type"], list(scan["frames"])) for name, scan in experiment.items()} == {
        "sub-01": ("T1", [0]), "sub-02": ("T2", [1]), "sub-03": ("T1", [0]), "sub-04": ("FLAIR", [0]),
        "sub-05": ("T2", [0])}
    reasons = _reasons(run)
    assert sorted(reasons) == [".DS_Store", "broken.nii.gz", "deeper/and/deeper/x.nii.gz", "protocol.pdf",
                               "sub-05_T2.raw.gz"]
    assert reasons["sub-05_T2.raw.gz"] == "data file of the NRRD header sub-05_T2.nhdr (the header is the frame)"
    assert reasons[".DS_Store"] == "hidden file"
    assert reasons["protocol.pdf"].startswith("not an image file")
    assert [line["item"] for line in run.failed_items] == ["broken.nii.gz"]  # read, and refused alone
    assert "NIfTI" in reasons["broken.nii.gz"]
    assert reasons["deeper/and/deeper/x.nii.gz"].startswith("matches no pattern (default patterns: bids, ")


def test_a_bids_like_tree(factory):
    project = factory.project("Bids")
    db.session.commit()
    for relative in ("sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz", "sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz",
                     "sub-01/ses-1/dwi/sub-01_ses-1_dwi.nii.gz",
                     "sub-01/ses-1/func/sub-01_ses-1_task-rest_run-1_bold.nii.gz",
                     "sub-02/anat/sub-02_T2w.nii.gz", "sub-02/anat/sub-02_acq-fast_T1w.nii.gz"):
        factory.nifti(f"study/{relative}", shape=(8, 8, 8))
    root = _data() / "study"
    (root / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    (root / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_T1w.json").write_text("{}")
    (root / "sub-01" / "ses-1" / "dwi" / "sub-01_ses-1_dwi.bval").write_text("0 1000\n")

    run = _sync(project, root)
    assert run.added == 6 and run.failed == 0
    experiments = snapshot()["Bids"]["experiments"]
    described = {(experiment, name): (scan["type"], scan["subject"], scan["session"])
                 for experiment, body in experiments.items() for name, scan in body["scans"].items()}
    assert described == {
        ("sub-01_ses-1", "T1w"): ("T1", "sub-01", "ses-1"),
        ("sub-01_ses-1", "FLAIR"): ("FLAIR", "sub-01", "ses-1"),
        ("sub-01_ses-1", "dwi"): ("DWI", "sub-01", "ses-1"),
        ("sub-01_ses-1", "task-rest_run-1_bold"): ("FMRI", "sub-01", "ses-1"),
        ("sub-02", "T2w"): ("T2", "sub-02", None),
        ("sub-02", "acq-fast_T1w"): ("T1", "sub-02", None)}
    assert sorted(_reasons(run)) == ["participants.tsv", "sub-01/ses-1/anat/sub-01_ses-1_T1w.json",
                                     "sub-01/ses-1/dwi/sub-01_ses-1_dwi.bval"]
    assert all(reason.startswith("not an image file") for reason in _reasons(run).values())


def test_a_dicom_folder_is_one_frame(factory):
    project = factory.project("Dicom")
    db.session.commit()
    root = _data() / "scanner"
    volume = np.random.default_rng(3).integers(0, 500, (5, 9, 11)).astype(np.int16)
    write_dicom_series(root / "visit1" / "sub-01_T2", volume, "1.2.826.0.1.3680043.2.1125.1.77")
    write_dicom_series(root / "visit1" / "sub-02", volume, "1.2.826.0.1.3680043.2.1125.1.78", name="IM{z:04d}")
    (root / "visit1" / "sub-02" / "notes.txt").write_text("acquired twice")
    write_dicom_series(root / "visit1" / "sub-03", volume, "1.2.826.0.1.3680043.2.1125.1.79", description="T1 axial",
                       name="a{z:02d}.dcm")
    write_dicom_series(root / "visit1" / "sub-03", volume, "1.2.826.0.1.3680043.2.1125.1.80", description="T2 axial",
                       name="b{z:02d}.dcm")

    run = _sync(project, root)
    assert run.added_items == ["visit1/sub-01_T2/", "visit1/sub-02/"]
    reasons = _reasons(run)
    assert sorted(reasons) == ["visit1/sub-02/notes.txt", "visit1/sub-03/"]
    assert reasons["visit1/sub-02/notes.txt"] == f"not an image file (qcloop reads {imaging.SUPPORTED})"
    assert "2 DICOM series in one folder" in reasons["visit1/sub-03/"]
    assert '"T1 axial" (5 files)' in reasons["visit1/sub-03/"] and '"T2 axial" (5 files)' in reasons["visit1/sub-03/"]
    scans = snapshot()["Dicom"]["experiments"]["visit1"]["scans"]
    assert scans["sub-01"]["type"] == "T2" and scans["sub-02"]["frames"] == {0: "scanner/visit1/sub-02/IM0000"}
    assert "sub-03" not in scans
    frame = db.session.scalar(select(Frame).where(Frame.file_location == "scanner/visit1/sub-01_T2/slice000.dcm"))
    assert frame.shape == [11, 9, 5]  # the whole series, not one slice

    again = _sync(project, root)
    assert (again.added, again.unchanged, [line["item"] for line in again.failed_items]) == (0, 2, ["visit1/sub-03/"])
    inside = _sync(project, root / "visit1" / "sub-03")  # the series' own folder: one line, not a line a slice
    assert inside.added == 0 and inside.skipped_items == [{
        "item": "a00.dcm", "reason": "10 DICOM file(s) directly in the source folder, a00.dcm first (sync from the "
                                     "folder above: each series needs its own folder)"}]


def test_a_relative_source_is_the_same_as_an_absolute_one(factory, monkeypatch):
    project = factory.project("Rel")
    db.session.commit()
    factory.nifti("site/visit1/sub-01_T1.nii.gz", shape=(8, 8, 8))
    factory.nifti("site/visit1/sub-02_T1.nii.gz", shape=(8, 8, 8))
    monkeypatch.chdir(_data().parent)

    run = _sync(project, Path("data/site"))
    assert run.added_items == ["visit1/sub-01_T1.nii.gz", "visit1/sub-02_T1.nii.gz"]
    assert run.skipped_items == [] and run.source.url == str(_data() / "site")
    again = _sync(project, Path("data/site"))
    assert (again.added, again.unchanged, again.skipped_items) == (0, 2, [])
    absolute = _sync(project, _data() / "site")
    assert (absolute.source_id, absolute.unchanged) == (run.source_id, 2)


def test_an_item_that_cannot_be_taken_fails_alone_and_writes_nothing_of_it(factory):
    project = factory.project("Fails")
    db.session.commit()
    factory.nifti("tree/visit1/sub-01_T1.nii.gz", shape=(8, 8, 8))
    root = _data() / "tree"
    long_folder = "s" * 130
    factory.nifti(f"tree/e/{long_folder}/{long_folder}/x.nii.gz", shape=(8, 8, 8))
    pattern = r"^(?P<experiment>[^/]+)/(?P<scan>.+)\.nii\.gz$"  # this scan name is longer than 255 characters

    run = _sync(project, root, [pattern])
    assert run.added_items == ["visit1/sub-01_T1.nii.gz"]
    assert run.failed_items == [{"item": f"e/{long_folder}/{long_folder}/x.nii.gz",
                                 "reason": "scan name is longer than 255 characters"}]
    assert snapshot()["Fails"]["experiments"].keys() == {"visit1"}  # no experiment e, no scan of it
    assert Path(run.export_file).is_file()


def _run_of(client, answer, headers) -> dict:
    """The run a sync job made, as sync-runs answers it (the job's result names it and gives its counts)."""
    assert answer.status_code == 202, answer.get_json()
    job = answer.get_json()["job"]
    runs = client.get(f"/api/v1/projects/{job['project']}/sync-runs", headers=headers).get_json()
    return next(run for run in runs if run["id"] == job["result"]["run_id"])


def test_the_api_syncs_a_folder_under_the_data_root_and_lists_what_it_skipped(factory, client):
    project = factory.project("Api")
    factory.member(project, "admin", "lead")
    factory.member(project, "tier1", "reviewer")
    factory.nifti("incoming/visit1/sub-01_T1.nii.gz", shape=(8, 8, 8))
    (_data() / "incoming" / "visit1" / "sub-01_T1.json").write_text("{}")
    url = f"/api/v1/projects/{project.id}/sync"

    assert client.post(url, json={"source": "incoming"}, headers=token_headers(client, "reviewer")).status_code == 403
    headers = token_headers(client, "lead")
    answer = client.post(url, json={"source": "incoming"}, headers=headers)  # relative to the data root
    assert answer.status_code == 202, answer.get_json()
    body = _run_of(client, answer, headers)  # the test queue runs the job at once
    assert body["added_items"] == ["visit1/sub-01_T1.nii.gz"] and body["unchanged"] == 0
    assert body["skipped_items"] == [{"item": "visit1/sub-01_T1.json",
                                      "reason": f"not an image file (qcloop reads {imaging.SUPPORTED})"}]
    assert [location for (location,) in db.session.execute(select(Frame.file_location))] == [
        "incoming/visit1/sub-01_T1.nii.gz"]
    again = _run_of(client, client.post(url, json={"source": str(_data() / "incoming")}, headers=headers), headers)
    assert again["added"] == 0 and again["unchanged"] == 1

    outside = client.post(url, json={"source": "/"}, headers=headers)
    assert outside.status_code == 400 and "outside the data root" in outside.get_json()["detail"]
    assert client.post(url, json={"source": "incoming", "patterns": ["(?P<x>.*)"]},
                       headers=headers).status_code == 400


def test_a_sync_never_reads_or_names_another_projects_uploads(factory, client):
    project = factory.project("Mine")
    factory.member(project, "admin", "lead")
    other = factory.project("Theirs")
    secret = _data() / "uploads" / str(other.id) / "ab" / "secret-subject-name.nii.gz"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"not scanned")
    factory.nifti("lab/visit1/sub-01_T1.nii.gz", shape=(8, 8, 8))
    headers = token_headers(client, "lead")
    url = f"/api/v1/projects/{project.id}/sync"
    refused = client.post(url, json={"source": f"uploads/{other.id}"}, headers=headers)
    assert refused.status_code == 400 and "another project's upload" in refused.get_json()["detail"]
    whole_root = _run_of(client, client.post(url, json={"source": "."}, headers=headers), headers)
    assert "secret-subject-name" not in str(whole_root)
    assert whole_root["added_items"] == ["lab/visit1/sub-01_T1.nii.gz"]
