"""MIQA's CSV: one row per frame, the scan's last decision repeated on each of its rows.

A location of interest in MIQA's files is MIQA's viewer position (world millimetres, floats); a frame
row pointing elsewhere than the scan's other rows keeps its own location for that frame.
"""
from __future__ import annotations

from typing import Callable, Iterator

from app.services.transfer.csvfile import CsvSink, CsvSource
from app.services.transfer.export_model import format_location, format_time, miqa_present
from app.services.transfer.model import (
    MIQA_CSV_FIELDS, WORLD, DecisionIn, Document, ExperimentIn, FrameIn, ScanIn, clean, parse_frame_number,
    parse_location, parse_scan_type, parse_time, set_once, shared, split_names,
)

COLUMNS = [
    "project_name", "experiment_name", "scan_name", "scan_type", "frame_number", "file_location",
    "experiment_notes", "subject_id", "session_id", "scan_link", "last_decision", "last_decision_creator",
    "last_decision_note", "last_decision_created", "identified_artifacts", "location_of_interest",
]
REQUIRED = COLUMNS[:6]
_DECISION_PARTS = ("last_decision_creator", "last_decision_note", "last_decision_created", "identified_artifacts",
                   "location_of_interest")


def read(source: CsvSource, document: Document, unlisted: str, progress: Callable[[float], None]) -> None:
    """Fill the document from MIQA CSV rows; problems are collected, never raised here."""
    problems = document.problems
    missing = [column for column in REQUIRED if column not in source.header]
    for column in missing:
        problems.error("row 1", column, "missing column")
    if missing:
        return
    for column in source.header:
        if column not in COLUMNS:
            problems.warn("row 1", column, "not a MIQA column; ignored")
    for number, row in source.rows():
        document.rows += 1
        if document.rows % 5000 == 0:
            progress(source.fraction)
        _row(document, f"row {number}", row, unlisted)


def _row(document: Document, where: str, row: dict[str, str], unlisted: str) -> None:
    problems = document.problems
    names = {}
    for column in ("project_name", "experiment_name", "scan_name"):
        names[column] = clean(row.get(column))
        if names[column] is None:
            problems.error(where, column, "missing")
    scan_type = clean(row.get("scan_type"))
    if scan_type is None:
        problems.error(where, "scan_type", "missing")
    else:
        scan_type = parse_scan_type(scan_type, where, "scan_type", problems)
    number = parse_frame_number(row.get("frame_number"), where, "frame_number", problems)
    location = clean(row.get("file_location"))
    if location is None:
        problems.error(where, "file_location", "missing")
    if None in names.values():
        return
    project = document.project(names["project_name"], where)
    experiment = project.experiments.get(names["experiment_name"])
    if experiment is None:
        experiment = project.experiments[names["experiment_name"]] = ExperimentIn(where, names["experiment_name"])
    set_once(experiment, "note", clean(row.get("experiment_notes")), where, "experiment_notes", problems)
    scan = experiment.scans.get(names["scan_name"])
    if scan is None:
        scan = experiment.scans[names["scan_name"]] = ScanIn(where, names["scan_name"])
    set_once(scan, "scan_type", scan_type, where, "scan_type", problems)
    set_once(scan, "subject_id", clean(row.get("subject_id")), where, "subject_id", problems)
    set_once(scan, "session_id", shared(clean(row.get("session_id"))), where, "session_id", problems)
    set_once(scan, "link", clean(row.get("scan_link")), where, "scan_link", problems)
    if number is not None and location is not None:
        if number in scan.frames:
            problems.error(where, "frame_number", f"duplicate frame {number} of scan {scan.name!r} "
                                                  f"(first at {scan.frames[number].where})")
        else:
            scan.frames[number] = FrameIn(where, location)
    code = clean(row.get("last_decision"))
    if code is None:
        given = [part for part in _DECISION_PARTS if clean(row.get(part))]
        if given:
            problems.error(where, "last_decision", f"missing while {given[0]} is given")
        return
    decision = DecisionIn(
        where, MIQA_CSV_FIELDS, code, creator=clean(row.get("last_decision_creator")),
        note=row.get("last_decision_note") or "",
        created=parse_time(row.get("last_decision_created"), where, "last_decision_created", problems),
        location=parse_location(clean(row.get("location_of_interest")), where, "location_of_interest", problems,
                                WORLD),
        space=WORLD, present=split_names(row.get("identified_artifacts")), unlisted=unlisted)
    scan.add_decision(decision, frame=number)


def write(events: Iterator[tuple[str, object]]) -> Iterator[str]:
    """MIQA CSV text chunks: one row per frame of every active scan, with the scan's last decision."""
    sink = CsvSink()
    sink.row(COLUMNS)
    rows = 0
    for kind, item in events:
        if kind != "scan" or item.archived or item.experiment.archived:
            continue
        last = item.decisions[-1] if item.decisions else None
        tail = ["", "", "", "", ""]
        if last is not None:
            tail = [last.code, last.creator or "", last.note, format_time(last.created), ";".join(miqa_present(last))]
        for number, location in item.frames:
            point = format_location(*last.location_of(number)) if last is not None else ""
            sink.row([item.experiment.project, item.experiment.name, item.name, item.scan_type, number, location,
                      item.experiment.note, item.subject_id, item.session_id, item.link, *tail, point])
            rows += 1
        if rows >= 2000:
            yield sink.drain()
            rows = 0
    yield sink.drain()
