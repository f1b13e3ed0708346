"""Files as MIQA itself writes and reads them: its sample files' layout (columns in another order,
notes on an experiment's first row only, zero-padded frame numbers, a decision without a time on
every frame row), its export's column order, its reviewers' partial_brain_coverage artifact, frame
rows pointing at different places, decisions without a time, and artifact names no entry matches."""
from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner
from flask import current_app
from sqlalchemy import func, select

from app.cli import import_command
from app.db import ArtifactEntry, Decision, Project, db
from app.services.errors import InvalidInput
from app.services.transfer import exporter, importer
from tests.app.transfer_helpers import MIQA_HEADER, empty_database, read_csv_text, snapshot, write_csv, write_json
from tests.factories import PASSWORD, login, token_headers

# The column order of MIQA's samples/new_subject_session_scans_to_review.csv (read by name, not position).
SAMPLE_ORDER = ["project_name", "experiment_name", "scan_name", "scan_type", "frame_number", "file_location",
                "last_decision", "last_decision_creator", "last_decision_note", "identified_artifacts",
                "location_of_interest", "subject_id", "session_id", "scan_link"]


def _states(decision_row) -> dict[str, str]:
    return dict(decision_row[7])


def test_miqa_sample_layout_with_a_decision_without_time(factory, tmp_path):
    project = factory.project("Demo")
    factory.member(project, "tier1", "rev1")
    for number in range(3):
        factory.nifti(f"demo/IXI002/dti-{number:02d}.nii.gz", shape=(8, 8, 8))
    factory.nifti("demo/IXI002/t1.nii.gz", shape=(8, 8, 8))
    rows = [["Demo", "IXI002", "0828-DTI", "DTI", f"{n:02d}", f"demo/IXI002/dti-{n:02d}.nii.gz",
             "UN", "rev1@example.org", "motion", "ghosting_motion", "", "01", "01", "https://example.org/ixi"]
            for n in range(3)]
    rows.append(["Demo", "IXI002", "0828-T1", "T1", "0", "demo/IXI002/t1.nii.gz", "", "", "", "", "", "01", "04", ""])
    source = write_csv(tmp_path / "sample.csv", rows, header=SAMPLE_ORDER)

    summary = importer.import_file(source, project=project)
    db.session.commit()
    assert summary.warnings == [] and summary.counts["frames_added"] == 4
    assert summary.counts["decisions_added"] == 1  # the same decision on three frame rows, no time: once
    dti = snapshot()["Demo"]["experiments"]["IXI002"]["scans"]["0828-DTI"]
    assert dti["frames"] == {n: f"demo/IXI002/dti-{n:02d}.nii.gz" for n in range(3)}
    assert (dti["subject"], dti["session"], dti["link"]) == ("01", "01", "https://example.org/ixi")
    (decision,) = dti["decisions"]
    assert decision[:4] == ("UN", "rev1", "tier1", "motion") and _states(decision)["ghosting_motion"] == "present"

    again = importer.import_file(source, project=project)
    db.session.commit()
    assert again.changes == 0 and again.counts["decisions_already_present"] == 1
    assert db.session.scalar(select(func.count()).select_from(Decision)) == 1


def test_notes_on_the_first_row_only_and_miqa_export_columns(factory, tmp_path):
    """MIQA's demo_project.csv gives an experiment's notes on its first row and leaves them empty after."""
    project = factory.project("Demo")
    factory.nifti("demo/a.nii.gz", shape=(8, 8, 8))
    factory.nifti("demo/b.nii.gz", shape=(8, 8, 8))
    empty = [""] * 6
    rows = [["Demo", "IXI016", "MRA", "MRA", "0", "demo/a.nii.gz", "public data; see the link", "02", "01", "", *empty],
            ["Demo", "IXI016", "PD", "PD", "0", "demo/b.nii.gz", "", "02", "02", "", *empty]]
    importer.import_file(write_csv(tmp_path / "demo.csv", rows), project=project)
    db.session.commit()
    assert snapshot()["Demo"]["experiments"]["IXI016"]["note"] == "public data; see the link"

    text = "".join(exporter.export("miqa-csv", [project.id]))
    assert text.splitlines()[0] == ",".join(MIQA_HEADER)  # MIQA's IMPORT_CSV_COLUMNS, in its order
    exported = read_csv_text(text)
    assert [(r["scan_name"], r["frame_number"], r["experiment_notes"]) for r in exported] == [
        ("MRA", "0", "public data; see the link"), ("PD", "0", "public data; see the link")]


