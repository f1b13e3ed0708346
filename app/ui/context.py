"""The scan page's data: one document (``ScanContextSchema``) the page renders, for the first scan and every
next one. What it shows, and the rules behind it (who may decide and why not, which options need a note,
which outputs have saliency maps), are the review service's (:mod:`app.services.review.scan_page`); this
module adds the links."""
from __future__ import annotations

from typing import Any

from flask import current_app, url_for
from werkzeug.routing import BuildError

from app.api.schemas.base import Extended
from app.api.schemas.scan_page import ScanContextSchema
from app.db import Scan, User
from app.services.review.scan_page import scan_facts


def optional_url(endpoint: str, **values: Any) -> str | None:
    """A link to a page another part of qcloop may provide; None while it does not exist."""
    if endpoint not in current_app.view_functions:
        return None
    try:
        return url_for(endpoint, **values)
    except BuildError:
        return None


def _links(scan_id: int | None, carry: dict[str, str]) -> dict[str, Any] | None:
    if not scan_id:
        return None
    return {"id": scan_id, "page": url_for("ui.scan", scan_id=scan_id, **carry),
            "context": url_for("ui.scan_context_json", scan_id=scan_id, **carry)}


def scan_page(scan: Scan, user: User, role: str, queue: str | None = None, strategy: str | None = None) -> Extended:
    """The review service's facts about the scan with the page's links; a queue or strategy asked for in the URL
    (and honoured) is kept in every link onwards."""
    facts = scan_facts(scan, user, role, queue, strategy)
    experiment, project, queued = facts.experiment, facts.project, facts.queued
    carry = {key: value for key, value in (("queue", facts.queue), ("strategy", facts.strategy)) if value}
    other = queued.other_queue
    return Extended(
        facts, user=user.username,
        frames=[Extended(frame, version=version, saliency=facts.has_champion) for frame, version in facts.frames],
        decisions=[Extended(option, requires_note=needs_note) for option, needs_note in facts.options],
        carried=facts.latest,
        neighbours={"previous": _links(facts.neighbours.previous, carry),
                    "next": _links(facts.neighbours.next, carry)},
        queue=Extended(queued, next=_links(queued.scan_id if queued.scan_id != scan.id else None, carry),
                       other_url=url_for("ui.next_scan_page", project_id=project.id, queue=other,
                                         **({"strategy": facts.strategy} if facts.strategy else {}))
                       if other else None),
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
