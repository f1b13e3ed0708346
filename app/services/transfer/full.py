"""qcloop's full CSV: every decision (one row each) with the state of every artifact entry, plus
the rows that make a re-import restore the same state: vocabulary, model versions, experiments,
scans, frames and model evaluations. The ``record`` column says what a row is."""
from __future__ import annotations

import json
from typing import Any, Callable, Iterator

from app.services.transfer import people
from app.services.transfer.csvfile import CsvSink, CsvSource
from app.services.transfer.export_model import format_location, format_time, location_object
from app.services.transfer.model import (
    ARTIFACT_STATES, FULL_CSV_FIELDS, VOXEL, DecisionIn, Document, EvaluationIn, ExperimentIn, FrameIn,
    ModelVersionIn, ScanIn, clean, parse_frame_number, parse_location, parse_scan_type, parse_space, parse_time,
    set_once, shared,
)

COLUMNS = [
    "record", "project_name", "experiment_name", "scan_name", "frame_number", "file_location", "scan_type",
    "subject_id", "session_id", "scan_link", "experiment_notes", "archived", "decision", "decision_creator",
    "decision_creator_role", "decision_note", "decision_created", "decision_source", "location_of_interest",
    "location_space", "frame_locations", "unmatched_artifacts", "model_name", "model_version", "model_alias",
    "model_run_id", "model_output_map", "model_metrics",
    "evaluation_scores", "created", "key", "label", "meaning", "position", "shortcut", "requires_note", "retired",
    "username", "email", "role",
]
ARTIFACT_PREFIX = "artifact:"
RECORDS = ("option", "entry", "member", "model", "experiment", "scan", "frame", "decision", "evaluation")


def _flag(value: str | None, where: str, field: str, problems) -> bool | None:
    text = (clean(value) or "").lower()
    if not text:
        return None
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    problems.error(where, field, f"{value!r} is not true or false")
    return None


def _json(value: str | None, where: str, field: str, kind: type, problems) -> Any:
    text = clean(value)
    if text is None:
        return kind()
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # a cell nested past Python's recursion limit is as unreadable
        parsed = None
    if not isinstance(parsed, kind):
        problems.error(where, field, f"must be a JSON {'object' if kind is dict else 'list'}")
        return None
    return parsed


def read(source: CsvSource, document: Document, progress: Callable[[float], None]) -> None:
    problems = document.problems
    for column in ("record", "project_name"):
        if column not in source.header:
            problems.error("row 1", column, "missing column")
    if problems.error_count:
        return
    artifact_columns = [c for c in source.header if c.startswith(ARTIFACT_PREFIX)]
    for column in source.header:
        if column not in COLUMNS and column not in artifact_columns:
            problems.warn("row 1", column, "not a qcloop column; ignored")
    for number, row in source.rows():
        document.rows += 1
        if document.rows % 5000 == 0:
            progress(source.fraction)
        _row(document, f"row {number}", row, artifact_columns)


