"""MIQA's JSON (projects > experiments > scans > frames) and qcloop's full JSON, which extends it.

The reader streams the file with ijson and builds one scan object at a time, so a large
file is never held in memory whole. A scan may carry MIQA's single ``last_decision``
object, a ``decisions`` list, or both (the last decision then counts once).
"""
from __future__ import annotations

import json
from typing import Any, BinaryIO, Callable, Iterator

import ijson

from app.services.transfer import people
from app.services.transfer.export_model import format_location, format_time, location_object, miqa_present
from app.services.transfer.model import (
    ARTIFACT_STATES, JSON_FIELDS, VOXEL, WORLD, DecisionIn, Document, EvaluationIn, ExperimentIn, FrameIn,
    ModelVersionIn, ProjectIn, ScanIn, clean, parse_frame_number, parse_location, parse_scan_type, parse_space,
    parse_time, set_once, split_names, split_states,
)

FULL_FORMAT = "qcloop-full"
_STARTS = ("start_map", "start_array")
_ENDS = ("end_map", "end_array")
_SCAN_KEYS = {"type", "scan_type", "subject_id", "session_id", "scan_link", "archived", "frames", "last_decision",
              "decisions", "evaluations"}


def _path(*parts: str) -> str:
    return "$" + "".join(f"[{json.dumps(part)}]" if not part.isidentifier() else f".{part}" for part in parts)


class _Events:
    """The ijson event stream with helpers to walk maps entry by entry or build one value whole."""

    def __init__(self, handle: BinaryIO) -> None:
        self._it = ijson.parse(handle, use_float=True)

    def next(self) -> tuple[str, Any]:
        _, event, value = next(self._it)
        return event, value

    def build(self, event: str, value: Any) -> Any:
        if event not in _STARTS:
            return value
        builder = ijson.ObjectBuilder()
        builder.event(event, value)
        depth = 1
        while depth:
            event, value = self.next()
            builder.event(event, value)
            depth += event in _STARTS
            depth -= event in _ENDS
        return builder.value

    def entries(self) -> Iterator[tuple[str, str, Any]]:
        """After a start_map: (key, first event, first value) of each entry; consume each value before the next."""
        while True:
            event, value = self.next()
            if event == "end_map":
                return
            key = value
            event, value = self.next()
            yield key, event, value


def read(handle: BinaryIO, document: Document, unlisted: str, progress: Callable[[float], None],
         size: int) -> None:
    problems = document.problems
    events = _Events(handle)
    try:
        event, value = events.next()
        if event != "start_map":
            problems.error("$", None, "the file must hold a JSON object with a 'projects' object")
            return
        seen_projects = False
        for key, event, value in events.entries():
            if key == "projects" and event == "start_map":
                seen_projects = True
                for name, event, value in events.entries():
                    where = _path("projects", name)
                    if event != "start_map":
                        problems.error(where, None, "a project must be an object")
                        events.build(event, value)
                        continue
                    _project(events, document, document.project(name, where), unlisted,
                             lambda: progress(min(1.0, handle.tell() / max(1, size))))
            elif key == "format":
                if value == FULL_FORMAT:
                    document.format = "full-json"
            else:
                events.build(event, value)
        if not seen_projects:
            problems.error("$", "projects", "missing (an object of projects by name)")
    except (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError) as err:
        problems.error("$", None, f"not valid JSON: {err}")
    except StopIteration:
        problems.error("$", None, "the JSON ends too early")


def _project(events: _Events, document: Document, project: ProjectIn, unlisted: str,
             tick: Callable[[], None]) -> None:
    problems = document.problems
    for key, event, value in events.entries():
        where = _path("projects", project.name, key)
        if key == "experiments" and event == "start_map":
            for name, event, value in events.entries():
                exp_where = _path("projects", project.name, "experiments", name)
                if event != "start_map":
                    problems.error(exp_where, None, "an experiment must be an object")
                    events.build(event, value)
                    continue
                experiment = project.experiments.setdefault(name, ExperimentIn(exp_where, name))
                _experiment(events, document, project, experiment, unlisted, tick)
        elif key == "vocabulary":
            vocabulary = events.build(event, value)
            if not isinstance(vocabulary, dict):
                problems.error(where, None, "must be an object with 'decisions' and 'artifacts' lists")
                continue
            project.options.extend(_rows(vocabulary.get("decisions"), where + ".decisions", problems))
            project.entries.extend(_rows(vocabulary.get("artifacts"), where + ".artifacts", problems))
        elif key == "members":
            members = events.build(event, value)
            for index, raw in enumerate(members if isinstance(members, list) else [None]):
                member = people.read_member(raw if isinstance(raw, dict) else {}, f"{where}[{index}]", problems)
                if member is not None:
                    project.members.append(member)
        elif key == "model_versions":
            versions = events.build(event, value)
            for index, raw in enumerate(versions if isinstance(versions, list) else [None]):
                model = _model_version(raw, f"{where}[{index}]", problems)
                if model is not None:
                    project.model_versions.append(model)
        else:
            events.build(event, value)
            problems.warn(where, key, "unknown key; ignored")


