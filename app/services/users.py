"""Accounts, sign-up and approval, passwords and their reset links, MIQA-compatible API tokens."""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from datetime import timedelta

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.orm.attributes import set_committed_value

from app.db import ApiToken, AuditEvent, User, boundary, db, utcnow
from app.services import audit, mail
from app.services.errors import Conflict, InvalidInput, ServiceError, Unauthorized
from app.services.loaders import load
from app.services.passwords import MIN_PASSWORD_LENGTH, hash_password, verify_password

log = logging.getLogger(__name__)

USERNAME_PATTERN = re.compile(r"^[\w.@+-]{1,150}$")
RESET_MAX_AGE = timedelta(hours=1)
RESET_SALT = "qcloop-password-reset"
MAX_TOKEN_DAYS = 3650
MAX_NAME_LENGTH = 150


def normalize_email(email: str) -> str:
    """A syntactically valid, normalized address (no DNS look-up: qcloop may run offline)."""
    if not isinstance(email, str) or not email.strip():
        raise InvalidInput("email is required", field="email")
    try:
        checked = validate_email(email.strip(), check_deliverability=False, globally_deliverable=False,
                                 test_environment=True)
    except EmailNotValidError as err:
        raise InvalidInput(f"email is not valid: {err}", field="email") from err
    return checked.normalized.lower()


def external_link(endpoint: str, **values: object) -> str:
    """An absolute link for mails on qcloop's public address (BASE_URL), also outside a request."""
    path = current_app.url_map.bind("qcloop").build(endpoint, values)
    return current_app.config["BASE_URL"].rstrip("/") + path


def create_user(
    username: str,
    password: str | None,
    email: str | None = None,
    is_superuser: bool = False,
    first_name: str = "",
    last_name: str = "",
    approved: bool = True,
) -> User:
    if not isinstance(username, str) or not USERNAME_PATTERN.match(username):
        raise InvalidInput("username must be 1-150 letters, digits or .@+-_", field="username")
    if password is not None and (not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH):
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_LENGTH} characters", field="password")
    for field, value in (("first_name", first_name), ("last_name", last_name)):
        if not isinstance(value, str) or len(value) > MAX_NAME_LENGTH:
            raise InvalidInput(f"{field} must be text of at most {MAX_NAME_LENGTH} characters", field=field)
    email = normalize_email(email) if email else None
    clash = db.session.scalar(
        select(User).where(or_(func.lower(User.username) == username.lower(),
                               User.email == email if email else False))
    )
    if clash is not None:
        raise Conflict("a user with this username or email already exists", field="username")
    user = User(username=username, email=email, is_superuser=is_superuser, first_name=first_name,
                last_name=last_name, is_approved=approved,
                password_hash=hash_password(password) if password else None)
    db.session.add(user)
    db.session.flush()
    return user


def find_user(login: str) -> User | None:
    """A user by username (case-insensitive) or email."""
    if not isinstance(login, str) or not login:
        return None
    return db.session.scalar(
        select(User).where(or_(func.lower(User.username) == login.lower(), User.email == login.lower()))
    )


def check_credentials(login: str, password: str) -> User | None:
    user = find_user(login)
    if user is None or not user.is_active or not verify_password(user.password_hash, password or ""):
        return None
    return user


def awaiting_approval(login: str, password: str) -> bool:
    """Whether these are the right credentials of a sign-up no superuser has approved yet."""
    user = find_user(login)
    return (user is not None and user.is_enabled and not user.is_approved
            and verify_password(user.password_hash, password or ""))


