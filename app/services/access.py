"""Who may see and change what: project roles, resolved from any object id in a URL."""
from __future__ import annotations

from sqlalchemy import select

from app.db import MAX_ID, ROLES, Decision, Experiment, Frame, Job, Membership, Project, Scan, TrainingRun, User, db
from app.services.errors import Forbidden, NotFound, Unauthorized

ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
# URL argument name -> query giving the id of the project that owns the object.
_OWNER_QUERIES = {
    "project_id": None,
    "experiment_id": lambda i: select(Experiment.project_id).where(Experiment.id == i),
    "scan_id": lambda i: select(Experiment.project_id).join(Scan).where(Scan.id == i),
    "frame_id": lambda i: select(Experiment.project_id).join(Scan).join(Frame).where(Frame.id == i),
    "decision_id": lambda i: select(Experiment.project_id).join(Scan).join(Decision).where(Decision.id == i),
    "run_id": lambda i: select(TrainingRun.project_id).where(TrainingRun.id == i),
    "job_id": lambda i: select(Job.project_id).where(Job.id == i),
}
OBJECT_ARGUMENTS = tuple(_OWNER_QUERIES)


def project_of(argument: str, object_id: int) -> int:
    """The project owning the object named by a URL argument; NotFound when there is none."""
    if not 0 < object_id <= MAX_ID:  # the database could not even compare it
        raise NotFound("Not found.")
    query = _OWNER_QUERIES[argument]
    if query is None:
        project_id = db.session.scalar(select(Project.id).where(Project.id == object_id))
    else:
        project_id = db.session.scalar(query(object_id))
    if project_id is None:
        raise NotFound("Not found.")
    return project_id


def role_in(user: User, project_id: int) -> str | None:
    if not user.is_authenticated:
        return None
    return db.session.scalar(
        select(Membership.role).where(Membership.project_id == project_id, Membership.user_id == user.id)
    )


def require_project_role(user: User, project_id: int, minimum: str) -> str:
    """The user's effective role; 404 for a project they cannot read, 403 when the role is too low."""
    if not user.is_authenticated:
        raise Unauthorized("Authentication credentials were not provided.")
    if user.is_superuser:
        return "admin"
    role = role_in(user, project_id)
    if role is None:
        raise NotFound("Not found.")
    if ROLE_RANK[role] < ROLE_RANK[minimum]:
        raise Forbidden("You do not have permission to perform this action.")
    return role


def readable_project_ids(user: User) -> select:
    """A subquery of the ids of projects the user may read."""
    if user.is_superuser:
        return select(Project.id)
    return select(Membership.project_id).where(Membership.user_id == user.id)
