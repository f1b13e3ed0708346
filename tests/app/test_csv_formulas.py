"""CSV exports never hand a spreadsheet a formula, and qcloop's own exports re-import byte for byte."""
from __future__ import annotations

import pytest

from app.db import db
from app.services.transfer import exporter, importer
from app.services.transfer.csvfile import escape_formula, unescape_formula
from tests.app.transfer_helpers import empty_database, read_csv_text, snapshot, write_json

ATTACK = "=cmd|' /C calc'!A0"
NOTES = [ATTACK, "- motion", "+1 for ghosting", "@reviewer look", "'=already quoted", "''-two quotes", "'plain",
         "fine"]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.mark.parametrize("text", NOTES + ["\tTab", "\rReturn", "", "'", "-", "'-", "''"])
def test_escaping_is_undone_exactly(text):
    escaped = escape_formula(text)
    assert not escaped.startswith(FORMULA_STARTS)
    assert unescape_formula(escaped) == text


def _document(factory) -> dict:
    """The notes as people typed them (JSON has no formulas to escape)."""
    factory.nifti("site/a.nii.gz", shape=(8, 8, 8))
    factory.user("rev1")
    scans = {f"scan {n}": {"type": "T1", "subject_id": "-sub", "session_id": "+ses", "frames": {"0": "site/a.nii.gz"},
                           "decisions": [{"decision": "U", "creator": "rev1", "note": note,
                                          "created": "2021-09-01T10:00:00+00:00"}]}
             for n, note in enumerate(NOTES)}
    return {"projects": {"Site": {"experiments": {'=HYPERLINK("http://evil")': {"notes": "@SUM(1+1)",
                                                                                "scans": scans}}}}}


@pytest.mark.parametrize("fmt", ["miqa-csv", "csv"])
def test_csv_exports_open_as_text_and_import_back_the_same(factory, tmp_path, fmt):
    project = factory.project("Site")
    importer.import_file(write_json(tmp_path / "in.json", _document(factory)), project=project)
    db.session.commit()
    before = snapshot()

    text = "".join(exporter.export(fmt, [project.id]))
    rows = read_csv_text(text)
    cells = [cell for row in rows for cell in row.values() if cell]
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    note_column = "last_decision_note" if fmt == "miqa-csv" else "decision_note"
    assert "'" + ATTACK in {row[note_column] for row in rows}
    assert "'- motion" in {row[note_column] for row in rows}

    path = tmp_path / f"export-{fmt}.csv"
    path.write_text(text, encoding="utf-8")
    again = importer.import_file(path, project=project)
    db.session.commit()
    assert again.changes == 0 and snapshot() == before

    empty_database()
    fresh = factory.project("Site")
    factory.user("rev1")
    importer.import_file(path, project=fresh)
    db.session.commit()
    assert snapshot() == before
    notes = {decision[3] for experiment in before["Site"]["experiments"].values()
             for scan in experiment["scans"].values() for decision in scan["decisions"]}
    assert notes == set(NOTES)
