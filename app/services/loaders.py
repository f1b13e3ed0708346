"""One way to load a row by id for a route: the row, or NotFound naming what was missing.

Routes and services call :func:`load` instead of ``db.session.get`` and a None check of their
own. The answer's message stays "Not found." (MIQA's, and the one a permission check gives for
another project's id, so a stranger learns nothing from the difference); the exception carries
the resource's name and id for logs and callers.
"""
from __future__ import annotations

import logging
from typing import TypeVar

from sqlalchemy import select

from app.db import MAX_ID, Decision, Frame, Project, Scan, db
from app.services.errors import NotFound

log = logging.getLogger(__name__)
T = TypeVar("T")

# Rows without a project_id column of their own: the URL argument access.project_of resolves them by.
_OWNER_ARGUMENTS = {Scan: "scan_id", Frame: "frame_id", Decision: "decision_id"}


class Missing(NotFound):
    """NotFound for one resource: ``resource`` (the table's singular name) and ``object_id`` say which."""

    def __init__(self, resource: str, object_id: object) -> None:
        super().__init__("Not found.")
        self.resource = resource
        self.object_id = object_id

    def __str__(self) -> str:
        return f"{self.resource} {self.object_id!r} not found"


def resource_name(model: type) -> str:
    """The name people use for a model's rows: its class name in lower case ("scan", "trainingrun")."""
    return model.__name__.lower()


def load(model: type[T], object_id: int, *, project_id: int | None = None, owner_id: int | None = None) -> T:
    """The ``model`` row with this id; :class:`Missing` when there is none, when ``project_id`` is given and the
    row belongs to another project (an id from elsewhere in a project-scoped URL is simply not found), or when
    ``owner_id`` is given and the row's ``user_id`` is another user's (someone else's token is not found either)."""
    if not isinstance(object_id, int) or isinstance(object_id, bool) or not 0 < object_id <= MAX_ID:
        raise Missing(resource_name(model), object_id)  # the database could not even compare it
    row = db.session.get(model, object_id)
    if (row is None or (project_id is not None and project_of(row) != project_id)
            or (owner_id is not None and getattr(row, "user_id", None) != owner_id)):
        log.debug("%s %s not found (project %s, owner %s)", resource_name(model), object_id, project_id, owner_id)
        raise Missing(resource_name(model), object_id)
    return row


def load_one(model: type[T], **columns: object) -> T:
    """The one ``model`` row whose ``columns`` have these values, for rows a URL names by more than an id
    (a membership by project and user); :class:`Missing` when there is none, as :func:`load` answers."""
    row = db.session.scalar(select(model).filter_by(**columns))
    if row is None:
        log.debug("%s %s not found", resource_name(model), columns)
        raise Missing(resource_name(model), tuple(columns.values()))
    return row


def project_of(row: object) -> int | None:
    """The id of the project a loaded row belongs to (None for rows outside projects, such as users)."""
    if isinstance(row, Project):
        return row.id
    if type(row) in _OWNER_ARGUMENTS:
        from app.services import access

        return access.project_of(_OWNER_ARGUMENTS[type(row)], row.id)
    return getattr(row, "project_id", None)
