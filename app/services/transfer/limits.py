"""The longest text an import may write into each field: the limits the API holds people to (and the
database columns' sizes), so that a file cannot store what the API would refuse, and PostgreSQL never
refuses a row halfway through writing an import."""
from __future__ import annotations

from typing import TYPE_CHECKING

from app.db import NOTE_MAX_LENGTH

if TYPE_CHECKING:
    from app.services.transfer.model import ProjectIn
    from app.services.transfer.problems import Problems

NAME_MAX_LENGTH = 255
LOCATION_MAX_LENGTH = 2000
CREATOR_MAX_LENGTH = 254  # the longest e-mail address
# What ``set_once`` fills, by attribute: experiment notes, and a scan's subject, session and link.
ATTRIBUTE_LIMITS = {"note": NOTE_MAX_LENGTH, "subject_id": NAME_MAX_LENGTH, "session_id": NAME_MAX_LENGTH,
                    "link": LOCATION_MAX_LENGTH}
_VOCABULARY = {"options": {"key": 32, "label": 100}, "entries": {"key": 64, "label": 100}}
_MODEL = {"registry_name": NAME_MAX_LENGTH, "version": 32, "alias": 64, "mlflow_run_id": 64}


def too_long(value: object, limit: int, where: str, field: str | None, problems: Problems) -> bool:
    """Record (and say) that a text is over its limit."""
    if not isinstance(value, str) or len(value) <= limit:
        return False
    problems.error(where, field, f"longer than {limit} characters ({len(value)})")
    return True


def check_project(pin: ProjectIn, problems: Problems) -> None:
    """Names, file locations, decision creators and notes, vocabulary and model fields of one project."""
    too_long(pin.name, NAME_MAX_LENGTH, pin.where, "project_name", problems)
    for kind, limits in _VOCABULARY.items():
        for row in getattr(pin, kind):
            for name, limit in limits.items():
                too_long(row.get(name), limit, row["where"], name, problems)
    for model in pin.model_versions:
        for name, limit in _MODEL.items():
            too_long(getattr(model, name), limit, model.where, name, problems)
    for experiment in pin.experiments.values():
        too_long(experiment.name, NAME_MAX_LENGTH, experiment.where, "experiment_name", problems)
        for scan in experiment.scans.values():
            too_long(scan.name, NAME_MAX_LENGTH, scan.where, "scan_name", problems)
            for frame in scan.frames.values():
                too_long(frame.location, LOCATION_MAX_LENGTH, frame.where, "file_location", problems)
            for decision in scan.decisions:
                too_long(decision.creator, CREATOR_MAX_LENGTH, decision.where, decision.fields["creator"], problems)
                too_long(decision.note, NOTE_MAX_LENGTH, decision.where, decision.fields["note"], problems)