def test_partial_brain_coverage_is_full_brain_coverage_flipped(factory, tmp_path):
    project = factory.project("Site")
    factory.member(project, "tier1", "rev1")
    factory.nifti("s/a.nii.gz", shape=(8, 8, 8))
    factory.nifti("s/b.nii.gz", shape=(8, 8, 8))
    rows = [["Site", "e", "a", "T1", "0", "s/a.nii.gz", "", "", "", "", "UN", "rev1", "cut off",
             "2022-03-01 10:00:00+00:00", "partial_brain_coverage;lesions", ""],
            ["Site", "e", "b", "T1", "0", "s/b.nii.gz", "", "", "", "", "U", "rev1", "",
             "2022-03-01 11:00:00+00:00", "", ""]]
    source = write_csv(tmp_path / "miqa.csv", rows)
    importer.import_file(source, project=project)
    db.session.commit()
    before = snapshot()
    scans = before["Site"]["experiments"]["e"]["scans"]
    flagged, plain = _states(scans["a"]["decisions"][0]), _states(scans["b"]["decisions"][0])
    assert flagged["full_brain_coverage"] == "absent" and flagged["lesions"] == "present"
    assert plain["full_brain_coverage"] == "present"  # not marked in MIQA: coverage is full
    assert plain["lesions"] == "absent"

    exported = read_csv_text("".join(exporter.export("miqa-csv", [project.id])))
    assert [r["identified_artifacts"] for r in exported] == ["lesions;partial_brain_coverage", ""]
    back = tmp_path / "back.csv"
    back.write_text("".join(exporter.export("miqa-csv", [project.id])), encoding="utf-8")
    assert importer.import_file(back, project=project).changes == 0
    miqa_json = "".join(exporter.export("miqa-json", [project.id]))
    assert '"user_identified_artifacts": "lesions;partial_brain_coverage"' in miqa_json

    current_app.config["IMPORT_UNLISTED_ARTIFACTS"] = "undefined"
    try:
        later = [["Site", "e", "b", "T1", "0", "s/b.nii.gz", "", "", "", "", "U", "rev1", "",
                  "2022-03-02 11:00:00+00:00", "", ""]]
        importer.import_file(write_csv(tmp_path / "later.csv", later), project=project)
        db.session.commit()
    finally:
        current_app.config["IMPORT_UNLISTED_ARTIFACTS"] = "absent"
    newest = max(snapshot()["Site"]["experiments"]["e"]["scans"]["b"]["decisions"], key=lambda d: d[4])
    assert _states(newest)["full_brain_coverage"] == "undefined" and _states(newest)["lesions"] == "undefined"


def test_miqa_stored_artifact_map_keeps_all_three_states(factory, tmp_path):
    """MIQA stores a decision's artifacts as {name: 1 present, 0 absent, -1 not judged}."""
    project = factory.project("Site")
    factory.member(project, "tier2", "rev2")
    factory.nifti("s/a.nii.gz", shape=(8, 8, 8))
    decision = {"decision": "Q?", "creator": "rev2", "note": "", "created": "2022-04-01T00:00:00+00:00",
                "location": None, "user_identified_artifacts": {
                    "partial_brain_coverage": 0, "lesions": 1, "misalignment": 0, "ghosting_motion": -1}}
    body = {"projects": {"Site": {"experiments": {"e": {"notes": None, "scans": {"a": {
        "type": "T1", "frames": {"0": {"file_location": "s/a.nii.gz"}}, "decisions": [decision]}}}}}}}
    current_app.config["IMPORT_UNLISTED_ARTIFACTS"] = "undefined"
    try:
        importer.import_file(write_json(tmp_path / "stored.json", body), project=project)
        db.session.commit()
    finally:
        current_app.config["IMPORT_UNLISTED_ARTIFACTS"] = "absent"
    states = _states(snapshot()["Site"]["experiments"]["e"]["scans"]["a"]["decisions"][0])
    assert (states["lesions"], states["misalignment"], states["ghosting_motion"]) == ("present", "absent", "undefined")
    assert states["full_brain_coverage"] == "present" and states["inhomogeneity"] == "undefined"


def _frames(factory, tmp_path, locations: list[str], created: str = "2022-01-01 13:44:34"):
    factory.nifti("s/f0.nii.gz", shape=(8, 8, 8))
    factory.nifti("s/f1.nii.gz", shape=(8, 8, 8))
    factory.nifti("s/f2.nii.gz", shape=(8, 8, 8))
    rows = [["Site", "e", "dti", "DTI", str(n), f"s/f{n}.nii.gz", "", "", "", "", "U", "me@my-org.org", "", created,
             "lesions", location] for n, location in enumerate(locations)]
    return write_csv(tmp_path / "frames.csv", rows)