def _experiment(events: _Events, document: Document, project: ProjectIn, experiment: ExperimentIn, unlisted: str,
                tick: Callable[[], None]) -> None:
    problems = document.problems
    for key, event, value in events.entries():
        where = _path("projects", project.name, "experiments", experiment.name, key)
        if key == "scans" and event == "start_map":
            for name, event, value in events.entries():
                scan_where = _path("projects", project.name, "experiments", experiment.name, "scans", name)
                raw = events.build(event, value)
                document.rows += 1
                if document.rows % 2000 == 0:
                    tick()
                if not isinstance(raw, dict):
                    problems.error(scan_where, None, "a scan must be an object")
                    continue
                scan = experiment.scans.get(name)
                if scan is None:
                    scan = experiment.scans[name] = ScanIn(scan_where, name)
                _scan(raw, scan, scan_where, document, unlisted)
        elif key in ("notes", "note"):
            note = events.build(event, value)
            set_once(experiment, "note", clean(note) if isinstance(note, str) else None, where, key, problems)
        elif key == "archived":
            flag = events.build(event, value)
            if not isinstance(flag, bool):
                problems.error(where, key, "must be true or false")
            else:
                experiment.archived = flag
        else:
            events.build(event, value)
            problems.warn(where, key, "unknown key; ignored")


def _rows(value: Any, where: str, problems) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(row, dict) and isinstance(row.get("key"), str)
                                              for row in value):
        problems.error(where, None, "must be a list of objects with a 'key'")
        return []
    return [dict(row, where=f"{where}[{index}]") for index, row in enumerate(value)]


def _model_version(raw: Any, where: str, problems) -> ModelVersionIn | None:
    if not isinstance(raw, dict) or not clean(raw.get("registry_name")) or not clean(raw.get("version")):
        problems.error(where, "registry_name", "a model version needs registry_name and version")
        return None
    output_map = raw.get("output_map") or []
    metrics = raw.get("metrics") or {}
    if not isinstance(output_map, list) or not isinstance(metrics, dict):
        problems.error(where, "output_map", "output_map must be a list and metrics an object")
        return None
    return ModelVersionIn(where, str(raw["registry_name"]).strip(), str(raw["version"]).strip(),
                          alias=clean(raw.get("alias")), output_map=output_map, metrics=metrics,
                          mlflow_run_id=clean(raw.get("mlflow_run_id")),
                          created=parse_time(raw.get("created"), where, "created", problems))


