"""Administration pages: users, sign-up approval, invitations and the audit log (superusers);
project members and their roles (project admins)."""
from __future__ import annotations

from typing import Callable

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from app.admin import bp
from app.auth.permissions import permission
from app.db import ROLES, Invitation, Project, User, boundary
from app.services import audit_log, invitations, mail, members, overview, users
from app.services.loaders import load
from app.services.errors import ServiceError

AUDIT_PAGE = 100


def _attempt(action: Callable[[], object], success: str, target: str) -> Response:
    """Run a change (the request boundary commits it) and flash ``success``; a refusal is rolled back and flashed."""
    try:
        action()
        flash(success, "info")
    except ServiceError as err:
        boundary.rollback()
        flash(err.message, "error")
    return redirect(target)


def _invite(email: str, project: Project | None, role: str, target: str) -> Response:
    """Invite and say where the link went: mailed, or shown here once when no mail server is configured."""
    try:
        invitation, raw = invitations.invite(email, project, role, current_user)
        link = invitations.unmailed_link(raw)
    except ServiceError as err:
        boundary.rollback()
        flash(err.message, "error")
        return redirect(target)
    if link is None:
        flash(f"An invitation is mailed to {invitation.email}.", "info")
    else:
        flash(f"No mail server is configured, so the invitation was NOT mailed to {invitation.email}. Send them this link "
              f"yourself; it is shown only now and is valid for {invitations.INVITE_LIFETIME.days} days:", "invite")
        flash(link, "invite-link")
    return redirect(target)


@bp.get("/")
@permission("superuser")
def index():
    return render_template(
        "admin/index.html", users=users.all_users(), pending=users.pending_users(),
        projects=overview.projects_for(current_user), invitations=invitations.pending(None), roles=ROLES,
        is_expired=invitations.is_expired, mail_configured=mail.configured())


@bp.post("/users/<int:user_id>/approve")
@permission("superuser")
def approve_user(user_id: int):
    user = load(User, user_id)
    return _attempt(lambda: users.approve(user, current_user), f"{user.username} is approved.",
                    url_for("admin.index"))


@bp.post("/users/<int:user_id>/reject")
@permission("superuser")
def reject_user(user_id: int):
    user = load(User, user_id)
    name = user.username
    return _attempt(lambda: users.reject(user, current_user), f"The sign-up of {name} is rejected.",
                    url_for("admin.index"))


@bp.post("/users/<int:user_id>/enabled")
@permission("superuser")
def set_user_enabled(user_id: int):
    user = load(User, user_id)
    enabled = request.form.get("enabled") == "1"
    return _attempt(lambda: users.set_enabled(user, enabled, current_user),
                    f"{user.username} is {'enabled' if enabled else 'disabled'}.", url_for("admin.index"))


@bp.post("/invitations")
@permission("superuser")
def invite():
    """Invite someone to qcloop, into a project when one is chosen."""
    raw_project = request.form.get("project_id", "")
    project = load(Project, int(raw_project)) if raw_project.isdigit() else None
    return _invite(request.form.get("email", ""), project, request.form.get("role", "tier1"), url_for("admin.index"))


@bp.get("/audit")
@permission("superuser")
def audit():
    try:
        offset = max(0, int(request.args.get("offset", 0)))
    except ValueError:
        abort(400, "offset must be a whole number")
    action = request.args.get("action", "").strip() or None
    page = audit_log.audit_page(action, offset, AUDIT_PAGE)
    return render_template("admin/audit.html", page=page, names=page.names, action=action or "", offset=offset,
                           limit=AUDIT_PAGE)


@bp.get("/projects/<int:project_id>/members")
@permission("project", "admin")
def members_page(project_id: int):
    return render_template(
        "admin/members.html", project=load(Project, project_id),
        memberships=members.list_members(project_id),
        invitations=invitations.pending(project_id), roles=ROLES, is_expired=invitations.is_expired,
        mail_configured=mail.configured())


@bp.post("/projects/<int:project_id>/members")
@permission("project", "admin")
def add_member(project_id: int):
    login, role = request.form.get("user", ""), request.form.get("role", "")
    return _attempt(lambda: members.add_member(project_id, login, role, current_user),
                    f"{login} is {role} of this project.", url_for("admin.members_page", project_id=project_id))


@bp.post("/projects/<int:project_id>/members/<int:user_id>")
@permission("project", "admin")
def change_member(project_id: int, user_id: int):
    """Change a member's role; the role ``remove`` takes them out of the project."""
    role = request.form.get("role", "")
    return _attempt(lambda: members.change_role(project_id, user_id, None if role == "remove" else role,
                                                current_user),
                    "Membership removed." if role == "remove" else f"Role changed to {role}.",
                    url_for("admin.members_page", project_id=project_id))


@bp.post("/projects/<int:project_id>/invitations")
@permission("project", "admin")
def invite_member(project_id: int):
    return _invite(request.form.get("email", ""), load(Project, project_id), request.form.get("role", ""),
                   url_for("admin.members_page", project_id=project_id))


@bp.post("/projects/<int:project_id>/invitations/<int:invitation_id>/revoke")
@permission("project", "admin")
def revoke_invitation(project_id: int, invitation_id: int):
    invitation = load(Invitation, invitation_id, project_id=project_id)
    return _attempt(lambda: invitations.revoke(invitation, current_user), "The invitation is revoked.",
                    url_for("admin.members_page", project_id=project_id))

