"""Syncing a project with a BIDS dataset: subjects and sessions as experiments, each image a scan typed by
its suffix with its sidecar as metadata; decisions pushed back as a derivatives dataset pybids reads; a
second sync adds nothing; a removed image is reported, never deleted; a folder that is no dataset and a
dataset synced into another project are refused."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from click.testing import CliRunner
from flask import current_app
from sqlalchemy import select

from app.cli import sync_command
from app.db import Decision, Experiment, Frame, Scan, SyncSource, db
from app.services.sync.bids import read_layout
from tests.factories import token_headers

SUBJECTS, SESSIONS = ("01", "02"), ("1", "2")


def _image(path: Path, shape: tuple[int, ...], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    volume = np.random.default_rng(seed).integers(0, 1000, shape).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))


def _dataset(name: str = "ds") -> Path:
    """Two subjects, two sessions, a T1w and a bold each (one T1w with acq and run entities too), sidecars
    per image and one at the top that every bold inherits, and a NIfTI whose name is not BIDS."""
    root = Path(current_app.config["DATA_ROOT"]) / name
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.9.0"}))
    (root / "task-rest_bold.json").write_text(json.dumps({"TaskName": "rest", "RepetitionTime": 2.0}))
    seed = 0
    for subject in SUBJECTS:
        for session in SESSIONS:
            base = root / f"sub-{subject}" / f"ses-{session}"
            stem = f"sub-{subject}_ses-{session}"
            seed += 1
            _image(base / "anat" / f"{stem}_T1w.nii.gz", (8, 8, 8), seed)
            (base / "anat" / f"{stem}_T1w.json").write_text(json.dumps({"EchoTime": seed / 1000}))
            _image(base / "func" / f"{stem}_task-rest_bold.nii.gz", (8, 8, 8, 3), seed + 100)
    _image(root / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_acq-fast_run-1_T1w.nii.gz", (8, 8, 8), 50)
    _image(root / "sub-01" / "ses-1" / "anat" / "scout.nii.gz", (8, 8, 8), 51)
    return root


def _admin(factory, client, name: str = "Bids"):
    project = factory.project(name)
    factory.member(project, "admin", f"{name.lower()}-lead")
    return project, token_headers(client, f"{name.lower()}-lead")


def _sync(client, project, headers, source: str, **body) -> dict:
    answer = client.post(f"/api/v1/projects/{project.id}/sync", json={"source": source, **body}, headers=headers)
    assert answer.status_code == 202, answer.get_json()
    job = answer.get_json()["job"]
    assert job["state"] == "succeeded", job
    runs = client.get(f"/api/v1/projects/{project.id}/sync-runs", headers=headers).get_json()
    return next(run for run in runs if run["id"] == job["result"]["run_id"])  # the job names the run


def _scans() -> dict[tuple[str, str], Scan]:
    return {(experiment, scan.name): scan for scan, experiment in db.session.execute(
        select(Scan, Experiment.name).join(Experiment, Experiment.id == Scan.experiment_id))}


def _decide(client, headers, scan: Scan, decision: str, **extra) -> None:
    assert client.post(f"/api/v1/experiments/{scan.experiment_id}/lock", headers=headers).status_code < 300
    answer = client.post("/api/v1/scan-decisions", json={"scan": scan.id, "decision": decision, **extra},
                         headers=headers)
    assert answer.status_code == 201, answer.get_json()


def _check_description(description: dict, derivative: Path, raw: Path, uris: list[str]) -> None:
    """The derivatives' dataset_description.json as the BIDS schema (bidsschematools) describes it: only known
    fields, the required ones (a derivative's GeneratedBy too), and DatasetLinks, required where BIDS URIs are
    used, naming every dataset the URIs name (the ratings' Sources, SourceDatasets) and resolving it to the raw
    dataset (a link without scheme is a path from the derivative's root)."""
    from bidsschematools import schema

    rules = schema.load_schema().rules.json.dataset
    fields = {**rules.dataset_description.fields, **rules.derivative_description.fields}
    assert set(description) <= set(fields), set(description) - set(fields)
    assert {name for name, level in fields.items() if level == "required"} <= set(description)
    uris = [*uris, *(source["URL"] for source in description["SourceDatasets"])]
    named = {uri.split(":")[1] for uri in uris if uri.startswith("bids:")}
    assert named == {"raw"} and set(description["DatasetLinks"]) == named
    assert (derivative / description["DatasetLinks"]["raw"]).resolve() == raw.resolve()
    assert all((raw / uri.split(":", 2)[2]).exists() for uri in uris)


def test_a_bids_dataset_becomes_scans_and_its_decisions_a_derivatives_dataset(factory, client):
    root = _dataset()
    project, headers = _admin(factory, client)

    first = _sync(client, project, headers, f"bids:{root}")
    assert first["added"] == 9 and first["failed_items"] == [] and first["removed"] == 0
    assert first["skipped_items"] == [{"item": "sub-01/ses-1/anat/scout.nii.gz",
                                       "reason": "not a valid BIDS file name (pybids left it out)"}]
    scans = _scans()
    assert {experiment for experiment, _ in scans} == {"sub-01_ses-1", "sub-01_ses-2", "sub-02_ses-1", "sub-02_ses-2"}
    assert {name for experiment, name in scans if experiment == "sub-01_ses-1"} == {
        "T1w", "acq-fast_run-1_T1w", "task-rest_bold"}
    t1 = scans[("sub-02_ses-1", "T1w")]
    assert (t1.scan_type, t1.subject_id, t1.session_id, t1.meta) == ("T1", "02", "1", {"EchoTime": 0.003})
    bold = scans[("sub-02_ses-2", "task-rest_bold")]
    assert bold.scan_type == "FMRI" and bold.meta == {"TaskName": "rest", "RepetitionTime": 2.0}  # inherited
    assert [frame.file_location for frame in t1.frames] == ["ds/sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"]
    assert all(frame.checksum and frame.shape for scan in scans.values() for frame in scan.frames)

    _decide(client, headers, t1, "UN", note="motion", artifacts={"present": ["ghosting_motion"], "absent": ["lesions"]})
    second = _sync(client, project, headers, f"bids:{root}")
    assert (second["added"], second["changed"], second["unchanged"], second["pushed"]) == (0, 0, 9, 1)
    assert db.session.scalar(select(Frame.id).order_by(Frame.id.desc())) == max(
        frame.id for scan in scans.values() for frame in scan.frames)  # no frame added

    layout = read_layout(root, derivatives=True)  # BIDSLayout(root, derivatives=True)
    ratings = layout.get(scope="qcloop", suffix="qc", extension=".json")
    assert [rating.get_entities()["subject"] for rating in ratings] == ["02"]
    assert ratings[0].path.endswith("derivatives/qcloop/sub-02/ses-1/anat/sub-02_ses-1_T1w_qc.json")
    record = json.loads(Path(ratings[0].path).read_text())
    assert (record["Rating"], record["RatingLabel"], record["RatingCode"], record["Note"], record["Artifacts"]) == (
        "unusable", "Unusable", "UN", "motion", {"ghosting_motion": "present", "lesions": "absent"})
    description = json.loads((root / "derivatives" / "qcloop" / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "qcloop"
    _check_description(description, root / "derivatives" / "qcloop", root, record["Sources"])
    with (root / "derivatives" / "qcloop" / "ratings.tsv").open() as file:
        rows = list(csv.DictReader(file, delimiter="\t"))
    assert [(row["bids_name"], row["rating"], row["rating_label"], row["rating_code"], row["artifacts_present"])
            for row in rows] == [("sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz", "unusable", "Unusable", "UN",
                                  "ghosting_motion")]
    assert len(read_layout(root).get(extension=[".nii", ".nii.gz"])) == 9  # derivatives are not raw images

    third = _sync(client, project, headers, f"bids:{root}", every_minutes=30)
    assert (third["added"], third["pushed"]) == (0, 0)
    runs = client.get(f"/api/v1/projects/{project.id}/sync-runs", headers=headers).get_json()
    assert [(run["added"], run["pushed"], run["state"]) for run in runs] == [
        (0, 0, "succeeded"), (0, 1, "succeeded"), (9, 0, "succeeded")]
    assert runs[0]["every_minutes"] == 30 and runs[0]["source"] == f"bids:{root}" and runs[0]["kind"] == "bids"
    factory.member(project, "tier1", "bids-reviewer")
    assert client.get(f"/api/v1/projects/{project.id}/sync-runs",
                      headers=token_headers(client, "bids-reviewer")).status_code == 403
    page = client.get(f"/admin/projects/{project.id}/import", headers=headers)
    assert page.status_code == 200 and b'id="sync-runs"' in page.data and b"every 30 minute(s)" in page.data


def test_a_changed_image_is_synced_again_and_a_removed_one_reported_with_its_scan_and_decision_kept(factory, client):
    root = _dataset()
    project, headers = _admin(factory, client)
    _sync(client, project, headers, f"bids:{root}")
    scans = _scans()
    t1 = scans[("sub-01_ses-2", "T1w")]
    _decide(client, headers, t1, "U")
    before = t1.frames[0].checksum

    _image(root / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_T1w.nii.gz", (8, 8, 9), 99)  # rewritten in place
    (root / "sub-02" / "ses-2" / "func" / "sub-02_ses-2_task-rest_bold.nii.gz").unlink()
    (root / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T1w.json").write_text(json.dumps({"EchoTime": 0.05}))
    changed = _sync(client, project, headers, f"bids:{root}")
    assert (changed["added"], changed["changed"], changed["removed"]) == (0, 2, 1)
    assert db.session.get(Scan, scans[("sub-02_ses-1", "T1w")].id).meta == {"EchoTime": 0.05}
    assert changed["removed_items"] == ["sub-02/ses-2/func/sub-02_ses-2_task-rest_bold.nii.gz"]
    db.session.expire_all()
    frame = db.session.get(Scan, t1.id).frames[0]
    assert frame.checksum != before and frame.shape == [8, 8, 9]
    assert db.session.get(Scan, scans[("sub-02_ses-2", "task-rest_bold")].id) is not None
    assert db.session.scalar(select(Decision.id).where(Decision.scan_id == t1.id)) is not None

    again = _sync(client, project, headers, f"bids:{root}")
    assert (again["added"], again["changed"], again["removed"], again["pushed"]) == (0, 0, 0, 0)
    runs = client.get(f"/api/v1/projects/{project.id}/sync-runs", headers=headers).get_json()
    assert runs[1]["removed_items"] == ["sub-02/ses-2/func/sub-02_ses-2_task-rest_bold.nii.gz"]


def test_a_folder_that_is_no_bids_dataset_and_a_dataset_of_another_project_are_refused(factory, client):
    project, headers = _admin(factory, client)
    plain = Path(current_app.config["DATA_ROOT"]) / "plain"
    _image(plain / "sub-01" / "anat" / "sub-01_T1w.nii.gz", (8, 8, 8), 1)
    url = f"/api/v1/projects/{project.id}/sync"

    refused = client.post(url, json={"source": "bids:plain"}, headers=headers)  # relative to the data root
    assert refused.status_code == 400
    assert refused.get_json()["detail"] == f"bids:{plain}: not a BIDS dataset: it has no dataset_description.json"
    (plain / "dataset_description.json").write_text("{not json")
    unreadable = client.post(url, json={"source": f"bids:{plain}"}, headers=headers)
    assert unreadable.status_code == 202 and unreadable.get_json()["job"]["state"] == "failed"
    assert "not a BIDS dataset pybids reads" in unreadable.get_json()["job"]["error"]
    runs = client.get(f"/api/v1/projects/{project.id}/sync-runs", headers=headers).get_json()
    assert runs[0]["state"] == "failed" and "not a BIDS dataset pybids reads" in runs[0]["error"]
    assert client.post(url, json={"source": "bids:plain", "every_minutes": "often"},
                       headers=headers).status_code == 400

    root = _dataset()
    _sync(client, project, headers, f"bids:{root}")
    other, other_headers = _admin(factory, client, "Other")
    taken = client.post(f"/api/v1/projects/{other.id}/sync", json={"source": "bids:ds"}, headers=other_headers)
    assert taken.status_code == 409
    assert taken.get_json()["detail"] == (f"source bids:{root} is already synced into another project; a source "
                                          "belongs to one project")  # not named: its admin may not be theirs
    assert db.session.scalar(select(Scan.id).join(Experiment).where(Experiment.project_id == other.id)) is None


def test_the_command_and_the_import_page_sync_a_dataset_and_set_its_schedule(factory, client):
    root = _dataset()
    project, headers = _admin(factory, client)
    runner = CliRunner()

    first = runner.invoke(sync_command, ["--project", "Bids", "--source", f"bids:{root}", "--every", "15"])
    assert first.exit_code == 0, first.output
    assert "added 9 file(s), skipped 1" in first.output and "syncs every 15 minute(s)" in first.output
    assert f"{root}/sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz" in first.output
    assert "skipped: sub-01/ses-1/anat/scout.nii.gz: not a valid BIDS file name" in first.output
    again = runner.invoke(sync_command, ["--project", "Bids", "--source", f"bids:{root}", "--every", "0"])
    assert again.exit_code == 0 and "9 file(s) already in the project" in again.output
    assert "nothing new to add (1 file(s) skipped)" in again.output and "syncs every" not in again.output
    refused = runner.invoke(sync_command, ["--project", "Bids", "--source", f"bids:{root}/sub-01"])
    assert refused.exit_code == 1 and "not a BIDS dataset: it has no dataset_description.json" in refused.output

    page = f"/admin/projects/{project.id}/sync"
    answer = client.post(page, data={"source": "bids:ds", "every_minutes": "60"}, headers=headers)
    assert answer.status_code == 302
    assert db.session.scalar(select(SyncSource.every_minutes)) == 60
    shown = client.get(f"/admin/projects/{project.id}/import", headers=headers).data.decode()
    assert shown.count("<tr><td>") == 3 and "scout.nii.gz: not a valid BIDS file name" in shown
    bad = client.post(page, data={"source": "bids:missing"}, headers=headers)
    assert bad.status_code == 400 and "Not synced:" in bad.data.decode() and "is not a folder" in bad.data.decode()
