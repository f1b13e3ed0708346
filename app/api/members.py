"""Project members and invitations (project admins), invitation links (public), and mail
between members about a scan."""
from __future__ import annotations

from flask_login import current_user
from marshmallow import Schema, fields, validate

from app.api.docs import Blueprint
from app.api.pagination import PageArgs, paginate
from app.api.schemas.base import Extended, page_of, results_of
from app.api.schemas.users import (
    InvitationOfferSchema, InvitationSchema, MemberSchema, ScanEmailDraftSchema, ScanEmailSentSchema,
    SentInvitationSchema, UserSchema,
)
from app.auth.permissions import permission
from app.auth.routes import csrf_exempt
from app.db import ROLES, Invitation, Membership, Project
from app.services import invitations, members
from app.services.loaders import load, load_one

blp = Blueprint("members", __name__, description="Project members, invitations, mail about a scan")

_ROLE = fields.String(required=True, validate=validate.OneOf(ROLES))


class NewMember(Schema):
    user = fields.String(required=True, validate=validate.Length(min=1, max=254),
                         metadata={"description": "username or email of an existing account"})
    role = _ROLE


class RoleChange(Schema):
    role = _ROLE


class NewInvitation(Schema):
    email = fields.Email(required=True, validate=validate.Length(min=3, max=254))
    role = _ROLE


class Acceptance(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=150))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))
    first_name = fields.String(load_default="", validate=validate.Length(max=150))
    last_name = fields.String(load_default="", validate=validate.Length(max=150))


class ScanEmail(Schema):
    to = fields.List(fields.Raw(allow_none=False, metadata={"oneOf": [{"type": "integer"}, {"type": "string"}]}),
                     required=True, validate=validate.Length(min=1, max=50),
                     metadata={"description": "user ids or usernames of members of the scan's project"})
    message = fields.String(load_default="", validate=validate.Length(max=members.MAX_MESSAGE_LENGTH))
    subject = fields.String(load_default=None, allow_none=True,
                            validate=validate.Length(min=1, max=members.MAX_SUBJECT_LENGTH))


def _member(membership: Membership) -> Extended:
    return Extended(membership.user, role=membership.role)


@blp.route("/projects/<int:project_id>/members", methods=["GET"])
@blp.arguments(PageArgs, location="query")
@blp.response(200, page_of(MemberSchema))
@permission("project", "collaborator")
def list_members(page, project_id: int):
    return paginate(members.members_query(project_id), page, lambda rows: [_member(row) for row in rows])


@blp.route("/projects/<int:project_id>/members", methods=["POST"])
@blp.arguments(NewMember)
@blp.response(201, MemberSchema)
@permission("project", "admin")
def add_member(body: dict, project_id: int):
    membership = members.add_member(project_id, body["user"], body["role"], current_user)
    return _member(membership)


@blp.route("/projects/<int:project_id>/members/<int:user_id>", methods=["PUT"])
@blp.arguments(RoleChange)
@blp.response(200, MemberSchema)
@permission("project", "admin")
def change_member(body: dict, project_id: int, user_id: int):
    members.change_role(project_id, user_id, body["role"], current_user)
    return _member(load_one(Membership, project_id=project_id, user_id=user_id))


@blp.route("/projects/<int:project_id>/members/<int:user_id>", methods=["DELETE"])
@blp.response(204, description="removed")
@permission("project", "admin")
def remove_member(project_id: int, user_id: int):
    members.change_role(project_id, user_id, None, current_user)


@blp.route("/projects/<int:project_id>/invitations", methods=["GET"])
@blp.response(200, results_of(InvitationSchema))
@permission("project", "admin")
def list_invitations(project_id: int):
    return {"results": invitations.pending(project_id)}


@blp.route("/projects/<int:project_id>/invitations", methods=["POST"])
@blp.arguments(NewInvitation)
@blp.response(201, SentInvitationSchema)
@permission("project", "admin")
def invite(body: dict, project_id: int):
    """Mail an invitation link (valid 7 days) that creates the account with this role. Without a mail
    server the link is not mailed: `invite_url` holds it, in this answer only (null when mailed)."""
    invitation, raw = invitations.invite(body["email"], load(Project, project_id), body["role"], current_user)
    link = invitations.unmailed_link(raw)
    return Extended(invitation, mailed=link is None, invite_url=link)


@blp.route("/projects/<int:project_id>/invitations/<int:invitation_id>", methods=["DELETE"])
@blp.response(204, description="revoked")
@permission("project", "admin")
def revoke_invitation(project_id: int, invitation_id: int):
    invitations.revoke(load(Invitation, invitation_id, project_id=project_id), current_user)


@blp.route("/invitations/<invite_token>", methods=["GET"])
@blp.response(200, InvitationOfferSchema)
@permission("public")
def show_invitation(invite_token: str):
    """What an invitation link offers; 404 unknown or revoked, 400 used or expired."""
    return invitations.open_invitation(invite_token)


@blp.route("/invitations/<invite_token>/accept", methods=["POST"])
@blp.arguments(Acceptance)
@blp.response(201, UserSchema)
@permission("public")
@csrf_exempt
def accept_invitation(body: dict, invite_token: str):
    """Create the invited account and its membership (nothing at all on bad input)."""
    return invitations.accept(invite_token, body["username"], body["password"], body["first_name"],
                              body["last_name"])


@blp.route("/scans/<int:scan_id>/email", methods=["GET"])
@blp.response(200, ScanEmailDraftSchema)
@permission("project", "collaborator")
def scan_email_draft(scan_id: int):
    """The pre-filled subject, body with the scan's link, and the members one may write to."""
    return members.scan_email_draft(scan_id, current_user)


@blp.route("/scans/<int:scan_id>/email", methods=["POST"])
@blp.arguments(ScanEmail)
@blp.response(200, ScanEmailSentSchema)
@permission("project", "collaborator")
def send_scan_email(body: dict, scan_id: int):
    """Mail members of the scan's project about it; the link to the scan is added to the message."""
    result = members.send_scan_email(scan_id, current_user, body["to"], body["message"], body["subject"])
    return result
