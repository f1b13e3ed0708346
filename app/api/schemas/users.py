"""Accounts, members, tokens, invitations, the audit log and mail about a scan."""
from __future__ import annotations

from marshmallow import fields

from app.api.schemas.base import Answer, computed, nullable
from app.services import invitations, users


class UserSchema(Answer):
    id = fields.Integer()
    username = fields.String()
    email = computed(fields.String(), lambda user: user.email or "")
    first_name = fields.String()
    last_name = fields.String()
    is_superuser = fields.Boolean()


class MemberSchema(UserSchema):
    """A user with their role in the project (an ``Extended`` user)."""

    role = fields.String()


class TokenSchema(Answer):
    """A token without its secret: the first 8 characters identify it."""

    id = fields.Integer()
    name = fields.String()
    prefix = fields.String()
    created = nullable(fields.DateTime, attribute="created_at")
    expires = nullable(fields.DateTime, attribute="expires_at")
    last_used = nullable(fields.DateTime, attribute="last_used_at")
    revoked = nullable(fields.DateTime, attribute="revoked_at")
    state = computed(fields.String(metadata={"enum": ["active", "expired", "revoked"]}), users.token_state)


class IssuedTokenSchema(TokenSchema):
    token = fields.String(metadata={"description": "the secret, shown in this answer only"})


class AuditEventSchema(Answer):
    id = fields.Integer()
    created = fields.DateTime(attribute="created_at")
    action = fields.String()
    actor = nullable(fields.Integer, attribute="actor_id")
    project = nullable(fields.Integer, attribute="project_id")
    target_type = nullable(fields.String)
    target_id = nullable(fields.String)
    address = nullable(fields.String)
    details = fields.Raw(allow_none=True, metadata={"type": "object"})


class InvitationSchema(Answer):
    id = fields.Integer()
    email = fields.String()
    project_id = nullable(fields.Integer)
    role = fields.String()
    created = fields.DateTime(attribute="created_at")
    expires = fields.DateTime(attribute="expires_at")
    accepted = nullable(fields.DateTime, attribute="accepted_at")
    expired = computed(fields.Boolean(), invitations.is_expired)


class SentInvitationSchema(InvitationSchema):
    """A new invitation (an ``Extended`` one): whether a mail server took the link, else the link once."""

    mailed = fields.Boolean(metadata={"description": "whether a mail server took the link"})
    invite_url = nullable(fields.String, metadata={"description": "when not mailed: the link, shown this once"})


class InvitationOfferSchema(Answer):
    email = fields.String()
    role = fields.String()
    expires = fields.DateTime(attribute="expires_at")
    project = computed(fields.Boolean(metadata={"description": "whether the invitation is to a project"}),
                       lambda invitation: invitation.project_id is not None)


class RecipientSchema(Answer):
    id = fields.Integer()
    username = fields.String()
    name = fields.String()
    role = fields.String()


class ScanEmailDraftSchema(Answer):
    subject = fields.String()
    link = fields.String()
    body = fields.String()
    recipients = fields.List(fields.Nested(RecipientSchema), metadata={"description": "members one may write to"})


class ScanEmailSentSchema(Answer):
    sent_to = fields.List(fields.String(), metadata={"description": "usernames mailed"})
    subject = fields.String()
    link = fields.String()
