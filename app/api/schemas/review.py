"""MIQA's review resources: projects, experiments, scans, frames, decisions, suggestions, queues."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from flask import url_for
from marshmallow import fields

from app.api.schemas.base import Answer, computed, nullable
from app.db import WORLD, Decision
from app.services import next_scan, review

_NUMBER = {"type": "number"}


class ProjectSchema(Answer):
    id = fields.Integer()
    name = fields.String()
    model_name = nullable(fields.String)
    created = fields.DateTime(attribute="created_at")
    settings = computed(fields.Dict(), lambda project: project.settings or {})


class MyProjectSchema(ProjectSchema):
    """A project with the caller's role in it (an ``Extended`` project)."""

    my_role = fields.String()


class LockOwnerSchema(Answer):
    id = fields.Integer()
    username = fields.String()
    name = fields.String(attribute="display_name")


class LockSchema(Answer):
    """An experiment's lock: its holder (null for a deleted account) and when it lapses."""

    owner = nullable(fields.Nested, nested=LockOwnerSchema)
    expires = fields.DateTime()


def _lock_owner(experiment) -> Any:
    lock = review.current_lock(experiment)
    return lock.owner if lock else None


def _lock_expires(experiment) -> Any:
    lock = review.current_lock(experiment)
    return lock.expires if lock else None


class ExperimentSchema(Answer):
    id = fields.Integer()
    name = fields.String()
    project = fields.Integer(attribute="project_id")
    note = nullable(fields.String)
    lock_owner = computed(nullable(fields.Nested, nested=LockOwnerSchema), _lock_owner)
    lock_expires = computed(nullable(fields.DateTime), _lock_expires)
    scans = computed(fields.List(fields.Integer()), lambda experiment: [scan.id for scan in experiment.scans])


class LocationSchema(Answer):
    """A voxel of the original grid (whole numbers), or with space "world" MIQA's viewer position in
    millimetres as an imported MIQA file gave it."""

    i = fields.Raw(metadata=_NUMBER)
    j = fields.Raw(metadata=_NUMBER)
    k = fields.Raw(metadata=_NUMBER)
    space = fields.String(metadata={"enum": [WORLD], "optional": True, "description": "absent for a voxel"})


def _location(decision: Decision) -> dict[str, Any] | None:
    if decision.location_i is None:
        return None
    location: dict[str, Any] = {axis: int(value) if float(value).is_integer() else value for axis, value in
                                (("i", decision.location_i), ("j", decision.location_j), ("k", decision.location_k))}
    if decision.location_space == WORLD:
        location["space"] = WORLD
    return location


class ArtifactListsSchema(Answer):
    """MIQA's shape: the artifact keys judged present and absent (undefined ones are not listed)."""

    present = fields.List(fields.String())
    absent = fields.List(fields.String())


class CreatorSchema(Answer):
    """The reviewer (MIQA's user); for a decision without an account (imported, deleted), id is null and
    username the name it was recorded under."""

    id = nullable(fields.Integer)
    username = fields.String()
    first_name = fields.String()
    last_name = fields.String()
    email = nullable(fields.String)


def _creator(decision: Decision) -> Any:
    if decision.creator is not None:
        return decision.creator
    return SimpleNamespace(id=None, username=decision.creator_name or "unknown", first_name="", last_name="",
                           email=None)


class DecisionSchema(Answer):
    """MIQA's ScanDecision plus the option's label, the creator's role at the time and the source."""

    id = fields.Integer()
    scan = fields.Integer(attribute="scan_id")
    decision = fields.String(attribute="option.key")
    decision_label = fields.String(attribute="option.label")
    note = nullable(fields.String)
    created = fields.DateTime(attribute="created_at")
    creator = computed(fields.Nested(CreatorSchema), _creator)
    creator_role = nullable(fields.String)
    source = nullable(fields.String)
    artifacts = computed(fields.Nested(ArtifactListsSchema), review.artifact_lists)
    location = computed(nullable(fields.Nested, nested=LocationSchema), _location)


class SuggestionSchema(Answer):
    """What the champion's latest scored evaluation says, with the version that said it."""

    model = fields.String(attribute="model_version.registry_name")
    version = fields.String(attribute="model_version.version")
    mlflow_run_id = nullable(fields.String, attribute="model_version.mlflow_run_id")
    scores = computed(fields.Dict(keys=fields.String(), values=fields.Raw()), lambda row: row.scores or {})
    frame = nullable(fields.Integer, attribute="frame_id")
    created_at = fields.DateTime()


class EvaluationSchema(SuggestionSchema):
    """One version's evaluation of a scan or frame: scored, pending, or failed and why."""

    id = fields.Integer()
    scan = fields.Integer(attribute="scan_id")
    state = fields.String(metadata={"enum": ["scored", "pending", "failed"]})
    error = nullable(fields.String)
    job_id = nullable(fields.Integer)


class ScanFrameSchema(Answer):
    id = fields.Integer()
    frame_number = fields.Integer()


