"""MIQA-compatible review API: projects, experiments, scans, frames, scan decisions, locks, notes.

Lists answer MIQA/DRF pages (``count``, ``next``, ``previous``, ``results``) of what the caller
may read and filter by parent id (``?project=``, ``?experiment=``, ``?scan=``). A decision is
created with ``{"scan", "decision", "note", "artifacts": {"present", "absent"},
"location": {"i", "j", "k"}}``; the location is a voxel of the scan's original grid (Frame.shape), or MIQA's viewer
position in millimetres as MIQA's client posts it (numbers not all whole, or ``"space": "world"``).
Deciding needs the experiment's lock (409 otherwise), like MIQA.
"""
from __future__ import annotations

from flask import g
from flask_login import current_user
from marshmallow import Schema, fields, validate

from app.api.bodies import json_object
from app.api.docs import Blueprint, body
from app.api.pagination import PageArgs, id_field, paginate
from app.api.schemas.base import Extended, page_of
from app.api.schemas.review import (
    DecisionSchema, ExperimentSchema, FrameSchema, MyProjectSchema, NextScanSchema, ProjectSchema, ScanSchema,
    TaskOverviewSchema,
)
from app.auth.permissions import permission
from app.db import NOTE_MAX_LENGTH, Decision, Experiment, Frame, Project, Scan
from app.services import next_scan, review
from app.services.loaders import load

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
    "properties": {"note": {"type": "string", "maxLength": NOTE_MAX_LENGTH}}}}}
DECISION_BODY = {"application/json": {"schema": {
    "type": "object", "required": ["scan", "decision"],
    "properties": {
        "scan": {"type": "integer"},
        "project": {"type": "integer", "description": "optional check: the scan's project"},
        "decision": {"type": "string", "description": "a decision key of the project's vocabulary"},
        "note": {"type": "string", "maxLength": NOTE_MAX_LENGTH},
        "artifacts": {"type": "object", "properties": {
            "present": {"type": "array", "items": {"type": "string"}},
            "absent": {"type": "array", "items": {"type": "string"}}}},
        "location": {"type": "object", "nullable": True, "required": ["i", "j", "k"], "description":
                     "a voxel of the original grid (whole numbers), or MIQA's viewer position in millimetres "
                     "(space world; numbers that are not all whole are read as one, as MIQA's client posts them)",
                     "properties": {"i": {"type": "number"}, "j": {"type": "number"}, "k": {"type": "number"},
                                    "space": {"type": "string", "enum": ["voxel", "world"]}}}}}}}


@blp.route("/projects", methods=["GET"])
@blp.arguments(PageArgs, location="query")
@blp.response(200, page_of(ProjectSchema))
@permission("login")
def list_projects(page: dict):
    return paginate(review.projects_query(current_user), page)


@blp.route("/projects/<int:project_id>", methods=["GET"])
@blp.response(200, MyProjectSchema)
@permission("project", "collaborator")
def get_project(project_id: int):
    return Extended(load(Project, project_id), my_role=g.project_role)


@blp.route("/projects/<int:project_id>/task_overview", methods=["GET"])
@blp.response(200, TaskOverviewSchema)
@permission("project", "collaborator")
def task_overview(project_id: int):
    """Scan states per scan, counts per state, and each reviewer's decisions."""
    return review.task_overview(load(Project, project_id), g.project_role)


@blp.route("/projects/<int:project_id>/next-scan", methods=["GET"])
@blp.arguments(NextScanArgs, location="query")
@blp.response(200, NextScanSchema)
@permission("project", "collaborator")
def get_next_scan(args: dict, project_id: int):
    """The next scan of the caller's queue, skipping experiments locked by others and scans the caller may
    not decide; ``scan`` is null (and ``empty`` true) when the queue is empty. ``uncertainty`` and
    ``disagreement`` need a champion: without one the answer is in name order and ``fallback`` says why."""
    picked = next_scan.pick(project_id, current_user, g.project_role, args.get("queue"), args.get("strategy"),
                            args.get("after"))
    scan = review.scan_views([load(Scan, picked.scan_id)])[0] if picked.scan_id else None
    return Extended(picked, scan=scan)


