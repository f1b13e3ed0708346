"""Round trips: MIQA CSV/JSON in, MIQA and full formats out and back in, the same database each time;
merge is idempotent and neither mode ever loses a decision."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from app.db import ArtifactEntry, Decision, Evaluation, Frame, ModelVersion, Scan, db
from app.services import decisions, projects, vocabulary, volumes
from app.services.transfer import exporter, importer
from tests.app.transfer_helpers import counts, empty_database, read_csv_text, snapshot, write_csv, write_json


def _people(factory, project):
    reviewer = factory.member(project, "tier1", "rev1")
    senior = factory.member(project, "tier2", "rev2")
    return reviewer, senior


def _miqa_rows(factory, name="Site"):
    """MIQA's documented CSV layout with paths relative to the data root, decisions on some scans."""
    for relative in ("site/visit1/a_0.nii.gz", "site/visit1/a_1.nii.gz", "site/visit1/b.nii.gz",
                     "site/visit2/c.nii.gz"):
        factory.nifti(relative, shape=(16, 16, 16))
    decision_a = ["U", "rev1@example.org", "fine, really", "2021-09-01 10:00:00.123456+00:00",
                  "lesions;misalignment", "i=1;j=2;k=3"]
    return [
        [name, "visit1", "scan a", "T1", 0, "site/visit1/a_0.nii.gz", "first visit", "subA", "ses1", "http://x/a",
         *decision_a],
        [name, "visit1", "scan a", "T1", 1, "site/visit1/a_1.nii.gz", "first visit", "subA", "ses1", "http://x/a",
         *decision_a],
        [name, "visit1", "scan b", "T2", 0, "site/visit1/b.nii.gz", "first visit", "subB", "", "",
         "Q?", "stranger@elsewhere.org", "needs a look", "2021-09-02T08:00:00Z", "Ghosting / motion", ""],
        [name, "visit2", "scan c", "FMRI", 0, "site/visit2/c.nii.gz", "", "", "", "", "", "", "", "", "", ""],
    ]


def test_miqa_csv_round_trip_gives_the_same_database(factory, tmp_path):
    project = factory.project("Site")
    _people(factory, project)
    source = write_csv(tmp_path / "miqa.csv", _miqa_rows(factory))

    first = importer.import_file(source, project=project)
    db.session.commit()
    assert first.counts["scans_added"] == 3 and first.counts["frames_added"] == 4
    assert first.counts["decisions_added"] == 2  # scan a's decision is on both of its rows: one decision
    before = snapshot()
    scan_a = before["Site"]["experiments"]["visit1"]["scans"]["scan a"]
    (code, creator, role, note, _, location, source_kind, states), = scan_a["decisions"]
    assert (code, creator, role, note, location, source_kind) == ("U", "rev1", "tier1", "fine, really", (1, 2, 3),
                                                                   "import")
    assert dict(states)["lesions"] == "present" and dict(states)["misalignment"] == "present"
    assert dict(states)["inhomogeneity"] == "absent"  # MIQA lists present artifacts only
    scan_b = before["Site"]["experiments"]["visit1"]["scans"]["scan b"]
    assert scan_b["decisions"][0][1] == "stranger@elsewhere.org" and scan_b["decisions"][0][2] is None
    assert dict(scan_b["decisions"][0][7])["ghosting_motion"] == "present"

    exported = "".join(exporter.export("miqa-csv", [project.id]))
    rows = read_csv_text(exported)
    assert len(rows) == 4 and rows[0]["last_decision_created"].startswith("2021-09-01T10:00:00.123456")
    again = importer.import_file(_save(tmp_path, exported), project=project)
    db.session.commit()
    assert again.changes == 0 and again.counts["decisions_already_present"] == 2
    assert snapshot() == before
    assert "".join(exporter.export("miqa-csv", [project.id])) == exported

    empty_database()
    fresh = factory.project("Site")
    _people(factory, fresh)
    importer.import_file(_save(tmp_path, exported), project=fresh)
    db.session.commit()
    assert snapshot() == before


