"""Users and memberships in qcloop's full files, so a full export re-imports with its reviewers.

Accounts are matched by username. An import of every project (an operator's) creates the missing
ones without a password (they set one through a password reset) and never as superusers; a
project's own import only gives roles to accounts that exist. Decisions the import wrote under
a creator's name are then linked to the account of that username or e-mail.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import func, select, update

from app.db import ROLES, Decision, Membership, Project, User, db
from app.services import projects, users
from app.services.transfer.model import Document, MemberIn, clean
from app.services.transfer.problems import Problems

COUNTERS = ("users_added", "memberships_changed")


@dataclass
class PeoplePlan:
    new_users: list[MemberIn] = field(default_factory=list)
    roles: list[tuple[str, MemberIn]] = field(default_factory=list)  # (project name, member)


def member_rows(project_id: int) -> list[dict[str, str | None]]:
    """The project's members as the full export writes them."""
    return [{"username": username, "email": email, "role": role} for username, email, role in db.session.execute(
        select(User.username, User.email, Membership.role).join(Membership, Membership.user_id == User.id)
        .where(Membership.project_id == project_id).order_by(User.username))]


def read_member(raw: dict, where: str, problems: Problems) -> MemberIn | None:
    """A member from a CSV row's or a JSON object's username, email and role."""
    username, role = clean(raw.get("username")), clean(raw.get("role"))
    if username is None or role not in ROLES:
        problems.error(where, "role" if username else "username",
                       f"a member needs a username and a role ({', '.join(ROLES)})")
        return None
    return MemberIn(where, username, clean(raw.get("email")), role)


def plan(document: Document, creates_users: bool, count: Callable[[str, str], None], problems: Problems) -> PeoplePlan:
    """Which accounts to create and which roles to set; counted like the import's other changes."""
    found = PeoplePlan()
    known = {name.lower() for name in db.session.scalars(select(User.username))}
    for pin in document.projects.values():
        roles = dict(db.session.execute(
            select(func.lower(User.username), Membership.role).join(Membership, Membership.user_id == User.id)
            .join(Project, Project.id == Membership.project_id).where(Project.name == pin.name)).all())
        for member in pin.members:
            name = member.username.lower()
            if name not in known:
                if not creates_users:
                    problems.warn(member.where, "username", f"no account {member.username!r}; role not given")
                    continue
                known.add(name)
                found.new_users.append(member)
                count("users_added", member.username)
            if roles.get(name) != member.role:
                found.roles.append((pin.name, member))
                count("memberships_changed", f"{pin.name}: {member.username} {member.role}")
    return found


def apply(people: PeoplePlan) -> None:
    """Create the accounts, give the roles and link the decisions written under their names."""
    created = [users.create_user(m.username, None, email=m.email) for m in people.new_users]
    db.session.flush()
    for project_name, member in people.roles:
        account = users.find_user(member.username)
        projects.set_role(projects.find_project(project_name), account, member.role, actor=None)
    for account in created:
        names = [account.username.lower()] + ([account.email.lower()] if account.email else [])
        db.session.execute(update(Decision).where(Decision.creator_id.is_(None),
                                                  func.lower(Decision.creator_name).in_(names))
                           .values(creator_id=account.id, creator_name=None))
