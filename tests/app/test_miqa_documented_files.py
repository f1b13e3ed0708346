"""MIQA's own files, imported unchanged and exported back with nothing lost: every import file of MIQA's
samples/ folder and the CSV and JSON examples of its docs/imports.md (tests/app/data/miqa/, see NOTICE
there). The examples hold what MIQA's viewer writes: locations of interest as floats, negative too,
an older artifact name (partial_coverage) and a note ending in a space."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from app.db import Decision, Scan, db
from app.services.transfer import exporter, importer
from tests.app.transfer_helpers import empty_database

DATA = Path(__file__).parent / "data" / "miqa"
CSV_FILES = ["demo_project.csv", "scans_to_review.csv", "scans_to_review_optional_columns.csv",
             "docs_imports_example.csv"]
ALIASES = {"partial_coverage": "partial_brain_coverage"}  # MIQA's docs name it so; MIQA writes the other


def _stand_in_images(factory, locations: list[str]) -> None:
    """Small NIfTI files where the file names its images (MIQA's own are megabytes and not copied)."""
    for location in set(locations):
        factory.nifti(location, shape=(8, 8, 8))


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _moment(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _point(text: str | None) -> tuple[float, ...] | None:
    if not text:
        return None
    return tuple(float(part.split("=")[1]) for part in text.split(";"))


def _artifacts(text: str | None) -> frozenset[str]:
    return frozenset(ALIASES.get(name, name) for name in (text or "").split(";") if name)


def _csv_content(rows: list[dict[str, str]]) -> dict:
    """What a MIQA CSV says, by frame: the same whether MIQA or qcloop wrote it (MIQA gives an experiment's
    notes on its first row; times and numbers may be spelled differently)."""
    notes: dict[tuple, str] = {}
    for row in rows:
        if row.get("experiment_notes"):
            notes.setdefault((row["project_name"], row["experiment_name"]), row["experiment_notes"])
    content = {}
    for row in rows:
        key = (row["project_name"], row["experiment_name"], row["scan_name"], int(row["frame_number"]))
        content[key] = (
            row["scan_type"], row["file_location"], notes.get(key[:2], ""), row.get("subject_id", ""),
            row.get("session_id", ""), row.get("scan_link", ""), row.get("last_decision", ""),
            row.get("last_decision_creator", ""), row.get("last_decision_note", ""),
            _moment(row.get("last_decision_created")), _artifacts(row.get("identified_artifacts")),
            _point(row.get("location_of_interest")))
    return content


@pytest.mark.parametrize("name", CSV_FILES)
def test_miqa_csv_files_import_unchanged_and_export_back_whole(factory, tmp_path, name):
    source = DATA / name
    rows = _csv_rows(source.read_text(encoding="utf-8"))
    _stand_in_images(factory, [row["file_location"] for row in rows])

    summary = importer.import_file(source, project=None)
    db.session.commit()
    assert summary.warnings == [] and summary.unmatched_artifacts == {}
    assert summary.counts["frames_added"] == len(rows)
    assert summary.counts["decisions_added"] == len({(r["experiment_name"], r["scan_name"]) for r in rows
                                                        if r.get("last_decision")})

    project_ids = exporter.all_project_ids()
    exported = "".join(exporter.export("miqa-csv", project_ids))
    assert _csv_content(_csv_rows(exported)) == _csv_content(rows)

    back = tmp_path / "back.csv"
    back.write_text(exported, encoding="utf-8")
    again = importer.import_file(back, project=None)
    assert again.changes == 0


def test_documented_csv_keeps_floats_aliases_and_notes(factory):
    source = DATA / "docs_imports_example.csv"
    _stand_in_images(factory, [row["file_location"] for row in _csv_rows(source.read_text(encoding="utf-8"))])
    importer.import_file(source, project=None)
    db.session.commit()

    stored = {scan: decision for scan, decision in db.session.execute(
        select(Scan.name, Decision).join(Decision, Decision.scan_id == Scan.id))}
    a, b, c = stored["Scan A"], stored["Scan B"], stored["Scan C"]
    assert (a.location_i, a.location_j, a.location_k, a.location_space) == (-45.504, -20.451, 15.5, "world")
    assert (c.location_i, c.location_j, c.location_k) == (50.305, -40.541, -30.0)
    assert c.note == "There may be some ghosting motion in this scan "
    assert b.note == "This scan is misaligned and doesn’t cover the whole brain"
    states = {entry.entry.key: entry.state for entry in b.artifacts}
    assert states["full_brain_coverage"] == "absent" and states["misalignment"] == "present"  # partial_coverage
    assert not b.unmatched_artifacts and not b.created_unknown

    exported = "".join(exporter.export("miqa-csv", exporter.all_project_ids()))
    rows = {row["scan_name"]: row for row in _csv_rows(exported)}
    assert rows["Scan B"]["location_of_interest"] == "i=-2.669;j=-61.718;k=-48.763"
    assert rows["Scan C"]["location_of_interest"] == "i=50.305;j=-40.541;k=-30"
    assert rows["Scan A"]["location_of_interest"] == "i=-45.504;j=-20.451;k=15.5"  # the number, not its zeros
    assert rows["Scan C"]["last_decision_note"] == "There may be some ghosting motion in this scan "
    assert set(rows["Scan B"]["identified_artifacts"].split(";")) == {"misalignment", "partial_brain_coverage"}


def _json_content(body: dict) -> dict:
    """What a MIQA JSON says, scan by scan (a last_decision or the last of decisions)."""
    content = {}
    for project, pdata in body["projects"].items():
        for experiment, edata in pdata["experiments"].items():
            for scan, sdata in edata["scans"].items():
                decision = sdata.get("last_decision") or (sdata.get("decisions") or [None])[-1]
                said = None
                if decision:
                    said = (decision["decision"], decision["creator"], decision["note"], _moment(decision["created"]),
                            _artifacts(decision["user_identified_artifacts"]), _point(decision["location"]))
                content[(project, experiment, scan)] = (
                    edata.get("notes"), sdata["type"], sdata.get("subject_id"), sdata.get("session_id"),
                    sdata.get("scan_link"), {int(n): f["file_location"] for n, f in sdata["frames"].items()}, said)
    return content


def _json_locations(body: dict) -> list[str]:
    return [frame["file_location"] for p in body["projects"].values() for e in p["experiments"].values()
            for s in e["scans"].values() for frame in s["frames"].values()]


def test_documented_json_imports_unchanged_and_exports_back_whole(factory, tmp_path):
    source = DATA / "docs_imports_example.json"
    body = json.loads(source.read_text(encoding="utf-8"))
    _stand_in_images(factory, _json_locations(body))

    summary = importer.import_file(source, project=None)
    db.session.commit()
    assert summary.warnings == [] and summary.counts["decisions_added"] == 3

    exported = "".join(exporter.export("miqa-json", exporter.all_project_ids()))
    assert _json_content(json.loads(exported)) == _json_content(body)
    scans = json.loads(exported)["projects"]["My Project"]["experiments"]["Experiment Two"]["scans"]
    assert scans["Scan C"]["last_decision"]["note"] == "There may be some ghosting motion in this scan "
    assert scans["Scan C"]["last_decision"]["location"] == "i=50.305;j=-40.541;k=-30"

    back = tmp_path / "back.json"
    back.write_text(exported, encoding="utf-8")
    assert importer.import_file(back, project=None).changes == 0


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_documented_files_survive_qcloops_full_export(factory, tmp_path, fmt):
    """Through qcloop's full export into an empty qcloop: MIQA's world positions stay MIQA's, to the digit."""
    for name in ("docs_imports_example.json", "docs_imports_example.csv"):
        body = (DATA / name).read_text(encoding="utf-8")
        _stand_in_images(factory, _json_locations(json.loads(body)) if name.endswith(".json")
                         else [row["file_location"] for row in _csv_rows(body)])
        importer.import_file(DATA / name, project=None)
        db.session.commit()
    before = "".join(exporter.export("miqa-json", exporter.all_project_ids()))

    full = tmp_path / f"full.{fmt}"
    exporter.export_to_file(fmt, exporter.all_project_ids(), full)
    empty_database()
    importer.import_file(full, project=None)
    db.session.commit()
    assert "".join(exporter.export("miqa-json", exporter.all_project_ids())) == before
    spaces = set(db.session.scalars(select(Decision.location_space)))
    assert spaces == {"world"}