def _save(tmp_path, text: str, name: str = "export.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_merge_is_idempotent_and_dry_run_writes_nothing(factory, tmp_path):
    project = factory.project("Site")
    _people(factory, project)
    source = write_csv(tmp_path / "miqa.csv", _miqa_rows(factory))
    preview = importer.import_file(source, project=project, dry_run=True)
    db.session.rollback()
    assert preview.dry_run and preview.counts["scans_added"] == 3 and counts()["scans"] == 0
    importer.import_file(source, project=project)
    db.session.commit()
    before, numbers = snapshot(), counts()
    second = importer.import_file(source, project=project)
    db.session.commit()
    assert second.changes == 0 and snapshot() == before and counts() == numbers


def test_miqa_json_with_decisions_list_and_last_decision(factory, tmp_path):
    project = factory.project("Site")
    _people(factory, project)
    factory.nifti("j/a0.nii.gz", shape=(16, 16, 16))
    factory.nifti("j/a1.nii.gz", shape=(16, 16, 16))
    last = {"decision": "UN", "creator": "rev2", "note": "motion", "created": "2022-02-02T10:00:00+00:00",
            "user_identified_artifacts": {"ghosting_motion": 1, "lesions": 0}, "location": "i=3;j=4;k=5"}
    body = {"projects": {"Site": {"experiments": {"exp": {"notes": "json visit", "scans": {"s1": {
        "type": "T1", "subject_id": "sub1", "session_id": None, "scan_link": None,
        "frames": {"0": "j/a0.nii.gz", "1": {"file_location": "j/a1.nii.gz"}},
        "decisions": [{"decision": "Q?", "creator": "rev1@example.org", "note": "unsure",
                       "created": "2022-02-01T09:00:00+00:00", "user_identified_artifacts": "lesions"}, last],
        "last_decision": last}}}}}}}
    summary = importer.import_file(write_json(tmp_path / "miqa.json", body), project=project)
    db.session.commit()
    assert summary.format == "miqa-json" and summary.counts["decisions_added"] == 2
    scan = snapshot()["Site"]["experiments"]["exp"]
    assert scan["note"] == "json visit"
    found = scan["scans"]["s1"]
    assert found["frames"] == {0: "j/a0.nii.gz", 1: "j/a1.nii.gz"}
    assert [(d[0], d[1], d[2]) for d in found["decisions"]] == [("Q?", "rev1", "tier1"), ("UN", "rev2", "tier2")]
    assert dict(found["decisions"][1][7])["ghosting_motion"] == "present"
    assert dict(found["decisions"][1][7])["lesions"] == "absent"
    exported = "".join(exporter.export("miqa-json", [project.id]))
    again = importer.import_file(_save(tmp_path, exported, "export.json"), project=project)
    assert again.changes == 0


def _rich_project(factory):
    """A project with every kind of state a full export must carry."""
    admin = factory.user("boss", email="boss@example.org")
    project = factory.project("Rich", creator=admin)
    reviewer, senior = _people(factory, project)
    zipper = vocabulary.add_entry(ArtifactEntry, project.id, {"key": "zipper", "label": "Zipper"}, admin)
    scan1 = factory.scan(project, "e1", "s1", n_frames=2, shape=(16, 16, 16))
    scan2 = factory.scan(project, "e1", "s2", shape=(16, 16, 16))
    old = factory.scan(project, "e2", "gone", shape=(16, 16, 16))
    projects.get_or_create_experiment(project, "empty one")
    start = datetime(2023, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    decisions.record_decision(scan1, reviewer, "Q?", role="tier1", note="ringing?", present=["zipper"],
                              absent=["lesions", "misalignment"], location={"i": 1, "j": 2, "k": 3},
                              created_at=start)
    decisions.record_decision(scan1, senior, "UN", role="tier2", note="no", present=["zipper", "ghosting_motion"],
                              created_at=start + timedelta(hours=1))
    decisions.record_decision(scan1, None, "U", role=None, creator_name="Old Reviewer", source="import",
                              created_at=start + timedelta(hours=2))
    decisions.record_decision(scan2, senior, "U", role="tier2", absent=["zipper"], created_at=start)
    decisions.record_decision(old, reviewer, "UE", role="tier1", created_at=start)
    old.archived_at = start
    model = ModelVersion(project_id=project.id, registry_name="qcloop-rich", version="3", alias="champion",
                         output_map=[{"kind": "usable", "key": None}, {"kind": "artifact", "key": "zipper",
                                                                       "entry_id": zipper.id}],
                         metrics={"val_auc": 0.91})
    db.session.add(model)
    db.session.flush()
    first_frame = db.session.scalar(select(Frame).where(Frame.scan_id == scan1.id, Frame.frame_number == 1))
    db.session.add_all([
        Evaluation(model_version_id=model.id, scan_id=scan1.id, frame_id=None, scores={"usable": 0.2, "zipper": 0.8},
                   created_at=start),
        Evaluation(model_version_id=model.id, scan_id=scan1.id, frame_id=first_frame.id, scores={"usable": 0.3},
                   created_at=start + timedelta(minutes=5)),
    ])
    db.session.commit()
    return project


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_full_export_into_an_empty_database_restores_everything(factory, tmp_path, fmt):
    project = _rich_project(factory)
    before = snapshot()
    text = "".join(exporter.export(fmt, [project.id]))
    if fmt == "csv":
        decision_rows = [row for row in read_csv_text(text) if row["record"] == "decision"]
        assert len(decision_rows) == 5  # one row per decision, not only the last
        assert {row["artifact:zipper"] for row in decision_rows} == {"present", "absent", "undefined"}
    path = _save(tmp_path, text, f"full.{fmt}")

    empty_database()
    factory.user("boss", email="boss@example.org")
    factory.user("rev1")
    factory.user("rev2")
    summary = importer.import_file(path, project=None)
    db.session.commit()
    assert summary.counts["projects_added"] == 1 and summary.counts["decisions_added"] == 5
    assert summary.counts["evaluations_added"] == 2 and summary.counts["model_versions_added"] == 1
    after = snapshot()
    assert after == before
    model = db.session.scalar(select(ModelVersion))
    zipper = db.session.scalar(select(ArtifactEntry).where(ArtifactEntry.key == "zipper",
                                                           ArtifactEntry.project_id.is_not(None)))
    assert model.output_map[1]["entry_id"] == zipper.id  # ids are remapped by key

    for mode in ("merge", "replace"):
        again = importer.import_file(path, project=None, mode=mode)
        db.session.commit()
        assert again.changes == 0 and snapshot() == before


def test_reimport_in_either_mode_never_loses_a_decision(factory, tmp_path):
    project = factory.project("Site")
    reviewer, _ = _people(factory, project)
    rows = _miqa_rows(factory)
    everything = write_csv(tmp_path / "all.csv", rows)
    importer.import_file(everything, project=project)
    db.session.commit()
    scan_b = db.session.scalar(select(Scan).where(Scan.name == "scan b"))
    decisions.record_decision(scan_b, reviewer, "U", role="tier1")  # reviewed in qcloop after the import
    db.session.commit()
    total = db.session.scalar(select(func.count()).select_from(Decision))
    assert total == 3

    fewer = write_csv(tmp_path / "fewer.csv", [rows[0], rows[1]])  # scan b and all of visit2 left the tree
    preview = importer.import_file(fewer, project=project, mode="replace", dry_run=True)
    db.session.rollback()
    assert preview.counts["scans_archived"] == 2 and preview.counts["experiments_archived"] == 1
    assert db.session.scalar(select(func.count()).select_from(Scan).where(Scan.archived_at.is_not(None))) == 0

    merged = importer.import_file(fewer, project=project, mode="merge")
    db.session.commit()
    assert merged.changes == 0  # merge never removes
    replaced = importer.import_file(fewer, project=project, mode="replace")
    db.session.commit()
    assert replaced.counts["scans_archived"] == 2
    archived = set(db.session.scalars(select(Scan.name).where(Scan.archived_at.is_not(None))))
    assert archived == {"scan b", "scan c"}
    assert db.session.scalar(select(func.count()).select_from(Decision)) == total
    exported = read_csv_text("".join(exporter.export("miqa-csv", [project.id])))
    assert {row["scan_name"] for row in exported} == {"scan a"}  # archived scans are not exported

    back = importer.import_file(everything, project=project, mode="replace")
    db.session.commit()
    assert back.counts["scans_restored"] == 2 and back.counts["experiments_restored"] == 1
    assert back.counts["decisions_added"] == 0
    assert db.session.scalar(select(func.count()).select_from(Scan).where(Scan.archived_at.is_not(None))) == 0
    assert db.session.scalar(select(func.count()).select_from(Decision)) == total
    # the qcloop review of scan b is newer than the file's decision: it is what MIQA export shows now
    latest = {row["scan_name"]: row["last_decision"] for row in
              read_csv_text("".join(exporter.export("miqa-csv", [project.id])))}
    assert latest["scan b"] == "U"


def test_merge_updates_changed_locations_and_metadata(factory, tmp_path):
    project = factory.project("Site")
    _people(factory, project)
    rows = _miqa_rows(factory)
    importer.import_file(write_csv(tmp_path / "v1.csv", rows), project=project)
    db.session.commit()
    factory.nifti("site/moved/b.nii.gz", shape=(16, 16, 16))
    changed = [list(row) for row in rows]
    changed[2][5] = "site/moved/b.nii.gz"
    changed[2][7] = "subB-renamed"
    summary = importer.import_file(write_csv(tmp_path / "v2.csv", changed), project=project)
    db.session.commit()
    assert summary.counts["frames_changed"] == 1 and summary.counts["scans_changed"] == 1
    assert summary.counts["decisions_added"] == 0
    scan_b = snapshot()["Site"]["experiments"]["visit1"]["scans"]["scan b"]
    assert scan_b["frames"] == {0: "site/moved/b.nii.gz"} and scan_b["subject"] == "subB-renamed"
    frame = db.session.scalar(select(Frame).where(Frame.file_location == "site/moved/b.nii.gz"))
    assert frame.shape == [16, 16, 16]  # header facts read while checking the file


def test_s3_locations_in_miqa_layout(make_app, tmp_path, monkeypatch):
    """MIQA's s3:// form against a real S3 API (moto's server): header checked by a ranged read."""
    import gzip

    import boto3
    import nibabel as nib
    import numpy as np
    from moto.server import ThreadedMotoServer

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="site-bucket")
        image = nib.Nifti1Image(np.zeros((8, 9, 10), dtype=np.uint8), np.eye(4))
        client.put_object(Bucket="site-bucket", Key="qc/visit1/a.nii.gz", Body=gzip.compress(image.to_bytes()))
        client.put_object(Bucket="site-bucket", Key="qc/visit1/bad.nii.gz", Body=b"not an image")
        flat = nib.Nifti1Image(np.zeros((64, 64, 1), dtype=np.uint8), np.eye(4))
        client.put_object(Bucket="site-bucket", Key="qc/visit1/flat.nii.gz", Body=gzip.compress(flat.to_bytes()))
        app = make_app(ALLOWED_ROOTS=["s3://site-bucket/qc"], S3_ENDPOINT_URL=endpoint)
        with app.app_context():
            project = projects.create_project("S3", None)
            db.session.commit()
            good = ["S3", "visit1", "a", "T1", 0, "s3://site-bucket/qc/visit1/a.nii.gz"] + [""] * 10
            summary = importer.import_file(write_csv(tmp_path / "s3.csv", [good]), project=project)
            db.session.commit()
            assert summary.counts["frames_added"] == 1
            frame = db.session.scalar(select(Frame))
            assert frame.file_location == "s3://site-bucket/qc/visit1/a.nii.gz" and frame.shape == [8, 9, 10]
            exported = read_csv_text("".join(exporter.export("miqa-csv", [project.id])))
            assert exported[0]["file_location"] == "s3://site-bucket/qc/visit1/a.nii.gz"
            for key, message in (("qc/visit1/missing.nii.gz", "does not exist"),
                                 ("qc/visit1/bad.nii.gz", "not a readable NIfTI"),
                                 ("qc/visit1/flat.nii.gz", "2-D image (64 x 64 x 1): qcloop reviews 3-D volumes"),
                                 ("elsewhere/a.nii.gz", "outside the allowed roots")):
                row = ["S3", "visit1", "b", "T1", 0, f"s3://site-bucket/{key}"] + [""] * 10
                with pytest.raises(Exception) as refused:
                    importer.import_file(write_csv(tmp_path / "bad.csv", [good, row]), project=project)
                db.session.rollback()
                assert "row 3, field file_location" in str(refused.value) and message in str(refused.value)
            db.session.rollback()
    finally:
        server.stop()


def test_a_reviewers_voxel_goes_to_miqa_files_as_miqas_world_position(factory, tmp_path):
    """MIQA's files hold its viewer's position in mm (LPS); a qcloop review stores a voxel of the original
    grid: MIQA exports carry it through the frame's affine, the full formats keep the voxel."""
    project = factory.project("Points")
    reviewer = factory.member(project, "tier1", "rev1")
    scan = factory.scan(project, name="a")  # phantom affine: 2 mm voxels, RAS, origin 0
    decisions.record_decision(scan, reviewer, "U", role="tier1", location={"i": 3, "j": 4, "k": 5})
    db.session.commit()
    (row,) = read_csv_text("".join(exporter.export("miqa-csv", [project.id])))
    assert row["location_of_interest"] == "i=-6;j=-8;k=10"
    (full_row,) = [r for r in read_csv_text("".join(exporter.export("csv", [project.id]))) if r.get("decision")]
    assert (full_row["location_of_interest"], full_row["location_space"]) == ("i=3;j=4;k=5", "voxel")
    again = importer.import_file(_save(tmp_path, "".join(exporter.export("miqa-csv", [project.id]))), project=project)
    assert again.changes == 0 and again.counts["decisions_already_present"] == 1

    volumes.source_path(db.session.scalar(select(Frame).where(Frame.scan_id == scan.id))).unlink()
    (row,) = read_csv_text("".join(exporter.export("miqa-csv", [project.id])))
    assert row["location_of_interest"] == ""  # no position rather than a wrong one