def test_frame_rows_pointing_elsewhere_keep_their_own_location(factory, tmp_path):
    project = factory.project("Site")
    source = _frames(factory, tmp_path, ["i=-45.504;j=-20.451;k=15.5", "i=1.25;j=-2;k=3", ""])
    summary = importer.import_file(source, project=project)
    db.session.commit()
    assert summary.counts["decisions_added"] == 1  # one decision, three frame rows
    decision = db.session.scalar(select(Decision))
    assert (decision.location_i, decision.location_j, decision.location_k) == (-45.504, -20.451, 15.5)
    assert decision.frame_locations == {"1": [1.25, -2.0, 3.0], "2": None}

    for fmt in ("miqa-csv", "csv", "json"):
        if fmt != "miqa-csv":  # through qcloop's full files into an empty qcloop, then as MIQA's CSV again
            full = exporter.export_to_file(fmt, [project.id], tmp_path / f"full.{fmt}")
            empty_database()
            importer.import_file(full, project=None)
            db.session.commit()
            project = db.session.scalar(select(Project).where(Project.name == "Site"))
        rows = read_csv_text("".join(exporter.export("miqa-csv", [project.id])))
        assert [r["location_of_interest"] for r in rows] == ["i=-45.504;j=-20.451;k=15.5", "i=1.25;j=-2;k=3", ""], fmt
    back = tmp_path / "back.csv"
    back.write_text("".join(exporter.export("miqa-csv", [project.id])), encoding="utf-8")
    assert importer.import_file(back, project=project).changes == 0


def test_a_decision_without_time_stays_without_time(factory, tmp_path):
    project = factory.project("Site")
    factory.nifti("s/a.nii.gz", shape=(8, 8, 8))
    decision = {"decision": "Q?", "creator": "me@my-org.org", "note": "ghosting? ", "created": None,
                "user_identified_artifacts": None, "location": None}
    body = {"projects": {"Site": {"experiments": {"e": {"notes": "", "scans": {"a": {
        "type": "T1", "frames": {"0": {"file_location": "s/a.nii.gz"}}, "decisions": [decision]}}}}}}}
    source = write_json(tmp_path / "untimed.json", body)
    importer.import_file(source, project=project)
    db.session.commit()
    stored = db.session.scalar(select(Decision))
    assert stored.created_unknown and stored.note == "ghosting? "

    exported = json.loads("".join(exporter.export("miqa-json", [project.id])))
    last = exported["projects"]["Site"]["experiments"]["e"]["scans"]["a"]["last_decision"]
    assert last["created"] is None and last["note"] == "ghosting? " and last["location"] is None
    assert read_csv_text("".join(exporter.export("miqa-csv", [project.id])))[0]["last_decision_created"] == ""
    full = json.loads("".join(exporter.export("json", [project.id])))
    assert full["projects"]["Site"]["experiments"]["e"]["scans"]["a"]["decisions"][0]["created"] is None
    again = importer.import_file(source, project=project)
    assert again.changes == 0 and again.counts["decisions_already_present"] == 1


def _unknown_tags(factory, tmp_path):
    project = factory.project("Site")
    factory.nifti("s/a.nii.gz", shape=(8, 8, 8))
    rows = [["Site", "e", "a", "T1", "0", "s/a.nii.gz", "", "", "", "", "UN", "me@my-org.org", "",
             "2022-01-02 09:04:22", "lesions;Zipper Artifact;metal_susceptibility", ""]]
    return project, write_csv(tmp_path / "tags.csv", rows)


def test_unknown_artifact_names_are_kept_listed_and_exported_back(factory, tmp_path):
    project, source = _unknown_tags(factory, tmp_path)
    summary = importer.import_file(source, project=project)
    db.session.commit()
    assert summary.unmatched_artifacts == {"Zipper Artifact": 1}
    assert any("unknown artifact 'Zipper Artifact'" in warning for warning in summary.warnings)
    decision = db.session.scalar(select(Decision))
    assert decision.unmatched_artifacts == {"Zipper Artifact": "present"}
    states = {a.entry.key: a.state for a in decision.artifacts}
    assert states["susceptibility_metal"] == "present" and states["lesions"] == "present"  # an older MIQA name

    row = read_csv_text("".join(exporter.export("miqa-csv", [project.id])))[0]
    assert row["identified_artifacts"].split(";") == ["lesions", "susceptibility_metal", "Zipper Artifact"]
    full = exporter.export_to_file("json", [project.id], tmp_path / "full.json")
    empty_database()
    importer.import_file(full, project=None)
    db.session.commit()
    assert db.session.scalar(select(Decision.unmatched_artifacts)) == {"Zipper Artifact": "present"}


def test_unknown_artifact_names_join_the_vocabulary_when_asked(factory, tmp_path):
    project, source = _unknown_tags(factory, tmp_path)
    summary = importer.import_file(source, project=project, add_unknown_artifacts=True)
    db.session.commit()
    assert summary.unmatched_artifacts == {} and summary.counts["vocabulary_added"] == 1
    entry = db.session.scalar(select(ArtifactEntry).where(ArtifactEntry.project_id == project.id,
                                                          ArtifactEntry.key == "zipper_artifact"))
    assert entry.label == "Zipper Artifact"
    decision = db.session.scalar(select(Decision))
    assert not decision.unmatched_artifacts
    assert {a.entry.key: a.state for a in decision.artifacts}["zipper_artifact"] == "present"