class ScanSchema(Answer):
    """A scan (a ``ScanView``) with its frames, decisions (newest first), state and suggestion."""

    id = fields.Integer(attribute="scan.id")
    name = fields.String(attribute="scan.name")
    experiment = fields.Integer(attribute="scan.experiment_id")
    scan_type = nullable(fields.String, attribute="scan.scan_type")
    subject_id = nullable(fields.String, attribute="scan.subject_id")
    session_id = nullable(fields.String, attribute="scan.session_id")
    scan_link = nullable(fields.String, attribute="scan.link")
    archived = computed(fields.Boolean(), lambda view: view.scan.archived_at is not None)
    frames = fields.List(fields.Nested(ScanFrameSchema), attribute="scan.frames")
    decisions = fields.List(fields.Nested(DecisionSchema))
    state = fields.String(metadata={"enum": ["unreviewed", "needs_tier2", "complete"]})
    suggestion = nullable(fields.Nested, nested=SuggestionSchema)


def _extension(location: str) -> str:
    name = location.rsplit("/", 1)[-1]
    if name.lower().endswith(".nii.gz"):
        return ".nii.gz"
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


class FrameSchema(Answer):
    """A frame (a ``FrameView``): its image's facts, where to fetch it, and its champion's suggestion."""

    id = fields.Integer(attribute="frame.id")
    scan = fields.Integer(attribute="frame.scan_id")
    frame_number = fields.Integer(attribute="frame.frame_number")
    extension = computed(fields.String(metadata={"description": "the file's extension (.nii.gz, .nrrd, ...)"}),
                         lambda view: _extension(view.frame.file_location))
    shape = fields.List(fields.Integer(), allow_none=True, attribute="frame.shape")
    spacing = fields.List(fields.Float(), allow_none=True, attribute="frame.spacing")
    orientation = nullable(fields.String, attribute="frame.orientation")
    checksum = nullable(fields.String, attribute="frame.checksum")
    size_bytes = nullable(fields.Integer, attribute="frame.size_bytes")
    content_url = computed(fields.String(), lambda view: url_for("volumes.download", frame_id=view.frame.id))
    volume_url = computed(fields.String(), lambda view: url_for("volumes.volume", frame_id=view.frame.id))
    preview_url = computed(fields.String(), lambda view: url_for("volumes.preview", frame_id=view.frame.id))
    suggestion = nullable(fields.Nested, nested=SuggestionSchema)


class UploadedFrameSchema(Answer):
    id = fields.Integer()
    scan = fields.Integer(attribute="scan_id")
    frame_number = fields.Integer()
    file_location = fields.String()
    shape = fields.List(fields.Integer(), allow_none=True)
    checksum = nullable(fields.String)


class OtherQueueSchema(Answer):
    queue = fields.String()
    queue_label = fields.String()
    remaining = fields.Integer()


def _other_queue(picked: next_scan.NextScan) -> Any:
    if not picked.other_queue:
        return None
    return SimpleNamespace(queue=picked.other_queue, queue_label=next_scan.QUEUES[picked.other_queue],
                           remaining=picked.other_remaining)


class QueueSchema(Answer):
    """Where the caller's review queue stands (a ``NextScan``): its next scan's id, order and what is left."""

    queue = fields.String(metadata={"description": "tier1 (unreviewed) or tier2 (needing tier 2)"})
    queue_label = computed(fields.String(), lambda picked: next_scan.QUEUES[picked.queue])
    strategy = fields.String(metadata={"description": "the order asked for"})
    strategy_used = fields.String(metadata={"description": "the order applied (name on fallback)"})
    fallback = nullable(fields.String, metadata={"description": "why the order asked for was not used"})
    scan_id = nullable(fields.Integer, metadata={"description": "null: the queue is empty"})
    remaining = fields.Integer(metadata={"description": "scans in the queue open to the caller"})
    empty = computed(fields.Boolean(), lambda picked: picked.scan_id is None)
    message = nullable(fields.String)
    other = computed(nullable(fields.Nested, nested=OtherQueueSchema,
                              metadata={"description": "the other queue the caller may work"}), _other_queue)


class NextScanSchema(QueueSchema):
    """The queue with its next scan (an ``Extended`` NextScan)."""

    scan = nullable(fields.Nested, nested=ScanSchema, metadata={"description": "null: queue empty"})


class ReviewerUserSchema(Answer):
    id = fields.Integer()
    username = fields.String()
    name = fields.String()


class ReviewerStatsSchema(Answer):
    user = fields.Nested(ReviewerUserSchema)
    role = nullable(fields.String)
    decisions = fields.Integer()
    scans = fields.Integer()
    latest_on = fields.Integer(metadata={"description": "scans whose latest decision is this reviewer's"})
    last_decision = nullable(fields.DateTime)


class TaskOverviewSchema(Answer):
    """MIQA's task overview (states per scan, the caller's role) plus per-reviewer counts."""

    total_scans = fields.Integer()
    my_project_role = nullable(fields.String)
    scan_states = fields.Dict(keys=fields.String(), values=fields.String())
    state_counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    reviewers = fields.List(fields.Nested(ReviewerStatsSchema))
