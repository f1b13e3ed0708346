"""The scan page's data: one document (``ScanContextSchema``) the page renders, for the first scan and every
next one. The rules it shows (who may decide, which options need a note) are the review service's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app, url_for
from werkzeug.routing import BuildError

from app.api.schemas.base import Extended
from app.api.schemas.scan_page import ScanContextSchema
from app.db import Decision, Experiment, Project, Scan, User
from app.services import access, decisions, next_scan, review, vocabulary, volumes
from app.services.errors import ServiceError


def optional_url(endpoint: str, **values: Any) -> str | None:
    """A link to a page another part of qcloop may provide; None while it does not exist."""
    if endpoint not in current_app.view_functions:
        return None
    try:
        return url_for(endpoint, **values)
    except BuildError:
        return None


@dataclass(frozen=True)
class ScanPage:
    """What the scan page shows, as domain objects; :class:`ScanContextSchema` writes it out."""

    scan: Scan
    experiment: Experiment
    project: Project
    state: str
    role: str
    can_decide: bool
    blocked: str | None
    user: str
    frames: list[Extended]
    saliency_outputs: list[dict[str, str]]
    decisions: list[Extended]
    artifacts: list[Any]
    suggestion: review.Suggestion | None
    history: list[Decision]
    lock: review.Lock | None
    carried: Decision | None
    neighbours: dict[str, dict[str, Any] | None]
    queue: Extended
    urls: dict[str, str | None]


def _saliency_outputs(model, entries) -> list[dict[str, str]]:
    """The champion's outputs a saliency map can be asked for, labelled as the vocabulary labels them."""
    if model is None:
        return []
    labels = {entry.key: entry.label for entry in entries}
    return [{"key": output["key"], "label": "Usable" if output["kind"] == "usable" else labels.get(output["key"],
                                                                                                  output["key"])}
            for output in model.output_map]


def _links(scan_id: int | None, carry: dict[str, str]) -> dict[str, Any] | None:
    if not scan_id:
        return None
    return {"id": scan_id, "page": url_for("ui.scan", scan_id=scan_id, **carry),
            "context": url_for("ui.scan_context_json", scan_id=scan_id, **carry)}


def _blocked(role: str, latest: Decision | None) -> str | None:
    """The tier rule's refusal as the page says it, when it applies."""
    refusal = review.overrule_refusal(role, latest)
    return refusal[0].upper() + refusal[1:] + "." if refusal else None


def scan_page(scan: Scan, user: User, role: str, queue: str | None = None, strategy: str | None = None) -> ScanPage:
    """Scan, frames, vocabulary, the champion's suggestion, history, lock, the reviewer's queue and
    neighbours; a queue or strategy asked for in the URL is kept in every link onwards."""
    experiment = scan.experiment
    project = experiment.project
    history = review.history(scan)
    latest = history[0] if history else None
    model = review.champion(project.id)
    entries = vocabulary.artifact_entries(project.id)
    first_frame = scan.frames[0].id if scan.frames else None
    evaluation = review.latest_evaluations(model, [scan.id], frame_id=first_frame).get(scan.id)
    near = next_scan.neighbours(scan)
    try:
        queued = next_scan.pick(project.id, user, role, queue, strategy, after=scan.id)
    except ServiceError:  # a link with another role's queue or a mistyped order still opens the scan
        queue = strategy = None
        queued = next_scan.pick(project.id, user, role, after=scan.id)
    carry = {key: value for key, value in (("queue", queue), ("strategy", strategy)) if value}
    other = queued.other_queue
    return ScanPage(
        scan=scan, experiment=experiment, project=project, state=decisions.scan_state(latest), role=role,
        can_decide=access.ROLE_RANK[role] >= access.ROLE_RANK["tier1"], blocked=_blocked(role, latest),
        user=user.username,
        frames=[Extended(frame, version=volumes.version(frame), saliency=model is not None) for frame in scan.frames],
        saliency_outputs=_saliency_outputs(model, entries),
        decisions=[Extended(option, requires_note=review.requires_note(project, option))
                   for option in vocabulary.decision_options(project.id)],
        artifacts=entries,
        suggestion=review.suggestion(model, evaluation, [e.key for e in entries]) if evaluation else None,
        history=history, lock=review.current_lock(experiment), carried=latest,
        neighbours={"previous": _links(near.previous, carry), "next": _links(near.next, carry)},
        queue=Extended(queued, next=_links(queued.scan_id if queued.scan_id != scan.id else None, carry),
                       other_url=url_for("ui.next_scan_page", project_id=project.id, queue=other,
                                         **({"strategy": strategy} if strategy else {})) if other else None),
        urls={"decide": url_for("review.create_decision"),
              "lock": url_for("review.lock_experiment", experiment_id=experiment.id),
              "email": optional_url("members.send_scan_email", scan_id=scan.id),
              "self": url_for("ui.scan", scan_id=scan.id),
              "context": url_for("ui.scan_context_json", scan_id=scan.id)},
    )


def scan_context(scan: Scan, user: User, role: str, queue: str | None = None,
                 strategy: str | None = None) -> dict[str, Any]:
    """The scan page's document, as the page embeds it and ``/scans/<id>/context`` answers it."""
    return ScanContextSchema().dump(scan_page(scan, user, role, queue, strategy))