def _scan(raw: dict[str, Any], scan: ScanIn, where: str, document: Document, unlisted: str) -> None:
    problems = document.problems
    for key in raw:
        if key not in _SCAN_KEYS:
            problems.warn(where, key, "unknown key; ignored")
    type_key = "type" if "type" in raw else "scan_type"
    raw_type = raw.get(type_key)
    if raw_type is not None and not isinstance(raw_type, str):
        problems.error(where, type_key, "must be text")
    else:
        scan_type = parse_scan_type(clean(raw_type), where, type_key, problems, own=document.format == "full-json")
        set_once(scan, "scan_type", scan_type, where, type_key, problems)
    for key, attribute in (("subject_id", "subject_id"), ("session_id", "session_id"), ("scan_link", "link")):
        value = raw.get(key)
        if value is not None and not isinstance(value, (str, int)):
            problems.error(where, key, "must be text")
            continue
        set_once(scan, attribute, clean(value), where, key, problems)
    if "archived" in raw:
        if not isinstance(raw["archived"], bool):
            problems.error(where, "archived", "must be true or false")
        else:
            scan.archived = raw["archived"]
    frames = raw.get("frames")
    if frames is None:
        frames = {}
    if not isinstance(frames, dict):
        problems.error(where, "frames", "must be an object of frames by number")
        frames = {}
    for raw_number, frame in frames.items():
        frame_where = f"{where}.frames[{json.dumps(raw_number)}]"
        number = parse_frame_number(raw_number, frame_where, "frame_number", problems)
        location = frame.get("file_location") if isinstance(frame, dict) else frame
        if not isinstance(location, str) or not location.strip():
            problems.error(frame_where, "file_location", "missing")
            continue
        if number is None:
            continue
        if number in scan.frames:
            problems.error(frame_where, "frame_number", f"duplicate frame {number} (first at {scan.frames[number].where})")
            continue
        scan.frames[number] = FrameIn(frame_where, location.strip())
    decisions = raw.get("decisions")
    if decisions is not None and not isinstance(decisions, list):
        problems.error(where, "decisions", "must be a list")
        decisions = None
    full = document.format == "full-json"
    for index, item in enumerate(decisions or []):
        decision = _decision(item, f"{where}.decisions[{index}]", problems, unlisted, full)
        if decision is not None:
            scan.add_decision(decision)
    if raw.get("last_decision") is not None:
        decision = _decision(raw["last_decision"], f"{where}.last_decision", problems, unlisted, full)
        if decision is not None:
            scan.add_decision(decision)
    evaluations = raw.get("evaluations")
    if evaluations is not None and not isinstance(evaluations, list):
        problems.error(where, "evaluations", "must be a list")
        evaluations = None
    for index, item in enumerate(evaluations or []):
        evaluation = _evaluation(item, f"{where}.evaluations[{index}]", problems)
        if evaluation is not None:
            scan.evaluations.append(evaluation)


def _decision(raw: Any, where: str, problems, unlisted: str, full: bool) -> DecisionIn | None:
    """A decision object: MIQA's (locations in MIQA's world space) or qcloop's full one (each location
    names its space, voxel when it does not)."""
    if not isinstance(raw, dict):
        problems.error(where, None, "a decision must be an object")
        return None
    code = raw.get("decision")
    if not isinstance(code, str) or not code.strip():
        problems.error(where, "decision", "missing")
        return None
    note = raw.get("note") or ""
    creator = raw.get("creator")
    if not isinstance(note, str):
        problems.error(where, "note", "must be text")
        return None
    if creator is not None and not isinstance(creator, str):
        problems.error(where, "creator", "must be text (a username or e-mail)")
        return None
    location = raw.get("location")
    space = WORLD
    if full:
        given = location.get("space") if isinstance(location, dict) else None
        space = parse_space(given, where, "location.space", problems, VOXEL)
    decision = DecisionIn(where, JSON_FIELDS, code.strip(), creator=clean(creator), note=note,
                          created=parse_time(raw.get("created"), where, "created", problems),
                          location=parse_location(location, where, "location", problems, space), space=space,
                          unlisted=unlisted)
    frame_locations = raw.get("frame_locations") if full else None
    if frame_locations is not None:
        if not isinstance(frame_locations, dict):
            problems.error(where, "frame_locations", "must be an object of locations by frame number")
            return None
        for number, point in frame_locations.items():
            frame = parse_frame_number(number, where, "frame_locations", problems)
            if frame is not None:
                decision.set_frame_location(frame, parse_location(point, where, f"frame_locations.{number}",
                                                                  problems, space))
    unmatched = (raw.get("unmatched_artifacts") if full else None) or {}
    if not isinstance(unmatched, dict) or any(state not in ARTIFACT_STATES for state in unmatched.values()):
        problems.error(where, "unmatched_artifacts", f"must be an object of names with {', '.join(ARTIFACT_STATES)}")
        return None
    if "creator_role" in raw:
        decision.role_given, decision.role = True, clean(raw.get("creator_role"))
    if isinstance(raw.get("source"), str) and raw["source"].strip():
        decision.source = raw["source"].strip()[:20]
    states = raw.get("artifacts")
    if isinstance(states, dict):
        bad = {key: state for key, state in states.items() if state not in ARTIFACT_STATES}
        if bad:
            key = next(iter(bad))
            problems.error(where, f"artifacts.{key}", f"state {bad[key]!r} is not one of {', '.join(ARTIFACT_STATES)}")
            return None
        decision.present = tuple(key for key, state in states.items() if state == "present")
        decision.absent = tuple(key for key, state in states.items() if state == "absent")
        decision.unlisted = "undefined"
    else:
        names = raw.get("user_identified_artifacts", raw.get("identified_artifacts", states))
        if isinstance(names, dict):  # MIQA's stored form: 1 present, 0 absent, -1 not judged
            decision.present, decision.absent, decision.undefined = split_states(names)
        else:
            decision.present = split_names(names)
    decision.add_states(unmatched)  # names no entry matched when exported: matched again, or kept unmatched
    return decision


