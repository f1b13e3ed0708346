"""Invitations by email: a link with an expiry that creates the account and its membership.

The link carries a random token; only its SHA-256 digest is stored (as for API tokens), so
a database dump cannot be used to join a project. Accepting runs in one transaction: on
bad input nothing is created.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select

from app.db import ROLES, Invitation, Project, User, db, utcnow
from app.services import audit, mail, projects, users
from app.services.errors import Conflict, InvalidInput, NotFound
from app.services.loaders import load

INVITE_LIFETIME = timedelta(days=7)


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def invite(email: str, project: Project | None, role: str, actor: User) -> tuple[Invitation, str]:
    """Store an invitation and mail its link; returns the row and the raw token (shown nowhere else,
    unless no mail server is configured: see unmailed_link)."""
    email = users.normalize_email(email)
    if project is not None and role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    existing = db.session.scalar(select(User).where(User.email == email))
    if existing is not None:
        raise Conflict(f"{email} already has an account ({existing.username}); add that user as a member instead",
                       field="email")
    raw = secrets.token_urlsafe(32)
    invitation = Invitation(email=email, project_id=project.id if project else None,
                            role=role if project is not None else "collaborator", digest=_digest(raw),
                            invited_by_id=actor.id, expires_at=utcnow() + INVITE_LIFETIME)
    db.session.add(invitation)
    db.session.flush()
    audit.record("invitation.create", actor=actor, project_id=invitation.project_id,
                 target=("invitation", invitation.id), email=email, role=invitation.role)
    link = users.external_link("auth.accept_invite", invite_token=raw)
    where = f"the project {project.name} as {role}" if project is not None else "qcloop"
    mail.send(email, f"{actor.display_name} invites you to {where}", (
        f"Hello,\n\n{actor.display_name} invites you to join {where}.\n"
        f"Choose a username and a password here before {invitation.expires_at:%Y-%m-%d %H:%M} UTC:\n\n"
        f"{link}\n\nIf you did not expect this invitation, ignore this mail.\n"), reply_to=actor.email)
    return invitation, raw


def unmailed_link(raw: str) -> str | None:
    """The link to show the inviting admin, once, when no mail server took it (the mail only went
    to the outbox folder on the server); None when it was mailed."""
    if mail.configured():
        return None
    return users.external_link("auth.accept_invite", invite_token=raw)


def pending(project_id: int | None) -> list[Invitation]:
    """Invitations not yet accepted (expired ones included, so they can be seen and re-sent)."""
    query = select(Invitation).where(Invitation.accepted_at.is_(None)).order_by(Invitation.id.desc())
    query = query.where(Invitation.project_id == project_id if project_id is not None
                        else Invitation.project_id.is_(None))
    return list(db.session.scalars(query))


def is_expired(invitation: Invitation) -> bool:
    return invitation.expires_at <= utcnow()


def revoke(invitation: Invitation, actor: User) -> None:
    if invitation.accepted_at is not None:
        raise Conflict("this invitation was already accepted", field="invitation")
    audit.record("invitation.revoke", actor=actor, project_id=invitation.project_id,
                 target=("invitation", invitation.id), email=invitation.email)
    db.session.delete(invitation)


def open_invitation(raw: str) -> Invitation:
    """The invitation a link names; NotFound when unknown, InvalidInput when used or expired."""
    invitation = db.session.scalar(select(Invitation).where(Invitation.digest == _digest(raw or "")))
    if invitation is None:
        raise NotFound("This invitation link is not valid (it may have been revoked).")
    if invitation.accepted_at is not None:
        raise InvalidInput("This invitation was already accepted; log in instead.", field="token", reason="used")
    if is_expired(invitation):
        raise InvalidInput(f"This invitation expired on {invitation.expires_at:%Y-%m-%d %H:%M} UTC; "
                           "ask the person who invited you for a new one.", field="token", reason="expired")
    return invitation


def accept(raw: str, username: str, password: str, first_name: str = "", last_name: str = "") -> User:
    """Create the invited account (approved) and its membership; the caller commits or rolls back."""
    invitation = open_invitation(raw)
    user = users.create_user(username, password, email=invitation.email, first_name=first_name or "",
                             last_name=last_name or "", approved=True)
    if invitation.project_id is not None:
        inviter = db.session.get(User, invitation.invited_by_id) if invitation.invited_by_id else None
        projects.set_role(load(Project, invitation.project_id), user, invitation.role, actor=inviter)
    invitation.accepted_at = utcnow()
    audit.record("invitation.accept", actor=user, project_id=invitation.project_id,
                 target=("invitation", invitation.id))
    return user
