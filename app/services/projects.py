"""Projects, memberships and the experiment/scan/frame tree."""
from __future__ import annotations

import re

from sqlalchemy import select

from app.db import ROLES, Experiment, Frame, Membership, Project, Scan, User, db
from app.services import audit, vocabulary
from app.services.errors import Conflict, InvalidInput, NotFound

DEFAULT_SETTINGS = {
    # Decision keys whose note is required (None: use each option's requires_note flag).
    "note_required_for": None,
    # Which decision settles a scan for training: "tier2_then_newest" or "newest".
    "label_rule": "tier2_then_newest",
    # How questionable decisions enter training: "exclude" or a weight in (0, 1].
    "questionable": "exclude",
}


def model_name_for(name: str) -> str:
    return "qcloop-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-").lower() or "project")


def create_project(name: str, creator: User | None) -> Project:
    name = (name or "").strip()
    if not name or len(name) > 255:
        raise InvalidInput("project name must be 1-255 characters", field="name")
    if db.session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise Conflict(f"a project named {name!r} already exists", field="name")
    project = Project(name=name, creator_id=creator.id if creator else None,
                      settings=dict(DEFAULT_SETTINGS), model_name=model_name_for(name))
    db.session.add(project)
    db.session.flush()
    vocabulary.copy_defaults_to(project.id)
    if creator is not None:
        db.session.add(Membership(project_id=project.id, user_id=creator.id, role="admin"))
    audit.record("project.create", actor=creator, project_id=project.id, target=("project", project.id))
    return project


def get_project(project_id: int) -> Project:
    project = db.session.get(Project, project_id)
    if project is None:
        raise NotFound("Not found.")
    return project


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
