"""Brute-force protection: failed log-ins counted per account and per address (Flask-Limiter).

Only failures are counted, so people who type their password right are never slowed down;
once either budget is spent every attempt (right or wrong) answers 429 with Retry-After
until the window ends. Counters live in Flask-Limiter's storage (RATELIMIT_STORAGE_URI:
memory per process by default, Redis when several server processes share the limits).
"""
from __future__ import annotations

import math
import time
from datetime import datetime, timezone

from flask import Flask, current_app, request
from limits import RateLimitItem, parse

from app.extensions import limiter
from app.services import users


class TooManyAttempts(Exception):
    """A log-in refused before checking the password; ``retry_after`` in whole seconds."""

    def __init__(self, retry_after: int, scope: str, what: str = "failed log-ins") -> None:
        self.retry_after = max(1, retry_after)
        self.scope = scope
        at = datetime.fromtimestamp(time.time() + self.retry_after, tz=timezone.utc)
        minutes = math.ceil(self.retry_after / 60)
        who = "this account" if scope == "account" else "your address"
        self.message = (f"Too many {what} for {who}. Try again in {minutes} minute"
                        f"{'s' if minutes != 1 else ''} (after {at:%H:%M} UTC). "
                        f"Expected available in {self.retry_after} seconds.")
        super().__init__(self.message)


def validate_limits(app: Flask) -> None:
    """Fail at start-up, not at the first log-in, on a malformed limit setting."""
    for key in ("LOGIN_LIMIT_PER_ACCOUNT", "LOGIN_LIMIT_PER_ADDRESS", "RESET_LIMIT_PER_ACCOUNT",
                "RESET_LIMIT_PER_ADDRESS"):
        try:
            parse(app.config[key])
        except ValueError as err:
            raise ValueError(f"{key}={app.config[key]!r} is not a rate limit like '5 per 15 minutes'") from err


def _budgets(login: str, kind: str = "login") -> list[tuple[str, RateLimitItem, tuple[str, ...]]]:
    user = users.find_user(login) if login else None
    account = f"user:{user.id}" if user is not None else "login:" + login.strip().lower()[:150]
    config = current_app.config
    prefix = kind.upper()
    return [
        ("account", parse(config[f"{prefix}_LIMIT_PER_ACCOUNT"]), (f"qcloop-{kind}-account", account)),
        ("address", parse(config[f"{prefix}_LIMIT_PER_ADDRESS"]),
         (f"qcloop-{kind}-address", request.remote_addr or "-")),
    ]


def _enabled() -> bool:
    return bool(current_app.config.get("RATELIMIT_ENABLED", True))


def check(login: str) -> None:
    """Raise TooManyAttempts when the account or the address has no failed log-ins left."""
    if not _enabled():
        return
    for scope, item, keys in _budgets(login):
        if not limiter.limiter.test(item, *keys):
            reset_at = limiter.limiter.get_window_stats(item, *keys).reset_time
            raise TooManyAttempts(math.ceil(reset_at - time.time()), scope)


def failed(login: str) -> None:
    """Count one failed log-in against the account and the address."""
    if not _enabled():
        return
    for _, item, keys in _budgets(login):
        limiter.limiter.hit(item, *keys)


def reset_requested(login: str) -> None:
    """Count one password-reset request (each one mails a link) against the account named and the
    address; raise TooManyAttempts, counting nothing, once either budget is spent."""
    if not _enabled():
        return
    budgets = _budgets(login, "reset")
    for scope, item, keys in budgets:
        if not limiter.limiter.test(item, *keys):
            reset_at = limiter.limiter.get_window_stats(item, *keys).reset_time
            raise TooManyAttempts(math.ceil(reset_at - time.time()), scope, what="password-reset requests")
    for _, item, keys in budgets:
        limiter.limiter.hit(item, *keys)