@blp.route("/experiments", methods=["GET"])
@blp.arguments(ExperimentArgs, location="query")
@blp.response(200, page_of(ExperimentSchema))
@permission("login")
def list_experiments(args: dict):
    return paginate(review.experiments_query(current_user, args.get("project")), args)


@blp.route("/experiments/<int:experiment_id>", methods=["GET"])
@blp.response(200, ExperimentSchema)
@permission("project", "collaborator")
def get_experiment(experiment_id: int):
    return load(Experiment, experiment_id)


@blp.route("/experiments/<int:experiment_id>/lock", methods=["POST"])
@blp.response(200, ExperimentSchema)
@permission("project", "tier1")
def lock_experiment(experiment_id: int):
    """Take or renew the review lock (LOCK_MINUTES, 5 by default); 409 with the holder when taken."""
    experiment = load(Experiment, experiment_id)
    review.take_lock(experiment, current_user)
    return experiment


@blp.route("/experiments/<int:experiment_id>/lock", methods=["DELETE"])
@blp.response(200, ExperimentSchema)
@permission("project", "tier1")
def unlock_experiment(experiment_id: int):
    """Release one's own lock; a project admin may break another reviewer's lock (audited)."""
    experiment = load(Experiment, experiment_id)
    review.release_lock(experiment, current_user, g.project_role)
    return experiment


@blp.route("/experiments/<int:experiment_id>/note", methods=["POST"])
@body(blp, NOTE_BODY, required=True)
@blp.response(200, ExperimentSchema)
@permission("project", "tier1")
def set_experiment_note(experiment_id: int):
    """Body ``{"note": "..."}`` (at most 3000 characters)."""
    experiment = review.set_experiment_note(load(Experiment, experiment_id),
                                            json_object(required=True).get("note"))
    return experiment


@blp.route("/scans", methods=["GET"])
@blp.arguments(ScanArgs, location="query")
@blp.response(200, page_of(ScanSchema))
@permission("login")
def list_scans(args: dict):
    return paginate(review.scans_query(current_user, args.get("experiment"), args.get("project")), args,
                    review.scan_views)


@blp.route("/scans/<int:scan_id>", methods=["GET"])
@blp.response(200, ScanSchema)
@permission("project", "collaborator")
def get_scan(scan_id: int):
    return review.scan_views([load(Scan, scan_id)])[0]


@blp.route("/frames", methods=["GET"])
@blp.arguments(FrameArgs, location="query")
@blp.response(200, page_of(FrameSchema))
@permission("login")
def list_frames(args: dict):
    return paginate(review.frames_query(current_user, args.get("scan")), args, review.frame_views)


@blp.route("/frames/<int:frame_id>", methods=["GET"])
@blp.response(200, FrameSchema)
@permission("project", "collaborator")
def get_frame(frame_id: int):
    return review.frame_views([load(Frame, frame_id)])[0]


@blp.route("/scan-decisions", methods=["GET"])
@blp.arguments(DecisionArgs, location="query")
@blp.response(200, page_of(DecisionSchema))
@permission("login")
def list_decisions(args: dict):
    return paginate(review.decisions_query(current_user, args.get("scan")), args)


@blp.route("/scan-decisions/<int:decision_id>", methods=["GET"])
@blp.response(200, DecisionSchema)
@permission("project", "collaborator")
def get_decision(decision_id: int):
    return load(Decision, decision_id)


@blp.route("/scan-decisions", methods=["POST"])
@body(blp, DECISION_BODY, required=True)
@blp.response(201, DecisionSchema)
@permission("login")
def create_decision():
    """Record a decision (tier 1 or more in the scan's project, holding the experiment's lock).
    Tier 1 cannot overrule a tier 2 decision (403); unknown decision or artifact, a note over 3000
    characters, a location outside the volume or a scan of another ``project``: 400."""
    decision = review.decide(current_user, json_object())
    return decision
