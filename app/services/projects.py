"""Projects, memberships and the experiment/scan/frame tree."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select

from app.db import ROLES, Experiment, Frame, Membership, Project, Scan, User, db
from app.services import audit, vocabulary
from app.services.errors import Conflict, InvalidInput

DEFAULT_SETTINGS = {
    # Decision keys whose note is required (None: use each option's requires_note flag).
    "note_required_for": None,
    # Which decision settles a scan for training: "tier2_then_newest" or "newest".
    "label_rule": "tier2_then_newest",
    # How questionable decisions enter training: "exclude" or a weight in (0, 1].
    "questionable": "exclude",
    # Fewest present and fewest absent labels an output needs to be trained (a run may ask for another).
    "min_labels_per_class": 5,
}
MIN_LABELS_RANGE = (1, 100000)
# Settings a project admin edits (the training page, PATCH /api/v1/projects/{id}/training-settings).
EDITABLE_SETTINGS = ("label_rule", "questionable", "min_labels_per_class")


@dataclass(frozen=True)
class ProjectSettings:
    """A project's review and training settings, defaults filled in (see ``DEFAULT_SETTINGS``)."""

    note_required_for: list[str] | None
    label_rule: str
    questionable: str | float
    min_labels_per_class: int


def model_name_for(name: str) -> str:
    return "qcloop-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-").lower() or "project")


def check_name(name: str | None) -> str:
    """The project name as stored (outer spaces removed); InvalidInput when empty, too long or holding
    control characters (names appear in CSV rows, file names and page titles)."""
    if not isinstance(name, str):
        raise InvalidInput("project name must be text", field="name")
    name = name.strip()
    if not name or len(name) > 255:
        raise InvalidInput("project name must be 1-255 characters", field="name")
    if any(unicodedata.category(character) == "Cc" for character in name):
        raise InvalidInput("project name may not contain control characters (tabs, line breaks, NUL)", field="name")
    return name


def create_project(name: str, creator: User | None, template: Project | str | None = None) -> Project:
    """A new project with its own vocabulary and settings, its creator as admin member (audited; the
    caller commits). ``template`` (a project or its name) gives the new project copies of that project's
    active decision options, artifact entries and settings instead of the defaults; its members, data
    and models are not copied, and the model registry name is always the new project's own."""
    name = check_name(name)
    if isinstance(template, str):
        template_name = template
        template = find_project(template_name)
        if template is None:
            raise InvalidInput(f"no project named {template_name!r} to use as a template", field="template")
    if db.session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise Conflict(f"a project named {name!r} already exists", field="name")
    settings = {**DEFAULT_SETTINGS, **(template.settings or {})} if template is not None else dict(DEFAULT_SETTINGS)
    project = Project(name=name, creator_id=creator.id if creator else None, settings=settings,
                      model_name=model_name_for(name))
    db.session.add(project)
    db.session.flush()
    vocabulary.copy_to(project.id, template.id if template is not None else None)
    if creator is not None:
        db.session.add(Membership(project_id=project.id, user_id=creator.id, role="admin"))
    audit.record("project.create", actor=creator, project_id=project.id, target=("project", project.id),
                 after={"name": name, "template": template.name if template is not None else None})
    db.session.flush()
    return project


def settings_of(project: Project) -> ProjectSettings:
    """The project's settings with the defaults filled in (projects made before a setting existed lack it)."""
    stored = project.settings or {}
    return ProjectSettings(**{key: stored.get(key, default) for key, default in DEFAULT_SETTINGS.items()})


def _checked_setting(key: str, value: Any) -> Any:
    if key == "min_labels_per_class":
        low, high = MIN_LABELS_RANGE
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidInput(f"min_labels_per_class must be an integer from {low} to {high}", field=key)
        return value
    if key == "questionable" and value != "exclude":
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = -1.0
        if isinstance(value, bool) or not 0 < value <= 1:
            raise InvalidInput("questionable must be 'exclude' or a weight in (0, 1]", field=key)
        return value
    if key == "label_rule":
        from training.data import LABEL_RULES

        if value not in LABEL_RULES:
            raise InvalidInput(f"label_rule must be one of {', '.join(LABEL_RULES)}", field=key)
    return value


def update_settings(project: Project, changes: dict[str, Any], actor: User | None) -> ProjectSettings:
    """Change editable settings (all checked before any is applied), audited; returns the effective
    settings."""
    if not isinstance(changes, dict):
        raise InvalidInput("the request body must be an object")
    unknown = sorted(set(changes) - set(EDITABLE_SETTINGS))
    if unknown:
        raise InvalidInput(f"unknown or read-only setting(s): {', '.join(unknown)}; editable: "
                           f"{', '.join(EDITABLE_SETTINGS)}", field=unknown[0])
    checked = {key: _checked_setting(key, value) for key, value in changes.items()}
    before = asdict(settings_of(project))
    changed = {key: value for key, value in checked.items() if before.get(key) != value}
    if changed:
        project.settings = {**(project.settings or {}), **changed}
        audit.record("project.settings", actor=actor, project_id=project.id, target=("project", project.id),
                     before={key: before.get(key) for key in changed}, after=changed)
    return settings_of(project)


def find_project(name: str) -> Project | None:
    return db.session.scalar(select(Project).where(Project.name == name))


def set_role(project: Project, user: User, role: str | None, actor: User | None) -> None:
    """Give the user a role in the project (None removes the membership)."""
    if role is not None and role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    membership = db.session.scalar(
        select(Membership).where(Membership.project_id == project.id, Membership.user_id == user.id)
    )
    before = membership.role if membership else None
    if role is None:
        if membership is not None:
            db.session.delete(membership)
    elif membership is None:
        db.session.add(Membership(project_id=project.id, user_id=user.id, role=role))
    else:
        membership.role = role
    if before != role:
        audit.record("role.change", actor=actor, project_id=project.id, target=("user", user.id),
                     before=before, after=role)


def get_or_create_experiment(project: Project, name: str) -> Experiment:
    experiment = db.session.scalar(
        select(Experiment).where(Experiment.project_id == project.id, Experiment.name == name)
    )
    if experiment is None:
        experiment = Experiment(project_id=project.id, name=name)
        db.session.add(experiment)
        db.session.flush()
    return experiment


def get_or_create_scan(experiment: Experiment, name: str, **fields) -> Scan:
    scan = db.session.scalar(select(Scan).where(Scan.experiment_id == experiment.id, Scan.name == name))
    if scan is None:
        scan = Scan(experiment_id=experiment.id, name=name, **fields)
        db.session.add(scan)
        db.session.flush()
    return scan


def add_frame(scan: Scan, frame_number: int, file_location: str, **fields) -> Frame:
    frame = Frame(scan_id=scan.id, frame_number=frame_number, file_location=file_location, **fields)
    db.session.add(frame)
    db.session.flush()
    return frame
