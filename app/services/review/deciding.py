"""Deciding: a reviewer's decision from MIQA's body, checked against role, lock, tier and note rules, and
the experiment's note."""
from __future__ import annotations

from typing import Any

from app.db import MAX_ID, NOTE_MAX_LENGTH, Decision, Experiment, Scan, User
from app.services import access, decisions
from app.services.errors import Forbidden, InvalidInput
from app.services.loaders import load
from app.services.review import rules
from app.services.review.locks import require_lock, take_lock
from app.services.review.states import latest_decisions


def _int_field(body: dict, name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidInput(f"{name} must be an id", field=name)
    try:
        number = int(value)
    except ValueError as err:
        raise InvalidInput(f"{name} must be an id", field=name) from err
    if not 0 < number <= MAX_ID:
        raise InvalidInput(f"{name} must be an id", field=name)
    return number


def _key_list(artifacts: dict, name: str) -> list[str]:
    keys = artifacts.get(name) or []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise InvalidInput(f"artifacts.{name} must be a list of artifact keys", field=f"artifacts.{name}")
    return keys


def decide(user: User, body: dict[str, Any]) -> Decision:
    """Record a reviewer's decision from a MIQA-style body, enforcing role, lock, tier rule and note rules.

    ``{"scan", "decision", "note", "artifacts": {"present", "absent"}, "location": {"i", "j", "k"},
    "project" (optional: refused when the scan is not in it)}``; the location is in the scan's
    original voxel grid (Frame.shape)."""
    if not isinstance(body, dict):
        raise InvalidInput("expected a JSON object")
    scan_id = _int_field(body, "scan")
    scan = load(Scan, scan_id)
    experiment = scan.experiment
    role = access.require_project_role(user, experiment.project_id, "tier1")
    if body.get("project") is not None and _int_field(body, "project") != experiment.project_id:
        raise InvalidInput(f"scan {scan.id} is not in project {body['project']}", field="scan")
    option_key = body.get("decision")
    if not isinstance(option_key, str) or not option_key:
        raise InvalidInput("decision is required (a decision key of the project)", field="decision")
    note = body.get("note") or ""
    if not isinstance(note, str):
        raise InvalidInput("note must be text", field="note")
    if len(note) > NOTE_MAX_LENGTH:
        raise InvalidInput(f"note must be at most {NOTE_MAX_LENGTH} characters (got {len(note)})", field="note")
    artifacts = body.get("artifacts") or {}
    if not isinstance(artifacts, dict) or set(artifacts) - {"present", "absent"}:
        raise InvalidInput('artifacts must be {"present": [...], "absent": [...]}', field="artifacts")
    location = body.get("location")
    if location is not None and not isinstance(location, dict):
        raise InvalidInput("location must be {\"i\", \"j\", \"k\"}", field="location")
    if option_key in rules.note_required_for(experiment.project) and not note.strip():
        raise InvalidInput(f"a note is required for decision {option_key!r} in this project", field="note")
    require_lock(experiment, user)
    refusal = rules.overrule_refusal(role, latest_decisions([scan.id]).get(scan.id))
    if refusal is not None:
        raise Forbidden(refusal, field="decision")
    decision = decisions.record_decision(scan, user, option_key, role=role, note=note,
                                         present=_key_list(artifacts, "present"),
                                         absent=_key_list(artifacts, "absent"), location=location)
    take_lock(experiment, user)  # deciding is activity: the lock is renewed
    return decision


def set_experiment_note(experiment: Experiment, note: Any) -> Experiment:
    """The experiment's note for its reviewers (MIQA's), at most NOTE_MAX_LENGTH characters."""
    if not isinstance(note, str):
        raise InvalidInput("note must be text", field="note")
    if len(note) > NOTE_MAX_LENGTH:
        raise InvalidInput(f"note must be at most {NOTE_MAX_LENGTH} characters (got {len(note)})", field="note")
    experiment.note = note
    return experiment

