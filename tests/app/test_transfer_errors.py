"""Bad input: every error class names its row (or JSON path) and field, and the database stays as it was."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import current_app

from app.db import db
from app.services.errors import InvalidInput
from app.services.transfer import import_apply, importer
from tests.app.transfer_helpers import MIQA_HEADER, counts, snapshot, write_csv, write_json


@pytest.fixture
def site(factory, tmp_path):
    """A project already holding one imported scan, and a good row to start bad files from."""
    project = factory.project("Site")
    factory.member(project, "tier1", "rev1")
    factory.nifti("site/a.nii.gz", shape=(16, 16, 16))
    factory.nifti("site/b.nii.gz", shape=(16, 16, 16))
    good = ["Site", "visit1", "a", "T1", "0", "site/a.nii.gz", "", "", "", "", "U", "rev1", "", "", "", ""]
    importer.import_file(write_csv(tmp_path / "good.csv", [good]), project=project)
    db.session.commit()
    return project, good


def _row(good, **changes):
    row = list(good)
    for name, value in changes.items():
        row[MIQA_HEADER.index(name)] = value
    return row


def _refused(path, project, where: str, field: str | None, fragment: str) -> InvalidInput:
    before, numbers = snapshot(), counts()
    with pytest.raises(InvalidInput) as caught:
        importer.import_file(path, project=project)
    db.session.rollback()
    problems = caught.value.details["errors"]
    assert any(p["where"] == where and p["field"] == field and fragment in p["message"] for p in problems), problems
    assert where in caught.value.message
    assert snapshot() == before and counts() == numbers
    return caught.value


@pytest.mark.parametrize("changes, field, fragment", [
    ({"scan_type": "XRAY"}, "scan_type", "unknown scan type 'XRAY'"),
    ({"frame_number": "one"}, "frame_number", "not a whole number"),
    ({"frame_number": "-2"}, "frame_number", "negative"),
    ({"last_decision": "maybe"}, "last_decision", "unknown decision 'maybe'"),
    ({"last_decision": "", "last_decision_note": "orphan note"}, "last_decision", "missing while"),
    ({"last_decision_created": "yesterday"}, "last_decision_created", "not a date and time"),
    ({"location_of_interest": "i=1;j=two;k=3"}, "location_of_interest", "j is not a number ('two')"),
    ({"location_of_interest": "i=1;j=2"}, "location_of_interest", "k is missing"),
    ({"location_of_interest": "x=1;j=2;k=3"}, "location_of_interest", "'x=1' is not one of i=.., j=.., k=.."),
    ({"file_location": "../../etc/passwd"}, "file_location", "outside the allowed roots"),
    ({"file_location": "/etc/hostname"}, "file_location", "outside the allowed roots"),
    ({"file_location": "site/nothing-here.nii.gz"}, "file_location", "does not exist"),
    ({"project_name": "Elsewhere"}, "project_name", "this import is into 'Site'"),
    ({"scan_name": ""}, "scan_name", "missing"),
])
def test_bad_rows_name_row_and_field_and_change_nothing(site, tmp_path, changes, field, fragment):
    project, good = site
    bad = _row(good, **{"scan_name": "b", "file_location": "site/b.nii.gz", **changes})
    path = write_csv(tmp_path / "bad.csv", [good, bad])
    _refused(path, project, "row 3", field, fragment)


def test_duplicate_frame_and_conflicting_rows(site, tmp_path):
    project, good = site
    path = write_csv(tmp_path / "dup.csv", [good, _row(good, file_location="site/b.nii.gz")])
    _refused(path, project, "row 3", "frame_number", "duplicate frame 0 of scan 'a' (first at row 2)")
    path = write_csv(tmp_path / "clash.csv", [good, _row(good, frame_number="1", scan_type="T2",
                                                         file_location="site/b.nii.gz")])
    _refused(path, project, "row 3", "scan_type", "conflicts with 'T1'")


def test_missing_columns_and_unknown_columns(site, tmp_path):
    project, good = site
    header = [name for name in MIQA_HEADER if name != "file_location"]
    path = write_csv(tmp_path / "cols.csv", [good[:5] + good[6:]], header=header)
    _refused(path, project, "row 1", "file_location", "missing column")
    extra = write_csv(tmp_path / "extra.csv", [good + ["whatever"]], header=MIQA_HEADER + ["favourite_colour"])
    summary = importer.import_file(extra, project=project)
    assert summary.warnings == ["row 1, field favourite_colour: not a MIQA column; ignored"]


def test_not_an_image_and_the_missing_file_setting(site, tmp_path):
    project, good = site
    target = Path(current_app.config["DATA_ROOT"]) / "site" / "broken.nii.gz"
    target.write_bytes(b"definitely not a NIfTI")
    bad = _row(good, scan_name="b", file_location="site/broken.nii.gz")
    _refused(write_csv(tmp_path / "broken.csv", [good, bad]), project, "row 3", "file_location",
             "not a readable NIfTI image")
    missing = _row(good, scan_name="c", file_location="site/not-yet.nii.gz")
    current_app.config["IMPORT_MISSING_FILES"] = "warn"
    try:
        summary = importer.import_file(write_csv(tmp_path / "warn.csv", [good, missing]), project=project)
        db.session.commit()
    finally:
        current_app.config["IMPORT_MISSING_FILES"] = "error"
    assert summary.counts["frames_added"] == 1
    assert summary.warnings == [f"row 3, field file_location: file {current_app.config['DATA_ROOT']}"
                                   "/site/not-yet.nii.gz does not exist"]


def test_many_errors_are_all_reported(site, tmp_path):
    project, good = site
    rows = [good] + [_row(good, scan_name=f"s{n}", frame_number="x") for n in range(150)]
    error = _refused(write_csv(tmp_path / "many.csv", rows), project, "row 3", "frame_number", "not a whole number")
    assert error.details["error_count"] == 150 and len(error.details["errors"]) == 100
    assert "(and 149 more)" in error.message


@pytest.mark.parametrize("body, where, field, fragment", [
    ({"nothing": {}}, "$", "projects", "missing"),
    ({"projects": {"Site": {"experiments": {"e": {"scans": {"s": {"type": "T1", "frames": {"zero": "site/a.nii.gz"}}}}}}}},
     '$.projects.Site.experiments.e.scans.s.frames["zero"]', "frame_number", "not a whole number"),
    ({"projects": {"Site": {"experiments": {"e": {"scans": {"s": {"type": "T1", "frames": {"0": "site/a.nii.gz"},
                                                                  "decisions": [{"decision": "U"}, {"note": "x"}]}}}}}}},
     "$.projects.Site.experiments.e.scans.s.decisions[1]", "decision", "missing"),
    ({"projects": {"Site": {"experiments": {"e": {"scans": {"s": {"type": "T1", "frames": {"0": "site/a.nii.gz"},
                                                                  "last_decision": {"decision": "U",
                                                                                    "location": "here"}}}}}}}},
     "$.projects.Site.experiments.e.scans.s.last_decision", "location", "i=..;j=..;k=.."),
    ({"projects": {"Site": {"experiments": {"e": {"scans": {"s": {"type": "T1", "frames": {"0": "site/a.nii.gz"},
                                                                  "decisions": [{"decision": "U",
                                                                                 "artifacts": {"lesions": "maybe"}}]}}}}}}},
     "$.projects.Site.experiments.e.scans.s.decisions[0]", "artifacts.lesions", "is not one of"),
])
def test_bad_json_names_the_path_and_field(site, tmp_path, body, where, field, fragment):
    project, _ = site
    _refused(write_json(tmp_path / "bad.json", body), project, where, field, fragment)


def test_truncated_json_and_non_utf8_csv(site, tmp_path):
    project, _ = site
    path = tmp_path / "cut.json"
    path.write_text('{"projects": {"Site": {"experiments": {"e": {"scans": {"s": {"type": "T1", "fra')
    _refused(path, project, "$", None, "")
    path = tmp_path / "latin1.csv"
    path.write_bytes(",".join(MIQA_HEADER).encode() + b"\nSite,visit1,\xe9t\xe9,T1,0,site/a.nii.gz" + b"," * 10 + b"\n")
    _refused(path, project, "row 2", None, "not UTF-8")


def test_a_failure_while_writing_leaves_nothing(site, tmp_path, monkeypatch):
    project, good = site
    rows = [good] + [_row(good, scan_name=f"new{n}", file_location="site/b.nii.gz") for n in range(10)]
    before, numbers = snapshot(), counts()

    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(import_apply, "_insert_evaluations", explode)
    with pytest.raises(RuntimeError):
        importer.import_file(write_csv(tmp_path / "boom.csv", rows), project=project)
    db.session.rollback()
    assert snapshot() == before and counts() == numbers