def _evaluation(raw: Any, where: str, problems) -> EvaluationIn | None:
    if not isinstance(raw, dict):
        problems.error(where, None, "an evaluation must be an object")
        return None
    model = raw.get("model")
    if not isinstance(model, dict) or not clean(model.get("registry_name")) or not clean(model.get("version")):
        problems.error(where, "model", "needs registry_name and version")
        return None
    scores = raw.get("scores")
    if not isinstance(scores, dict):
        problems.error(where, "scores", "must be an object")
        return None
    number = None
    if raw.get("frame_number") is not None:
        number = parse_frame_number(raw["frame_number"], where, "frame_number", problems)
    return EvaluationIn(where, (str(model["registry_name"]).strip(), str(model["version"]).strip()), number, scores,
                        parse_time(raw.get("created"), where, "created", problems))


# --- writing -------------------------------------------------------------------------------------

def _decision_json(decision, full: bool) -> dict[str, Any]:
    """MIQA's decision object (a location as MIQA's text, no time as null), or qcloop's full one."""
    if not full:
        return {"decision": decision.code, "creator": decision.creator, "note": decision.note,
                "created": format_time(decision.created) or None,
                "user_identified_artifacts": ";".join(miqa_present(decision)) or None,
                "location": format_location(*decision.location) or None}
    location = location_object(decision.location)
    if location is not None:
        location["space"] = decision.space
    body = {"decision": decision.code, "creator": decision.creator, "creator_role": decision.role,
            "note": decision.note, "created": format_time(decision.created) or None, "source": decision.source,
            "location": location, "artifacts": decision.states}
    if decision.frame_locations:
        body["frame_locations"] = {str(number): location_object(point)
                                   for number, point in sorted(decision.frame_locations.items())}
    if decision.unmatched:
        body["unmatched_artifacts"] = decision.unmatched
    return body


def _scan_json(scan, full: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"type": scan.scan_type, "subject_id": scan.subject_id, "session_id": scan.session_id,
                            "scan_link": scan.link,
                            "frames": {str(number): {"file_location": location} for number, location in scan.frames}}
    if full:
        body["archived"] = scan.archived
        body["decisions"] = [_decision_json(d, True) for d in scan.decisions]
        body["evaluations"] = [{"model": {"registry_name": e.model[0], "version": e.model[1]},
                                "frame_number": e.frame_number, "scores": e.scores, "created": format_time(e.created)}
                               for e in scan.evaluations]
    else:
        body["last_decision"] = _decision_json(scan.decisions[-1], False) if scan.decisions else None
    return body


def write(events: Iterator[tuple[str, object]], full: bool) -> Iterator[str]:
    """JSON text chunks written as the export goes: never the whole document in memory."""
    dump = json.dumps
    yield ('{"format": "qcloop-full", "version": 1, "projects": {' if full else '{"projects": {')
    first_project = first_experiment = first_scan = True
    pending: list[str] = []
    for kind, item in events:
        if kind == "project":
            pending.append(("" if first_project else ", ") + dump(item.name) + ": {")
            first_project, first_experiment = False, True
            if full:
                pending.append('"vocabulary": ' + dump({"decisions": item.options, "artifacts": item.entries})
                               + ', "model_versions": ' + dump(item.model_versions)
                               + ', "members": ' + dump(item.members) + ", ")
            pending.append('"experiments": {')
        elif kind == "experiment":
            if not full and item.archived:
                continue
            body = {"notes": item.note}
            if full:
                body["archived"] = item.archived
            pending.append(("" if first_experiment else ", ") + dump(item.name) + ": "
                           + dump(body)[:-1] + ', "scans": {')
            first_experiment, first_scan = False, True
        elif kind == "scan":
            if not full and (item.archived or item.experiment.archived):
                continue
            pending.append(("" if first_scan else ", ") + dump(item.name) + ": " + dump(_scan_json(item, full)))
            first_scan = False
        elif kind == "end_experiment":
            if full or not item.archived:
                pending.append("}}")
        elif kind == "end_project":
            pending.append("}}")
        if len(pending) >= 500:
            yield "".join(pending)
            pending.clear()
    pending.append("}}\n")
    yield "".join(pending)