def _row(document: Document, where: str, row: dict[str, str], artifact_columns: list[str]) -> None:
    problems = document.problems
    record = clean(row.get("record"))
    if record not in RECORDS:
        problems.error(where, "record", f"{record!r} is not one of {', '.join(RECORDS)}")
        return
    project_name = clean(row.get("project_name"))
    if project_name is None:
        problems.error(where, "project_name", "missing")
        return
    project = document.project(project_name, where)
    if record in ("option", "entry"):
        if clean(row.get("key")) is None:
            problems.error(where, "key", "missing")
            return
        fields: dict[str, Any] = {"where": where, "key": clean(row["key"]), "label": clean(row.get("label"))}
        if record == "option":
            fields["meaning"] = clean(row.get("meaning"))
            fields["requires_note"] = bool(_flag(row.get("requires_note"), where, "requires_note", problems))
        if clean(row.get("position")) is not None:
            try:
                fields["position"] = int(row["position"])
            except ValueError:
                problems.error(where, "position", f"{row['position']!r} is not a whole number")
        fields["shortcut"] = clean(row.get("shortcut"))
        fields["retired"] = bool(_flag(row.get("retired"), where, "retired", problems))
        (project.options if record == "option" else project.entries).append(fields)
        return
    if record == "member":
        member = people.read_member(row, where, problems)
        if member is not None:
            project.members.append(member)
        return
    if record == "model":
        name, version = clean(row.get("model_name")), clean(row.get("model_version"))
        if not name or not version:
            problems.error(where, "model_name", "a model row needs model_name and model_version")
            return
        project.model_versions.append(ModelVersionIn(
            where, name, version, alias=clean(row.get("model_alias")),
            output_map=_json(row.get("model_output_map"), where, "model_output_map", list, problems) or [],
            metrics=_json(row.get("model_metrics"), where, "model_metrics", dict, problems) or {},
            mlflow_run_id=clean(row.get("model_run_id")),
            created=parse_time(row.get("created"), where, "created", problems)))
        return
    experiment_name = clean(row.get("experiment_name"))
    if experiment_name is None:
        problems.error(where, "experiment_name", "missing")
        return
    experiment = project.experiments.get(experiment_name)
    if experiment is None:
        experiment = project.experiments[experiment_name] = ExperimentIn(where, experiment_name)
    if record == "experiment":
        set_once(experiment, "note", clean(row.get("experiment_notes")), where, "experiment_notes", problems)
        experiment.archived = _flag(row.get("archived"), where, "archived", problems)
        return
    scan_name = clean(row.get("scan_name"))
    if scan_name is None:
        problems.error(where, "scan_name", "missing")
        return
    scan = experiment.scans.get(scan_name)
    if scan is None:
        scan = experiment.scans[scan_name] = ScanIn(where, scan_name)
    if record == "scan":
        scan_type = parse_scan_type(clean(row.get("scan_type")), where, "scan_type", problems, own=True)
        set_once(scan, "scan_type", scan_type, where, "scan_type", problems)
        set_once(scan, "subject_id", clean(row.get("subject_id")), where, "subject_id", problems)
        set_once(scan, "session_id", shared(clean(row.get("session_id"))), where, "session_id", problems)
        set_once(scan, "link", clean(row.get("scan_link")), where, "scan_link", problems)
        scan.archived = _flag(row.get("archived"), where, "archived", problems)
    elif record == "frame":
        number = parse_frame_number(row.get("frame_number"), where, "frame_number", problems)
        location = clean(row.get("file_location"))
        if location is None:
            problems.error(where, "file_location", "missing")
        elif number is not None:
            if number in scan.frames:
                problems.error(where, "frame_number", f"duplicate frame {number} (first at {scan.frames[number].where})")
            else:
                scan.frames[number] = FrameIn(where, location)
    elif record == "decision":
        _decision(row, where, scan, artifact_columns, problems)
    else:
        _evaluation(row, where, scan, problems)


def _decision(row: dict[str, str], where: str, scan: ScanIn, artifact_columns: list[str], problems) -> None:
    code = clean(row.get("decision"))
    if code is None:
        problems.error(where, "decision", "missing")
        return
    present, absent = [], []
    for column in artifact_columns:
        state = (clean(row.get(column)) or "undefined").lower()
        if state not in ARTIFACT_STATES:
            problems.error(where, column, f"{row[column]!r} is not one of {', '.join(ARTIFACT_STATES)}")
            return
        key = column[len(ARTIFACT_PREFIX):]
        if state == "present":
            present.append(key)
        elif state == "absent":
            absent.append(key)
    space = parse_space(row.get("location_space"), where, "location_space", problems, VOXEL)
    decision = DecisionIn(
        where, FULL_CSV_FIELDS, code, creator=clean(row.get("decision_creator")),
        role=clean(row.get("decision_creator_role")), role_given=True, note=row.get("decision_note") or "",
        created=parse_time(row.get("decision_created"), where, "decision_created", problems),
        location=parse_location(clean(row.get("location_of_interest")), where, "location_of_interest", problems,
                                space),
        space=space, present=tuple(present), absent=tuple(absent), unlisted="undefined",
        source=(clean(row.get("decision_source")) or "import")[:20])
    frame_locations = _json(row.get("frame_locations"), where, "frame_locations", dict, problems) or {}
    for number, point in frame_locations.items():
        frame = parse_frame_number(number, where, "frame_locations", problems)
        if frame is not None:
            decision.set_frame_location(frame, parse_location(point, where, "frame_locations", problems, space))
    unmatched = _json(row.get("unmatched_artifacts"), where, "unmatched_artifacts", dict, problems) or {}
    bad = [name for name, state in unmatched.items() if state not in ARTIFACT_STATES]
    if bad:
        problems.error(where, "unmatched_artifacts", f"state of {bad[0]!r} is not one of {', '.join(ARTIFACT_STATES)}")
        return
    decision.add_states(unmatched)
    scan.add_decision(decision)