def set_password(user: User, password: str) -> int:
    """A new password ends every session made with the old one (their id carries the password's
    fingerprint) and revokes every API token: whoever knew the old password loses the account.
    Returns how many tokens were revoked."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_LENGTH} characters", field="password")
    if len(password) > 1024:
        raise InvalidInput("password must have at most 1024 characters", field="password")
    user.password_hash = hash_password(password)
    revoked = db.session.execute(update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                                 .values(revoked_at=utcnow()))
    return revoked.rowcount


def change_password(user: User, current: str, new: str) -> None:
    """A logged-in user changes their password; the current one is asked again."""
    if not verify_password(user.password_hash, current or ""):
        raise InvalidInput("the current password is not correct", field="current_password")
    revoked = set_password(user, new)
    audit.record("password.change", actor=user, target=("user", user.id), tokens_revoked=revoked)


def session_user(session_id: str) -> User | None:
    """The user of a session id (``User.get_id``), or None once the account is gone or deactivated or
    its password changed since the session began (the session then ends)."""
    user_id, _, fingerprint = session_id.partition(":")
    user = db.session.get(User, int(user_id)) if user_id.isdigit() else None
    if user is None or not user.is_active:
        return None
    return user if hmac.compare_digest(fingerprint.encode(), user.password_fingerprint.encode()) else None


# --- password reset by email: signed links that expire and die once the password changes


def _reset_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=RESET_SALT)


def password_reset_token(user: User) -> str:
    return _reset_serializer().dumps({"u": user.id, "p": user.password_fingerprint})


def request_password_reset(login: str) -> None:
    """Mail a reset link to the account's address; says nothing about whether the account exists."""
    user = find_user(login.strip()) if isinstance(login, str) else None
    if user is None or not user.is_active or not user.email:
        log.info("password reset asked for %r: no active account with an address", str(login)[:150])
        return
    link = external_link("auth.reset_password", reset_token=password_reset_token(user))
    minutes = int(RESET_MAX_AGE.total_seconds() // 60)
    mail.send(user.email, "Reset your qcloop password", (
        f"Hello {user.display_name},\n\n"
        f"someone (hopefully you) asked to reset the password of the qcloop account {user.username}.\n"
        f"Choose a new password here within {minutes} minutes:\n\n{link}\n\n"
        "If you did not ask for this, ignore this mail; your password stays as it is.\n"))
    audit.record("password.reset_request", actor=None, target=("user", user.id))


def user_for_reset_token(token: str) -> User:
    """The account a reset link is for; InvalidInput when it is forged, expired or already used."""
    try:
        data = _reset_serializer().loads(token, max_age=int(RESET_MAX_AGE.total_seconds()))
    except SignatureExpired as err:
        raise InvalidInput("This password reset link has expired; ask for a new one.", field="token",
                           reason="expired") from err
    except BadSignature as err:
        raise InvalidInput("This password reset link is not valid.", field="token", reason="invalid") from err
    user = db.session.get(User, data.get("u")) if isinstance(data, dict) and isinstance(data.get("u"), int) else None
    if user is None or not user.is_active or data.get("p") != user.password_fingerprint:
        raise InvalidInput("This password reset link was already used or is no longer valid.", field="token",
                           reason="used")
    return user


def reset_password(token: str, password: str) -> User:
    user = user_for_reset_token(token)
    revoked = set_password(user, password)
    audit.record("password.reset", actor=user, target=("user", user.id), tokens_revoked=revoked)
    return user


# --- self sign-up, approval by a superuser, disabling


def sign_up(username: str, email: str, password: str, first_name: str = "", last_name: str = "") -> User:
    """An account that cannot log in until a superuser approves it; superusers are told by mail."""
    user = create_user(username, password, email=normalize_email(email), first_name=first_name or "",
                       last_name=last_name or "", approved=False)
    audit.record("user.signup", actor=None, target=("user", user.id), username=user.username)
    admins = db.session.scalars(select(User.email).where(User.is_superuser, User.is_enabled,
                                                         User.email.is_not(None))).all()
    if admins:
        try:
            mail.send(list(admins), f"qcloop: {user.username} asks for an account", (
                f"{user.display_name} <{user.email}> signed up as {user.username}.\n"
                f"Approve or reject the account here:\n\n{external_link('admin.index')}\n"))
        except ServiceError as err:  # the sign-up stands; the pending list shows it anyway
            log.warning("could not tell superusers about sign-up %s: %s", user.username, err.message)
    return user


def pending_users() -> list[User]:
    return list(db.session.scalars(select(User).where(User.is_approved.is_(False)).order_by(User.created_at)))


def all_users() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.username)))


def approve(user: User, actor: User) -> None:
    if user.is_approved:
        return
    user.is_approved = True
    audit.record("user.approve", actor=actor, target=("user", user.id))
    if user.email:
        try:
            mail.send(user.email, "Your qcloop account is approved", (
                f"Hello {user.display_name},\n\nyour qcloop account {user.username} is approved. "
                f"Log in here:\n\n{external_link('auth.login')}\n"))
        except ServiceError as err:
            log.warning("could not tell %s about the approval: %s", user.username, err.message)


def reject(user: User, actor: User) -> None:
    """Delete a sign-up that was never approved (approved accounts are disabled instead)."""
    if user.is_approved:
        raise Conflict("only a pending sign-up can be rejected; disable an approved account instead", field="user")
    audit.record("user.reject", actor=actor, target=("user", user.id), username=user.username)
    db.session.delete(user)


def set_enabled(user: User, enabled: bool, actor: User) -> None:
    if user.id == actor.id and not enabled:
        raise Conflict("you cannot disable your own account", field="user")
    if user.is_enabled != enabled:
        user.is_enabled = enabled
        audit.record("user.enable" if enabled else "user.disable", actor=actor, target=("user", user.id))


