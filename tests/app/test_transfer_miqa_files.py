"""Files as MIQA itself writes and reads them: its sample files' layout (columns in another order,
notes on an experiment's first row only, zero-padded frame numbers, a decision without a time on
every frame row), its export's column order, and its reviewers' partial_brain_coverage artifact."""
from __future__ import annotations

from flask import current_app
from sqlalchemy import func, select

from app.db import Decision, db
from app.services.transfer import exporter, importer
from tests.app.transfer_helpers import MIQA_HEADER, read_csv_text, snapshot, write_csv, write_json

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
    assert summary["warnings"] == [] and summary["counts"]["frames_added"] == 4
    assert summary["counts"]["decisions_added"] == 1  # the same decision on three frame rows, no time: once
    dti = snapshot()["Demo"]["experiments"]["IXI002"]["scans"]["0828-DTI"]
    assert dti["frames"] == {n: f"demo/IXI002/dti-{n:02d}.nii.gz" for n in range(3)}
    assert (dti["subject"], dti["session"], dti["link"]) == ("01", "01", "https://example.org/ixi")
    (decision,) = dti["decisions"]
    assert decision[:4] == ("UN", "rev1", "tier1", "motion") and _states(decision)["ghosting_motion"] == "present"

    again = importer.import_file(source, project=project)
    db.session.commit()
    assert again["changes"] == 0 and again["counts"]["decisions_already_present"] == 1
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
    assert importer.import_file(back, project=project)["changes"] == 0
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