def _evaluation(row: dict[str, str], where: str, scan: ScanIn, problems) -> None:
    name, version = clean(row.get("model_name")), clean(row.get("model_version"))
    if not name or not version:
        problems.error(where, "model_name", "an evaluation row needs model_name and model_version")
        return
    scores = _json(row.get("evaluation_scores"), where, "evaluation_scores", dict, problems)
    number = None
    if clean(row.get("frame_number")) is not None:
        number = parse_frame_number(row.get("frame_number"), where, "frame_number", problems)
    if scores is not None:
        scan.evaluations.append(EvaluationIn(where, (name, version), number, scores,
                                             parse_time(row.get("created"), where, "created", problems)))


def write(events: Iterator[tuple[str, object]], artifact_keys: list[str]) -> Iterator[str]:
    """Full CSV text chunks; ``artifact_keys`` (every project's entries) make the artifact columns."""
    sink = CsvSink()
    artifact_columns = [ARTIFACT_PREFIX + key for key in artifact_keys]
    columns = COLUMNS + artifact_columns
    index = {name: position for position, name in enumerate(columns)}
    sink.row(columns)

    def row(**cells: Any) -> None:
        line: list[Any] = [""] * len(columns)
        for name, value in cells.items():
            line[index[name]] = value
        sink.row(line)

    count = 0
    for kind, item in events:
        if kind == "project":
            for option in item.options:
                row(record="option", project_name=item.name, **_vocab_cells(option))
            for entry in item.entries:
                row(record="entry", project_name=item.name, **_vocab_cells(entry))
            for member in item.members:
                row(record="member", project_name=item.name, username=member["username"], email=member["email"] or "",
                    role=member["role"])
            for model in item.model_versions:
                row(record="model", project_name=item.name, model_name=model["registry_name"],
                    model_version=model["version"], model_alias=model["alias"] or "",
                    model_run_id=model["mlflow_run_id"] or "", model_output_map=json.dumps(model["output_map"]),
                    model_metrics=json.dumps(model["metrics"]), created=model["created"])
        elif kind == "experiment":
            row(record="experiment", project_name=item.project, experiment_name=item.name,
                experiment_notes=item.note, archived=str(item.archived).lower())
        elif kind == "scan":
            names = {"project_name": item.experiment.project, "experiment_name": item.experiment.name,
                     "scan_name": item.name}
            row(record="scan", scan_type=item.scan_type, subject_id=item.subject_id, session_id=item.session_id,
                scan_link=item.link, archived=str(item.archived).lower(), **names)
            for number, location in item.frames:
                row(record="frame", frame_number=number, file_location=location, **names)
            for d in item.decisions:
                states = {ARTIFACT_PREFIX + key: state for key, state in d.states.items()}
                located = d.location[0] is not None
                frame_locations = {str(n): location_object(p) for n, p in sorted(d.frame_locations.items())}
                row(record="decision", decision=d.code, decision_creator=d.creator, decision_creator_role=d.role,
                    decision_note=d.note, decision_created=format_time(d.created), decision_source=d.source,
                    location_of_interest=format_location(*d.location), location_space=d.space if located else "",
                    frame_locations=json.dumps(frame_locations) if frame_locations else "",
                    unmatched_artifacts=json.dumps(d.unmatched) if d.unmatched else "", **states, **names)
            for e in item.evaluations:
                row(record="evaluation", frame_number="" if e.frame_number is None else e.frame_number,
                    model_name=e.model[0], model_version=e.model[1], evaluation_scores=json.dumps(e.scores),
                    created=format_time(e.created), **names)
            count += 1
            if count % 500 == 0:
                yield sink.drain()
    yield sink.drain()


def _vocab_cells(row: dict[str, Any]) -> dict[str, Any]:
    cells = {"key": row["key"], "label": row["label"], "position": row["position"], "shortcut": row["shortcut"] or "",
             "retired": str(row["retired"]).lower()}
    if "meaning" in row:
        cells["meaning"] = row["meaning"]
        cells["requires_note"] = str(row["requires_note"]).lower()
    return cells
