"""Project members: who has which role, changed by the project's admins; members mail each other."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, func, select
from werkzeug.routing import BuildError

from app.db import MAX_ID, ROLES, Experiment, Membership, Project, Scan, User, db
from app.services import audit, mail, projects, users
from app.services.errors import Conflict, InvalidInput, NotFound
from app.services.loaders import load, load_one

MAX_MESSAGE_LENGTH = 5000
MAX_SUBJECT_LENGTH = 200


@dataclass(frozen=True)
class Recipient:
    """A member one may write to about a scan."""

    id: int
    username: str
    name: str
    role: str


@dataclass(frozen=True)
class EmailDraft:
    """What the review page pre-fills to mail members about a scan."""

    subject: str
    link: str
    body: str
    recipients: list[Recipient]


@dataclass(frozen=True)
class EmailSent:
    """Who was mailed about a scan, under which subject."""

    sent_to: list[str]
    subject: str
    link: str


def members_query(project_id: int) -> Select:
    """(Membership) rows of a project, by username."""
    return (select(Membership).join(User, User.id == Membership.user_id)
            .where(Membership.project_id == project_id).order_by(User.username))


def list_members(project_id: int) -> list[Membership]:
    return list(db.session.scalars(members_query(project_id)))


def _check_role(role: object) -> str:
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    return role


def _keep_an_admin(project_id: int, user_id: int) -> None:
    admins = db.session.scalar(select(func.count()).select_from(Membership).where(
        Membership.project_id == project_id, Membership.role == "admin", Membership.user_id != user_id))
    if not admins:
        raise Conflict("a project keeps at least one admin; make someone else admin first", field="role")


def add_member(project_id: int, login: str, role: str, actor: User) -> Membership:
    """Give an existing account (by username or email) a role in the project."""
    role = _check_role(role)
    user = users.find_user(login.strip()) if isinstance(login, str) else None
    if user is None:
        raise NotFound(f"no account named {str(login)[:150]!r}; invite them by email instead", field="user")
    project = load(Project, project_id)
    current = db.session.scalar(select(Membership.role).where(Membership.project_id == project_id,
                                                              Membership.user_id == user.id))
    if current == "admin" and role != "admin":
        _keep_an_admin(project_id, user.id)
    projects.set_role(project, user, role, actor=actor)
    db.session.flush()
    return load_one(Membership, project_id=project_id, user_id=user.id)


def change_role(project_id: int, user_id: int, role: str | None, actor: User) -> None:
    """Change a member's role, or remove them (role None); the last admin stays."""
    membership = load_one(Membership, project_id=project_id, user_id=user_id)
    if role is not None:
        role = _check_role(role)
    if membership.role == "admin" and role != "admin":
        _keep_an_admin(project_id, user_id)
    projects.set_role(load(Project, project_id), membership.user, role, actor=actor)


# --- mail about a scan, between members of its project


def _scan_context(scan_id: int) -> tuple[Scan, Experiment, Project]:
    """A scan with its experiment and project; the loader answers a scan that is not there."""
    scan = load(Scan, scan_id)
    return scan, scan.experiment, scan.experiment.project


def scan_link(scan_id: int) -> str:
    """The review page of a scan (``ui.scan``), or the project list until that page exists."""
    try:
        return users.external_link("ui.scan", scan_id=scan_id)
    except BuildError:
        return users.external_link("ui.projects")


def scan_email_draft(scan_id: int, sender: User) -> EmailDraft:
    """What the review page pre-fills: subject, body with the link, and the members one may write to."""
    scan, experiment, project = _scan_context(scan_id)
    link = scan_link(scan.id)
    recipients = db.session.execute(
        select(User, Membership.role).join(Membership, Membership.user_id == User.id)
        .where(Membership.project_id == project.id, User.id != sender.id, User.email.is_not(None),
               User.is_enabled, User.is_approved).order_by(User.username)).all()
    return EmailDraft(
        subject=f"[qcloop] {project.name} / {experiment.name} / {scan.name}"[:MAX_SUBJECT_LENGTH],
        link=link,
        body=f"About scan {scan.name} (experiment {experiment.name}, project {project.name}):\n{link}\n",
        recipients=[Recipient(user.id, user.username, user.display_name, role) for user, role in recipients],
    )


def send_scan_email(scan_id: int, sender: User, to: list, message: str, subject: str | None = None) -> EmailSent:
    """Mail members of the scan's project about it; every recipient must be a member with an address."""
    scan, experiment, project = _scan_context(scan_id)
    if not isinstance(to, list) or not to or len(to) > 50:
        raise InvalidInput("to must list 1 to 50 members (user ids or usernames)", field="to")
    if not isinstance(message, str) or len(message) > MAX_MESSAGE_LENGTH:
        raise InvalidInput(f"message must be text of at most {MAX_MESSAGE_LENGTH} characters", field="message")
    if subject is not None and (not isinstance(subject, str) or not subject.strip()
                                or len(subject) > MAX_SUBJECT_LENGTH or "\n" in subject or "\r" in subject):
        raise InvalidInput(f"subject must be one line of at most {MAX_SUBJECT_LENGTH} characters", field="subject")
    draft = scan_email_draft(scan.id, sender)
    addresses: list[str] = []
    names: list[str] = []
    for entry in to:
        if isinstance(entry, bool) or not isinstance(entry, (int, str)):
            raise InvalidInput("to must list user ids or usernames", field="to")
        if isinstance(entry, int):
            user = db.session.get(User, entry) if 0 < entry <= MAX_ID else None
        else:
            user = users.find_user(entry)
        if user is None or role_of(project.id, user.id) is None:
            raise InvalidInput(f"{entry!r} is not a member of project {project.name}", field="to")
        if not user.email:
            raise InvalidInput(f"{user.username} has no email address", field="to")
        if user.email not in addresses:
            addresses.append(user.email)
            names.append(user.username)
    body = (f"{message.strip()}\n\n" if message.strip() else "") + draft.body + \
        f"\n-- \n{sender.display_name} ({sender.username}) via qcloop\n"
    mail.send(addresses, subject.strip() if subject else draft.subject, body, reply_to=sender.email)
    audit.record("scan.email", actor=sender, project_id=project.id, target=("scan", scan.id), to=names)
    return EmailSent(names, subject.strip() if subject else draft.subject, draft.link)


def role_of(project_id: int, user_id: int) -> str | None:
    return db.session.scalar(select(Membership.role).where(Membership.project_id == project_id,
                                                           Membership.user_id == user_id))
