"""MIQA-compatible review API: projects, experiments, scans, frames, scan decisions, locks, notes.

Lists answer MIQA/DRF pages (``count``, ``next``, ``previous``, ``results``) of what the caller
may read and filter by parent id (``?project=``, ``?experiment=``, ``?scan=``). A decision is
created with ``{"scan", "decision", "note", "artifacts": {"present", "absent"},
"location": {"i", "j", "k"}}``; the location is a voxel of the scan's original grid (Frame.shape), or MIQA's viewer
position in millimetres as MIQA's client posts it (numbers not all whole, or ``"space": "world"``).
Deciding needs the experiment's lock (409 otherwise), like MIQA.
"""
from __future__ import annotations

from flask import g, url_for
from flask_login import current_user
from marshmallow import Schema, fields, validate

from app.api.docs import (
    OPEN,
    Blueprint,
    DecisionOut,
    ExperimentOut,
    FrameOut,
    NextScanOut,
    ProjectOut,
    ScanOut,
    answers,
    body,
    page_of,
)
from app.api.bodies import json_object
from app.api.pagination import PageArgs, id_field, paginate
from app.auth.permissions import permission
from app.db import Decision, Experiment, Frame, Project, Scan, db
from app.services import decisions, evaluations, next_scan, review

blp = Blueprint("review", __name__, description="Projects, experiments, scans, frames and reviewer decisions")


class ExperimentArgs(PageArgs):
    project = id_field()


class ScanArgs(PageArgs):
    project = id_field()
    experiment = id_field()


class NextScanArgs(Schema):
    queue = fields.String(validate=validate.OneOf(list(next_scan.QUEUES)),
                          metadata={"description": "tier1: unreviewed scans; tier2: scans needing tier 2 (tier 2 "
                                                   "and admins; their default)"})
    strategy = fields.String(validate=validate.OneOf(list(next_scan.STRATEGIES)),
                             metadata={"description": "order; default: the project's setting next_scan_strategy"})
    after = id_field(metadata={"description": "the scan the caller is on: answer the one after it in the queue"})


class FrameArgs(PageArgs):
    scan = id_field()


class DecisionArgs(PageArgs):
    scan = id_field()


# Bodies read by the review service (MIQA's shapes, checked there with MIQA's messages).
NOTE_BODY = {"application/json": {"schema": {
    "type": "object", "required": ["note"],
    "properties": {"note": {"type": "string", "maxLength": review.NOTE_MAX_LENGTH}}}}}
DECISION_BODY = {"application/json": {"schema": {
    "type": "object", "required": ["scan", "decision"],
    "properties": {
        "scan": {"type": "integer"},
        "project": {"type": "integer", "description": "optional check: the scan's project"},
        "decision": {"type": "string", "description": "a decision key of the project's vocabulary"},
        "note": {"type": "string", "maxLength": review.NOTE_MAX_LENGTH},
        "artifacts": {"type": "object", "properties": {
            "present": {"type": "array", "items": {"type": "string"}},
            "absent": {"type": "array", "items": {"type": "string"}}}},
        "location": {"type": "object", "nullable": True, "required": ["i", "j", "k"], "description":
                     "a voxel of the original grid (whole numbers), or MIQA's viewer position in millimetres "
                     "(space world; numbers that are not all whole are read as one, as MIQA's client posts them)",
                     "properties": {"i": {"type": "number"}, "j": {"type": "number"}, "k": {"type": "number"},
                                    "space": {"type": "string", "enum": ["voxel", "world"]}}}}}}}


def project_json(project: Project, role: str | None = None) -> dict:
    body = {"id": project.id, "name": project.name, "model_name": project.model_name,
            "created": project.created_at.isoformat(), "settings": project.settings or {}}
    if role is not None:
        body["my_role"] = role
    return body


def experiment_json(experiment: Experiment) -> dict:
    lock = review.lock_json(experiment)
    return {"id": experiment.id, "name": experiment.name, "project": experiment.project_id, "note": experiment.note,
            "lock_owner": lock["owner"] if lock else None, "lock_expires": lock["expires"] if lock else None,
            "scans": [scan.id for scan in experiment.scans]}


