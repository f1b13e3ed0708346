"""Read models for pages: what a user sees on the projects list and the admin home."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from app.db import Experiment, Membership, Project, Scan, User, db
from app.services.access import readable_project_ids


@dataclass
class ProjectRow:
    project: Project
    role: str | None
    experiments: int
    scans: int


def projects_for(user: User) -> list[ProjectRow]:
    experiments = (select(Experiment.project_id, func.count(Experiment.id).label("n"))
                   .group_by(Experiment.project_id).subquery())
    scans = (select(Experiment.project_id, func.count(Scan.id).label("n")).join(Scan)
             .group_by(Experiment.project_id).subquery())
    role = select(Membership.role).where(Membership.project_id == Project.id,
                                         Membership.user_id == user.id).scalar_subquery()
    query = (select(Project, role, func.coalesce(experiments.c.n, 0), func.coalesce(scans.c.n, 0))
             .outerjoin(experiments, experiments.c.project_id == Project.id)
             .outerjoin(scans, scans.c.project_id == Project.id)
             .where(Project.id.in_(readable_project_ids(user))).order_by(Project.name))
    return [ProjectRow(*row) for row in db.session.execute(query)]

