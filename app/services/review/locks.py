"""Experiment locks: one reviewer at a time decides an experiment's scans, for LOCK_MINUTES at a stretch."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import or_, update

from app.db import Experiment, User, db, utcnow
from app.services import audit
from app.services.errors import Conflict, Forbidden


@dataclass(frozen=True)
class Lock:
    """Who holds an experiment's lock (None: a deleted account) and until when."""

    owner: User | None
    expires: datetime


def _owner_json(lock: Lock) -> dict[str, Any] | None:
    """The holder as error answers and the audit log name it."""
    owner = lock.owner
    return {"id": owner.id, "username": owner.username, "name": owner.display_name} if owner else None


def current_lock(experiment: Experiment) -> Lock | None:
    """The experiment's lock, None when free or expired."""
    expires = experiment.lock_expires_at
    if experiment.lock_owner_id is None or expires is None or expires <= utcnow():
        return None
    return Lock(experiment.lock_owner, expires)


def take_lock(experiment: Experiment, user: User) -> Lock:
    """Take or renew the lock for LOCK_MINUTES; Conflict (409) naming the holder when someone else has it."""
    now = utcnow()
    expires = now + timedelta(minutes=current_app.config["LOCK_MINUTES"])
    taken = db.session.execute(
        update(Experiment).where(Experiment.id == experiment.id, or_(
            Experiment.lock_owner_id.is_(None), Experiment.lock_owner_id == user.id,
            Experiment.lock_expires_at.is_(None), Experiment.lock_expires_at <= now))
        .values(lock_owner_id=user.id, lock_expires_at=expires).execution_options(synchronize_session=False))
    db.session.refresh(experiment)
    lock = current_lock(experiment)
    if taken.rowcount != 1 or lock is None:
        raise _locked_by_other(experiment)
    return lock


def _locked_by_other(experiment: Experiment) -> Conflict:
    holder = current_lock(experiment)
    name = holder.owner.username if holder and holder.owner else "another reviewer"
    until = holder.expires.isoformat() if holder else "soon"
    return Conflict(f"experiment {experiment.name!r} is locked by {name} until {until}",
                    lock={"owner": _owner_json(holder), "expires": holder.expires.isoformat()} if holder else None,
                    experiment=experiment.id)


def release_lock(experiment: Experiment, user: User, role: str) -> None:
    """The holder releases; a project admin breaks someone else's lock (audited); others are refused."""
    holder = current_lock(experiment)
    if holder is None:
        experiment.lock_owner_id, experiment.lock_expires_at = None, None
        return
    if experiment.lock_owner_id != user.id:
        if role != "admin":
            raise Forbidden("only the lock holder or a project admin can release this lock")
        audit.record("experiment.lock_break", actor=user, project_id=experiment.project_id,
                     target=("experiment", experiment.id), holder=_owner_json(holder),
                     expires=holder.expires.isoformat())
    experiment.lock_owner_id, experiment.lock_expires_at = None, None


def require_lock(experiment: Experiment, user: User) -> None:
    """A decision needs the experiment's lock: 409 when another reviewer holds it or the caller does not."""
    holder = current_lock(experiment)
    if holder is not None and experiment.lock_owner_id == user.id:
        return
    if holder is not None:
        raise _locked_by_other(experiment)
    raise Conflict(f"you do not hold the lock on experiment {experiment.name!r}: open it for review "
                   f"(POST /api/v1/experiments/{experiment.id}/lock) first", lock=None, experiment=experiment.id)
