"""Accounts and MIQA-compatible API tokens."""
from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from sqlalchemy import func, or_, select

from app.db import ApiToken, User, db, utcnow
from app.services import audit
from app.services.errors import Conflict, InvalidInput, Unauthorized
from app.services.passwords import MIN_PASSWORD_LENGTH, hash_password, verify_password

USERNAME_PATTERN = re.compile(r"^[\w.@+-]{1,150}$")


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
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_LENGTH} characters", field="password")
    email = email.strip().lower() if email else None
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


def set_password(user: User, password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_LENGTH} characters", field="password")
    user.password_hash = hash_password(password)


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
        token.last_used_at = now
        db.session.commit()
    return token.user


def record_login(user: User, via: str) -> None:
    user.last_login_at = utcnow()
    audit.record("login", actor=user, target=("user", user.id), via=via)



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