def frames_json(frames: list[Frame]) -> list[dict]:
    """Frames with their champion's suggestions, in a fixed number of queries."""
    suggestions = evaluations.frame_suggestions(frames)
    return [frame_json(frame, suggestions[frame.id]) for frame in frames]


def frame_json(frame: Frame, suggestion: dict | None) -> dict:
    name = frame.file_location.rsplit("/", 1)[-1]
    extension = ".nii.gz" if name.lower().endswith(".nii.gz") else ("." + name.rsplit(".", 1)[-1] if "." in name
                                                                    else "")
    return {"id": frame.id, "scan": frame.scan_id, "frame_number": frame.frame_number, "extension": extension,
            "shape": frame.shape, "spacing": frame.spacing, "orientation": frame.orientation,
            "checksum": frame.checksum, "size_bytes": frame.size_bytes,
            "content_url": url_for("volumes.download", frame_id=frame.id),
            "volume_url": url_for("volumes.volume", frame_id=frame.id),
            "preview_url": url_for("volumes.preview", frame_id=frame.id),
            "suggestion": suggestion}


def scans_json(scans: list[Scan]) -> list[dict]:
    """Scans with frames, decisions (newest first) and state, in a fixed number of queries."""
    history = review.decisions_of([scan.id for scan in scans])
    suggestions = evaluations.scan_suggestions(scans)
    return [{"id": scan.id, "name": scan.name, "experiment": scan.experiment_id, "scan_type": scan.scan_type,
             "subject_id": scan.subject_id, "session_id": scan.session_id, "scan_link": scan.link,
             "archived": scan.archived_at is not None,
             "frames": [{"id": f.id, "frame_number": f.frame_number} for f in scan.frames],
             "decisions": [review.decision_json(d) for d in history.get(scan.id, [])],
             "state": decisions.scan_state(history[scan.id][0] if history.get(scan.id) else None),
             "suggestion": suggestions[scan.id]}
            for scan in scans]


@blp.route("/projects", methods=["GET"])
@blp.arguments(PageArgs, location="query")
@answers(blp, 200, page_of(ProjectOut))
@permission("login")
def list_projects(page: dict):
    return paginate(review.projects_query(current_user), page, project_json)


@blp.route("/projects/<int:project_id>", methods=["GET"])
@answers(blp, 200, ProjectOut)
@permission("project", "collaborator")
def get_project(project_id: int):
    return project_json(review.get(Project, project_id), g.project_role)


@blp.route("/projects/<int:project_id>/task_overview", methods=["GET"])
@answers(blp, 200, OPEN, description="scan states per experiment, with the reviewers' agreement")
@permission("project", "collaborator")
def task_overview(project_id: int):
    return review.task_overview(review.get(Project, project_id), g.project_role)


@blp.route("/projects/<int:project_id>/next-scan", methods=["GET"])
@blp.arguments(NextScanArgs, location="query")
@answers(blp, 200, NextScanOut)
@permission("project", "collaborator")
def get_next_scan(args: dict, project_id: int):
    """The next scan of the caller's queue, skipping experiments locked by others and scans the caller may
    not decide; ``scan`` is null (and ``empty`` true) when the queue is empty. ``uncertainty`` and
    ``disagreement`` need a champion: without one the answer is in name order and ``fallback`` says why."""
    picked = next_scan.pick(project_id, current_user, g.project_role, args.get("queue"), args.get("strategy"),
                            args.get("after"))
    answer = picked.as_json()
    answer["scan"] = scans_json([review.get(Scan, picked.scan_id)])[0] if picked.scan_id else None
    return answer


@blp.route("/experiments", methods=["GET"])
@blp.arguments(ExperimentArgs, location="query")
@answers(blp, 200, page_of(ExperimentOut))
@permission("login")
def list_experiments(args: dict):
    return paginate(review.experiments_query(current_user, args.get("project")), args, experiment_json)


