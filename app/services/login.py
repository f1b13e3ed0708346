"""Logging in with a username (or email) and password, for the log-in form and the token endpoint alike.

One sequence for both: refuse while the account or address has spent its budget of failed
log-ins, check the password, count a failure, record the outcome in the audit log. The outcome
is returned, never raised, and a refusal's writes are kept: failures stay counted and audited.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.db import User, boundary
from app.services import invitations, throttle, users

CREDENTIALS_REFUSED = "Unable to log in with provided credentials."
AWAITING_APPROVAL = "Your account waits for a superuser's approval."


@dataclass(frozen=True)
class LoginOutcome:
    """``user`` when the log-in succeeded; otherwise ``refusal`` says why and ``message`` says it to the person.

    ``refusal`` is ``throttled`` (with ``retry_after`` seconds), ``credentials`` or ``awaiting_approval``;
    ``token`` is the API token a log-in through the token endpoint hands out.
    """

    user: User | None = None
    refusal: str | None = None
    message: str | None = None
    retry_after: int | None = None
    token: str | None = None


def log_in(login: str, password: str, via: str) -> LoginOutcome:
    """Check ``login`` and ``password`` (``via`` is ``form`` or ``token``: a token log-in gets an API token)."""
    boundary.keep_refused_writes()
    try:
        throttle.check(login)
    except throttle.TooManyAttempts as err:
        users.record_throttled_login(login, via=via, scope=err.scope)
        return LoginOutcome(refusal="throttled", message=err.message, retry_after=err.retry_after)
    user = users.check_credentials(login, password)
    if user is None:
        throttle.failed(login)
        users.record_failed_login(login, via=via)
        if users.awaiting_approval(login, password):
            return LoginOutcome(refusal="awaiting_approval", message=AWAITING_APPROVAL)
        return LoginOutcome(refusal="credentials", message=CREDENTIALS_REFUSED)
    token = users.token_auth_token(user) if via == "token" else None
    users.record_login(user, via=via)
    return LoginOutcome(user=user, token=token)


def accept_invitation(raw_token: str, username: str, password: str, first_name: str = "",
                      last_name: str = "") -> User:
    """Create the account an invitation offers (with its membership) and record its first log-in."""
    user = invitations.accept(raw_token, username, password, first_name, last_name)
    users.record_login(user, via="invite")
    return user


def request_password_reset(login: str) -> None:
    """Mail a reset link to the account ``login`` names, if any; TooManyAttempts (429) once the account or
    the address has asked too often (each request mails a link)."""
    throttle.reset_requested(login)
    users.request_password_reset(login)