def test_add_unknown_artifacts_from_the_command_line_and_the_api(app, client, factory, tmp_path):
    project, source = _unknown_tags(factory, tmp_path)
    preview = CliRunner().invoke(import_command, [str(source), "--project", "Site", "--dry-run"])
    assert preview.exit_code == 0, preview.output
    assert "unknown artifact 'Zipper Artifact'" in preview.output

    factory.member(project, "admin", "projectadmin")
    headers = token_headers(client, "projectadmin")
    answer = client.post(f"/api/v1/projects/{project.id}/import", headers=headers, content_type="multipart/form-data",
                         data={"file": (io.BytesIO(source.read_bytes()), "tags.csv"), "add_unknown_artifacts": "true"})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["counts"]["vocabulary_added"] == 1 and answer.get_json()["unmatched_artifacts"] == {}
    assert db.session.scalar(select(ArtifactEntry.label).where(ArtifactEntry.key == "zipper_artifact")) == \
        "Zipper Artifact"


def test_location_errors_name_the_real_cause(factory, tmp_path):
    project = factory.project("Site")
    cases = {"i=1.5.2;j=0;k=0": "i is not a number ('1.5.2')", "i=nan;j=0;k=0": "i is not a finite number ('nan')",
             "i=1;i=2;k=3": "i is given twice"}
    for text, message in cases.items():
        with pytest.raises(InvalidInput) as caught:
            importer.import_file(_frames(factory, tmp_path, [text]), project=project)
        assert caught.value.details["errors"][0] == {"where": "row 2", "field": "location_of_interest",
                                                     "message": f"{text!r}: {message}"}
        db.session.rollback()


@pytest.mark.browser
def test_viewer_shows_a_miqa_position_at_its_nearest_voxel(app, factory, live_server, page, tmp_path):
    """MIQA's position is in its viewer's world (LPS millimetres); the page maps it through the frame's affine
    (2 mm voxels from the origin here) and rounds: (-6.4, -9.7, 14.3) LPS is voxel (3.2, 4.85, 7.15)."""
    project = factory.project("Site")
    factory.member(project, "tier2", "bob")
    factory.nifti("s/a.nii.gz", shape=(16, 16, 16))
    rows = [["Site", "e", "a", "T1", "0", "s/a.nii.gz", "", "", "", "", "Q?", "me@my-org.org", "look here",
             "2022-01-02 14:02:57", "", "i=-6.4;j=-9.7;k=14.3"]]
    importer.import_file(write_csv(tmp_path / "point.csv", rows), project=project)
    db.session.commit()
    scan_id = db.session.scalar(select(Decision.scan_id))

    page.goto(live_server.url + "/login")
    page.fill("#username", "bob")
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(live_server.url + "/")
    page.goto(f"{live_server.url}/scans/{scan_id}")
    page.wait_for_function("() => document.querySelector('#viewer').dataset.loaded === 'full'", timeout=30000)
    page.click("text=MIQA position i -6.4, j -9.7, k 14.3")
    page.wait_for_function("() => document.querySelector('#crosshair').textContent.includes('voxel 3, 5, 7')")


def test_import_page_lists_unmatched_names_and_adds_them_when_asked(client, factory, tmp_path):
    project, source = _unknown_tags(factory, tmp_path)
    factory.member(project, "admin", "projectadmin")
    login(client, "projectadmin")
    url = f"/admin/projects/{project.id}/import"
    kept = client.post(url, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(source.read_bytes()), "tags.csv"), "mode": "merge", "dry_run": "on"})
    assert kept.status_code == 200 and b"Unmatched artifact names, kept on their decisions" in kept.data
    assert b"Zipper Artifact (1)" in kept.data

    preview = client.post(url, content_type="multipart/form-data",
                          data={"file": (io.BytesIO(source.read_bytes()), "tags.csv"), "mode": "merge", "dry_run": "on",
                                "add_unknown_artifacts": "on"})
    assert preview.status_code == 200 and b"Unmatched artifact names" not in preview.data
    assert b'name="add_unknown_artifacts" value="on"' in preview.data  # applying keeps the choice
    token = preview.data.split(b'name="token" value="')[1].split(b'"')[0].decode()
    applied = client.post(url + "/apply", data={"token": token, "mode": "merge", "filename": "tags.csv",
                                                "add_unknown_artifacts": "on"})
    assert applied.status_code == 200 and b"Imported" in applied.data
    decision = db.session.scalar(select(Decision))
    assert {a.entry.key: a.state for a in decision.artifacts}["zipper_artifact"] == "present"