def token_digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def issue_token(user: User, name: str = "", lifetime: timedelta | None = None) -> tuple[ApiToken, str]:
    """A new token for the user; the raw value is returned once and only its digest is kept."""
    raw = secrets.token_hex(20)  # 40 hex characters, like Django REST framework's tokens
    token = ApiToken(user_id=user.id, name=name, digest=token_digest(raw), prefix=raw[:8],
                     expires_at=utcnow() + lifetime if lifetime else None)
    db.session.add(token)
    db.session.flush()
    audit.record("token.create", actor=user, target=("token", token.id), name=name)
    return token, raw


def token_auth_token(user: User) -> str:
    """A token from the MIQA-compatible endpoint, expiring after API_TOKEN_AUTH_DAYS (0: never). Only
    digests are stored, so an earlier token cannot be handed out again: each call makes a new one."""
    days = current_app.config["API_TOKEN_AUTH_DAYS"]
    _, raw = issue_token(user, name="api-token-auth", lifetime=timedelta(days=days) if days else None)
    return raw


def user_for_token(raw: str) -> User:
    """The user a token authenticates; Unauthorized when it is unknown, revoked or expired."""
    token = db.session.scalar(select(ApiToken).where(ApiToken.digest == token_digest(raw)))
    if token is None or token.revoked_at is not None:
        raise Unauthorized("Invalid token.")
    now = utcnow()
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthorized("Token has expired.")
    if not token.user.is_active:
        raise Unauthorized("User inactive or deleted.")
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        # aside: kept whatever the request answers, and the request holds no write lock while it runs
        if boundary.write_aside(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now)):
            set_committed_value(token, "last_used_at", now)  # what this request reads of it, not a pending write
    return token.user


def record_login(user: User, via: str) -> None:
    user.last_login_at = utcnow()
    audit.record("login", actor=user, target=("user", user.id), via=via)


def record_throttled_login(login: str, via: str, scope: str) -> None:
    audit.record("login.throttled", actor=None, login=str(login)[:150], via=via, scope=scope)


def record_failed_login(login: str, via: str) -> None:
    user = find_user(login)
    audit.record("login.failed", actor=None, target=("user", user.id) if user else None,
                 login=str(login)[:150], via=via)


def visible_users(user: User):
    """A query of the users this user may see: co-members of their projects, or all for a superuser."""
    from app.db import Membership

    query = select(User).order_by(User.id)
    if user.is_superuser:
        return query
    shared = select(Membership.user_id).where(
        Membership.project_id.in_(select(Membership.project_id).where(Membership.user_id == user.id))
    )
    return query.where(or_(User.id == user.id, User.id.in_(shared)))


def revoke_token_value(raw: str, actor: User) -> None:
    token = db.session.scalar(select(ApiToken).where(ApiToken.digest == token_digest(raw)))
    if token is not None and token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record("token.revoke", actor=actor, target=("token", token.id))


def create_token(user: User, name: str = "", expires_in_days: int | None = None) -> tuple[ApiToken, str]:
    """A named token from the profile page or the API, optionally expiring after some days."""
    if not isinstance(name, str) or len(name.strip()) > 100:
        raise InvalidInput("name must be text of at most 100 characters", field="name")
    if expires_in_days is not None and (isinstance(expires_in_days, bool) or not isinstance(expires_in_days, int)
                                        or not 1 <= expires_in_days <= MAX_TOKEN_DAYS):
        raise InvalidInput(f"expires_in_days must be a whole number from 1 to {MAX_TOKEN_DAYS}",
                           field="expires_in_days")
    return issue_token(user, name=name.strip(), lifetime=timedelta(days=expires_in_days) if expires_in_days else None)


def tokens_of(user: User) -> Select:
    """The user's tokens, newest first (revoked and expired ones included, marked as such)."""
    return select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())


def list_tokens(user: User, limit: int = 200) -> list[ApiToken]:
    return list(db.session.scalars(tokens_of(user).limit(limit)))


def token_state(token: ApiToken) -> str:
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= utcnow():
        return "expired"
    return "active"


def revoke_token(user: User, token_id: int) -> ApiToken:
    """Revoke one of the user's own tokens; another user's token id is NotFound."""
    token = load(ApiToken, token_id, owner_id=user.id)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record("token.revoke", actor=user, target=("token", token.id), name=token.name)
    return token


def usernames_by_id(ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = db.session.execute(select(User.id, User.username).where(User.id.in_(ids)))
    return {user_id: username for user_id, username in rows}


def audit_events(action: str | None = None) -> Select:
    """Audit events, newest first, optionally of one action (``login`` or a prefix like ``token.``)."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc())
    if action:
        query = query.where(AuditEvent.action.startswith(action) if action.endswith(".")
                            else AuditEvent.action == action)
    return query
