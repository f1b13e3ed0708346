"""The scan page's data: one JSON document the page renders, for the first scan and every next one."""
from __future__ import annotations

from typing import Any

from flask import current_app, url_for
from werkzeug.routing import BuildError

from app.db import Scan, User
from app.services import access, decisions, next_scan, review, vocabulary, volumes
from app.services.errors import ServiceError


# The planes painted before the viewer has its volume: middle slices, longest side in pixels.
PLANES = ("sagittal", "coronal", "axial")
PLANE_PIXELS = 384


def optional_url(endpoint: str, **values: Any) -> str | None:
    """A link to a page another part of qcloop may provide; None while it does not exist."""
    if endpoint not in current_app.view_functions:
        return None
    try:
        return url_for(endpoint, **values)
    except BuildError:
        return None


def _frame_json(frame, saliency: bool) -> dict[str, Any]:
    version = volumes.version(frame)
    return {
        "id": frame.id, "number": frame.frame_number, "shape": frame.shape, "orientation": frame.orientation,
        "name": frame.file_location.rsplit("/", 1)[-1],
        "preview_url": url_for("volumes.preview", frame_id=frame.id, v=version),
        "volume_url": url_for("volumes.volume", frame_id=frame.id, v=version),
        "geometry_url": url_for("volumes.geometry", frame_id=frame.id, v=version),
        "download_url": url_for("volumes.download", frame_id=frame.id),
        "slice_url": url_for("volumes.slice_png", frame_id=frame.id),
        "plane_urls": {axis: url_for("volumes.slice_png", frame_id=frame.id, axis=axis, size=PLANE_PIXELS, v=version)
                       for axis in PLANES},
        "saliency_url": url_for("volumes.saliency", frame_id=frame.id) if saliency else None,
    }


def _saliency_outputs(model, entries) -> list[dict[str, str]]:
    """The champion's outputs a saliency map can be asked for, labelled as the vocabulary labels them."""
    if model is None:
        return []
    labels = {entry.key: entry.label for entry in entries}
    return [{"key": output["key"], "label": "Usable" if output["kind"] == "usable" else labels.get(output["key"],
                                                                                                  output["key"])}
            for output in model.output_map]


def _carried(latest) -> dict[str, Any] | None:
    """The latest decision's judged artifacts, which the next reviewer's form starts from (as in MIQA)."""
    if latest is None:
        return None
    judged = {item.entry.key: item.state for item in latest.artifacts if item.state in ("present", "absent")}
    creator = latest.creator.username if latest.creator else (latest.creator_name or "unknown")
    return {"decision": latest.id, "creator": creator, "creator_role": latest.creator_role, "artifacts": judged}


def _links(scan_id: int | None, carry: dict[str, str]) -> dict[str, Any] | None:
    if not scan_id:
        return None
    return {"id": scan_id, "page": url_for("ui.scan", scan_id=scan_id, **carry),
            "context": url_for("ui.scan_context_json", scan_id=scan_id, **carry)}


def scan_context(scan: Scan, user: User, role: str, queue: str | None = None,
                 strategy: str | None = None) -> dict[str, Any]:
    """Scan, frames, vocabulary, the champion's suggestion, history, lock, the reviewer's queue and
    neighbours; a queue or strategy asked for in the URL is kept in every link onwards."""
    experiment = scan.experiment
    project = experiment.project
    history = review.history(scan)
    model = review.champion(project.id)
    entries = vocabulary.artifact_entries(project.id)
    first_frame = scan.frames[0].id if scan.frames else None
    evaluation = review.latest_evaluations(model, [scan.id], frame_id=first_frame).get(scan.id)
    suggestion = review.suggestion_json(model, evaluation, [e.key for e in entries]) if evaluation else None
    note_rule = (project.settings or {}).get("note_required_for")
    options = [{"key": o.key, "label": o.label, "meaning": o.meaning, "shortcut": o.shortcut,
                "requires_note": (o.key in note_rule) if isinstance(note_rule, list) else o.requires_note}
               for o in vocabulary.decision_options(project.id)]
    state = decisions.scan_state(history[0] if history else None)
    near = next_scan.neighbours(scan)
    try:
        queued = next_scan.pick(project.id, user, role, queue, strategy, after=scan.id)
    except ServiceError:  # a link with another role's queue or a mistyped order still opens the scan
        queue = strategy = None
        queued = next_scan.pick(project.id, user, role, after=scan.id)
    carry = {key: value for key, value in (("queue", queue), ("strategy", strategy)) if value}
    other = queued.other_queue
    can_decide = access.ROLE_RANK[role] >= access.ROLE_RANK["tier1"]
    blocked = None
    if role == "tier1" and history and history[0].creator_role in ("tier2", "admin"):
        blocked = "A tier 2 reviewer has decided this scan; tier 1 reviewers cannot overrule it."
    return {
        "scan": {"id": scan.id, "name": scan.name, "scan_type": scan.scan_type, "subject_id": scan.subject_id,
                 "session_id": scan.session_id, "link": scan.link},
        "experiment": {"id": experiment.id, "name": experiment.name, "note": experiment.note},
        "project": {"id": project.id, "name": project.name, "url": url_for("ui.project", project_id=project.id)},
        "state": state, "state_label": review.STATE_LABELS[state],
        "role": role, "can_decide": can_decide, "blocked": blocked, "user": user.username,
        "frames": [_frame_json(frame, model is not None) for frame in scan.frames],
        "saliency_outputs": _saliency_outputs(model, entries),
        "decisions": options,
        "artifacts": [{"key": e.key, "label": e.label, "shortcut": e.shortcut} for e in entries],
        "suggestion": suggestion,
        "history": [review.decision_json(d) for d in history],
        "lock": review.lock_json(experiment),
        "carried": _carried(history[0] if history else None),
        "neighbours": {name: _links(scan_id, carry) for name, scan_id in near.items()},
        "queue": {**queued.as_json(), "next": _links(queued.scan_id if queued.scan_id != scan.id else None, carry),
                  "other_url": (url_for("ui.next_scan_page", project_id=project.id, queue=other, **(
                      {"strategy": strategy} if strategy else {})) if other else None)},
        "urls": {
            "decide": url_for("review.create_decision"),
            "lock": url_for("review.lock_experiment", experiment_id=experiment.id),
            "email": optional_url("members.send_scan_email", scan_id=scan.id),
            "self": url_for("ui.scan", scan_id=scan.id),
            "context": url_for("ui.scan_context_json", scan_id=scan.id),
        },
    }
