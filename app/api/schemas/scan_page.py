"""The scan page's data (``/scans/<id>/context``, also embedded in the page): the scan, its frames,
vocabulary, suggestion, history, lock, the reviewer's queue and neighbours. It shows decisions, locks
and queues through the API's own schemas."""
from __future__ import annotations

from flask import url_for
from marshmallow import fields

from app.api.schemas.base import Answer, computed, nullable
from app.api.schemas.review import DecisionSchema, LockSchema, QueueSchema
from app.services import review

# The planes painted before the viewer has its volume: middle slices, longest side in pixels.
PLANES = ("sagittal", "coronal", "axial")
PLANE_PIXELS = 384


class PageScanSchema(Answer):
    id = fields.Integer()
    name = fields.String()
    scan_type = nullable(fields.String)
    subject_id = nullable(fields.String)
    session_id = nullable(fields.String)
    link = nullable(fields.String)


class PageExperimentSchema(Answer):
    id = fields.Integer()
    name = fields.String()
    note = nullable(fields.String)


class PageProjectSchema(Answer):
    id = fields.Integer()
    name = fields.String()
    url = computed(fields.String(), lambda project: url_for("ui.project", project_id=project.id))


def _versioned(endpoint: str):
    """A link to the frame's viewer data that changes when the frame does (``?v=``: caches never go stale)."""
    return lambda frame: url_for(endpoint, frame_id=frame.id, v=frame.version)


class PageFrameSchema(Answer):
    """A frame (an ``Extended`` one, with its viewer data's ``version`` and ``saliency``: whether a champion
    can map it) and its links."""

    id = fields.Integer()
    number = fields.Integer(attribute="frame_number")
    shape = fields.List(fields.Integer(), allow_none=True)
    orientation = nullable(fields.String)
    name = computed(fields.String(), lambda frame: frame.file_location.rsplit("/", 1)[-1])
    preview_url = computed(fields.String(), _versioned("volumes.preview"))
    volume_url = computed(fields.String(), _versioned("volumes.volume"))
    geometry_url = computed(fields.String(), _versioned("volumes.geometry"))
    download_url = computed(fields.String(), lambda frame: url_for("volumes.download", frame_id=frame.id))
    slice_url = computed(fields.String(), lambda frame: url_for("volumes.slice_png", frame_id=frame.id))
    plane_urls = computed(fields.Dict(keys=fields.String(), values=fields.String()), lambda frame: {
        axis: url_for("volumes.slice_png", frame_id=frame.id, axis=axis, size=PLANE_PIXELS,
                      v=frame.version) for axis in PLANES})
    saliency_url = computed(nullable(fields.String), lambda frame: url_for("volumes.saliency", frame_id=frame.id)
                            if frame.saliency else None)


class KeyLabelSchema(Answer):
    key = fields.String()
    label = fields.String()


class PageOptionSchema(Answer):
    """A decision option with the note rule in effect (an ``Extended`` option)."""

    key = fields.String()
    label = fields.String()
    meaning = fields.String()
    shortcut = nullable(fields.String)
    requires_note = fields.Boolean()


class PageEntrySchema(Answer):
    key = fields.String()
    label = fields.String()
    shortcut = nullable(fields.String)


class ArtifactScoreSchema(Answer):
    score = fields.Float()
    state = fields.String(metadata={"enum": ["present", "absent"]})


class PageSuggestionSchema(Answer):
    """A ``review.Suggestion``: the usable probability and each artifact's score and state."""

    model = fields.String()
    version = fields.String()
    evaluation = fields.Integer()
    frame = nullable(fields.Integer)
    created = fields.DateTime()
    usable = nullable(fields.Float)
    artifacts = fields.Dict(keys=fields.String(), values=fields.Nested(ArtifactScoreSchema))


class CarriedSchema(Answer):
    """The latest decision's judged artifacts, which the next reviewer's form starts from (as in MIQA)."""

    decision = fields.Integer(attribute="id")
    creator = computed(fields.String(), lambda decision: decision.creator.username if decision.creator
                       else (decision.creator_name or "unknown"))
    creator_role = nullable(fields.String)
    artifacts = computed(fields.Dict(keys=fields.String(), values=fields.String()), lambda decision: {
        item.entry.key: item.state for item in decision.artifacts if item.state in ("present", "absent")})


class ScanLinksSchema(Answer):
    id = fields.Integer()
    page = fields.String()
    context = fields.String()


class NeighboursSchema(Answer):
    previous = nullable(fields.Nested, nested=ScanLinksSchema)
    next = nullable(fields.Nested, nested=ScanLinksSchema)


class PageQueueSchema(QueueSchema):
    """The reviewer's queue (an ``Extended`` NextScan) with links to its next scan and the other queue."""

    next = nullable(fields.Nested, nested=ScanLinksSchema)
    other_url = nullable(fields.String)


class PageUrlsSchema(Answer):
    decide = fields.String()
    lock = fields.String()
    email = nullable(fields.String)
    self = fields.String()
    context = fields.String()


class ScanContextSchema(Answer):
    """Everything the scan page renders (the review service's ``ScanFacts`` with the page's links)."""

    scan = fields.Nested(PageScanSchema)
    experiment = fields.Nested(PageExperimentSchema)
    project = fields.Nested(PageProjectSchema)
    state = fields.String()
    state_label = computed(fields.String(), lambda page: review.STATE_LABELS[page.state])
    role = fields.String()
    can_decide = fields.Boolean()
    blocked = nullable(fields.String, metadata={"description": "why the caller may not decide this scan"})
    user = fields.String()
    frames = fields.List(fields.Nested(PageFrameSchema))
    saliency_outputs = fields.List(fields.Nested(KeyLabelSchema))
    decisions = fields.List(fields.Nested(PageOptionSchema))
    artifacts = fields.List(fields.Nested(PageEntrySchema))
    suggestion = nullable(fields.Nested, nested=PageSuggestionSchema)
    history = fields.List(fields.Nested(DecisionSchema))
    lock = nullable(fields.Nested, nested=LockSchema)
    carried = nullable(fields.Nested, nested=CarriedSchema)
    neighbours = fields.Nested(NeighboursSchema)
    queue = fields.Nested(PageQueueSchema)
    urls = fields.Nested(PageUrlsSchema)
