"""What the scan page shows a reviewer, as the review rules decide it: whether they may decide and, when
not, why in the page's words; the decision options with their note rule; the champion's suggestion
and the outputs it can draw saliency for; history, lock, neighbours and the reviewer's next scan.

The page module (:mod:`app.ui.context`) adds the links and writes this out; it decides nothing.
Not imported by the package's ``__init__``: it reads the queues (:mod:`app.services.next_scan`),
which read the review package.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.db import ArtifactEntry, Decision, DecisionOption, Experiment, Frame, ModelVersion, Project, Scan, User
from app.services import access, decisions, next_scan, vocabulary, volumes
from app.services.errors import ServiceError
from app.services.review.locks import Lock, current_lock
from app.services.review.rules import overrule_refusal, requires_note
from app.services.review.states import history as history_of
from app.services.review.suggestions import Suggestion, champion, latest_evaluations, suggestion


@dataclass(frozen=True)
class SaliencyOutput:
    """An output of the champion a saliency map can be asked for, labelled as the vocabulary labels it."""

    key: str
    label: str


@dataclass(frozen=True)
class ScanFacts:
    """One scan as a reviewer with ``role`` sees it. ``queue`` and ``strategy`` are those asked for, or None
    when they could not be honoured (another role's queue, a mistyped order): the links onwards drop them."""

    scan: Scan
    experiment: Experiment
    project: Project
    state: str
    role: str
    can_decide: bool
    blocked: str | None
    frames: list[tuple[Frame, str]]  # each frame with the version token of its cached copy
    has_champion: bool
    saliency_outputs: list[SaliencyOutput]
    options: list[tuple[DecisionOption, bool]]  # each decision option with whether it needs a note
    artifacts: list[ArtifactEntry]
    suggestion: Suggestion | None
    history: list[Decision]
    latest: Decision | None
    lock: Lock | None
    neighbours: next_scan.Neighbours
    queued: next_scan.NextScan
    queue: str | None
    strategy: str | None


def blocked_message(role: str, latest: Decision | None) -> str | None:
    """The tier rule's refusal as a sentence for the page, when it applies."""
    refusal = overrule_refusal(role, latest)
    return refusal[0].upper() + refusal[1:] + "." if refusal else None


def saliency_outputs(model: ModelVersion | None, entries: list[ArtifactEntry]) -> list[SaliencyOutput]:
    """The champion's outputs a saliency map can be asked for."""
    if model is None:
        return []
    labels = {entry.key: entry.label for entry in entries}
    return [SaliencyOutput(output["key"],
                           "Usable" if output["kind"] == "usable" else labels.get(output["key"], output["key"]))
            for output in model.output_map]


def _queued(project_id: int, user: User, role: str, queue: str | None, strategy: str | None,
            after: int) -> tuple[next_scan.NextScan, str | None, str | None]:
    """The reviewer's next scan after this one; a link with another role's queue or a mistyped order still
    opens the scan, in the role's own queue and the project's order."""
    try:
        return next_scan.pick(project_id, user, role, queue, strategy, after=after), queue, strategy
    except ServiceError:
        return next_scan.pick(project_id, user, role, after=after), None, None


def scan_facts(scan: Scan, user: User, role: str, queue: str | None = None,
               strategy: str | None = None) -> ScanFacts:
    """Scan, frames, vocabulary, the champion's suggestion, history, lock, neighbours and the reviewer's queue."""
    experiment = scan.experiment
    project = experiment.project
    history = history_of(scan)
    latest = history[0] if history else None
    model = champion(project.id)
    entries = vocabulary.artifact_entries(project.id)
    first_frame = scan.frames[0].id if scan.frames else None
    evaluation = latest_evaluations(model, [scan.id], frame_id=first_frame).get(scan.id)
    queued, queue, strategy = _queued(project.id, user, role, queue, strategy, scan.id)
    return ScanFacts(
        scan=scan, experiment=experiment, project=project, state=decisions.scan_state(latest), role=role,
        can_decide=access.ROLE_RANK[role] >= access.ROLE_RANK["tier1"], blocked=blocked_message(role, latest),
        frames=[(frame, volumes.version(frame)) for frame in scan.frames], has_champion=model is not None,
        saliency_outputs=saliency_outputs(model, entries),
        options=[(option, requires_note(project, option)) for option in vocabulary.decision_options(project.id)],
        artifacts=entries,
        suggestion=suggestion(model, evaluation, [e.key for e in entries]) if evaluation else None,
        history=history, latest=latest, lock=current_lock(experiment), neighbours=next_scan.neighbours(scan),
        queued=queued, queue=queue, strategy=strategy,
    )