@blp.route("/experiments/<int:experiment_id>", methods=["GET"])
@answers(blp, 200, ExperimentOut)
@permission("project", "collaborator")
def get_experiment(experiment_id: int):
    return experiment_json(review.get(Experiment, experiment_id))


@blp.route("/experiments/<int:experiment_id>/lock", methods=["POST"])
@answers(blp, 200, ExperimentOut)
@permission("project", "tier1")
def lock_experiment(experiment_id: int):
    """Take or renew the review lock (LOCK_MINUTES, 5 by default); 409 with the holder when taken."""
    experiment = review.get(Experiment, experiment_id)
    review.take_lock(experiment, current_user)
    db.session.commit()
    return experiment_json(experiment)


@blp.route("/experiments/<int:experiment_id>/lock", methods=["DELETE"])
@answers(blp, 200, ExperimentOut)
@permission("project", "tier1")
def unlock_experiment(experiment_id: int):
    """Release one's own lock; a project admin may break another reviewer's lock (audited)."""
    experiment = review.get(Experiment, experiment_id)
    review.release_lock(experiment, current_user, g.project_role)
    db.session.commit()
    return experiment_json(experiment)


@blp.route("/experiments/<int:experiment_id>/note", methods=["POST"])
@body(blp, NOTE_BODY, required=True)
@answers(blp, 200, ExperimentOut)
@permission("project", "tier1")
def set_experiment_note(experiment_id: int):
    """Body ``{"note": "..."}`` (at most 3000 characters)."""
    experiment = review.set_experiment_note(review.get(Experiment, experiment_id),
                                            json_object(required=True).get("note"))
    db.session.commit()
    return experiment_json(experiment)


@blp.route("/scans", methods=["GET"])
@blp.arguments(ScanArgs, location="query")
@answers(blp, 200, page_of(ScanOut))
@permission("login")
def list_scans(args: dict):
    answer = paginate(review.scans_query(current_user, args.get("experiment"), args.get("project")), args,
                      lambda scan: scan)
    answer["results"] = scans_json(answer["results"])
    return answer


@blp.route("/scans/<int:scan_id>", methods=["GET"])
@answers(blp, 200, ScanOut)
@permission("project", "collaborator")
def get_scan(scan_id: int):
    return scans_json([review.get(Scan, scan_id)])[0]


@blp.route("/frames", methods=["GET"])
@blp.arguments(FrameArgs, location="query")
@answers(blp, 200, page_of(FrameOut))
@permission("login")
def list_frames(args: dict):
    answer = paginate(review.frames_query(current_user, args.get("scan")), args, lambda frame: frame)
    answer["results"] = frames_json(answer["results"])
    return answer


@blp.route("/frames/<int:frame_id>", methods=["GET"])
@answers(blp, 200, FrameOut)
@permission("project", "collaborator")
def get_frame(frame_id: int):
    return frames_json([review.get(Frame, frame_id)])[0]


@blp.route("/scan-decisions", methods=["GET"])
@blp.arguments(DecisionArgs, location="query")
@answers(blp, 200, page_of(DecisionOut))
@permission("login")
def list_decisions(args: dict):
    return paginate(review.decisions_query(current_user, args.get("scan")), args, review.decision_json)


@blp.route("/scan-decisions/<int:decision_id>", methods=["GET"])
@answers(blp, 200, DecisionOut)
@permission("project", "collaborator")
def get_decision(decision_id: int):
    return review.decision_json(review.get(Decision, decision_id))


@blp.route("/scan-decisions", methods=["POST"])
@body(blp, DECISION_BODY, required=True)
@answers(blp, 201, DecisionOut)
@permission("login")
def create_decision():
    """Record a decision (tier 1 or more in the scan's project, holding the experiment's lock).
    Tier 1 cannot overrule a tier 2 decision (403); unknown decision or artifact, a note over 3000
    characters, a location outside the volume or a scan of another ``project``: 400."""
    decision = review.decide(current_user, json_object())
    db.session.commit()
    return review.decision_json(decision), 201
