"""Brute-force protection: failed log-ins counted per account and per address.

Only failures are counted, so people who type their password right are never slowed down;
once either budget is spent every attempt (right or wrong) answers 429 with Retry-After
until the window ends. Every server process must see the same counts (else N processes allow
N times the budget): they live in qcloop's database, or in RATELIMIT_STORAGE_URI when that
names a shared storage such as Redis (its memory:// default counts per process, so it is not used).
"""
from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone

from flask import Flask, current_app, request
from limits import RateLimitItem, parse

from app.db import utcnow
from app.extensions import limiter
from app.services import rate_limits, users
from app.services.errors import ServiceError

LIMIT_SETTINGS = ("LOGIN_LIMIT_PER_ACCOUNT", "LOGIN_LIMIT_PER_ADDRESS", "RESET_LIMIT_PER_ACCOUNT",
                  "RESET_LIMIT_PER_ADDRESS")


class TooManyAttempts(ServiceError):
    """A log-in refused before checking the password; ``retry_after`` in whole seconds (also a detail, which
    the error handler sends as Retry-After)."""

    status = 429
    code = "throttled"

    def __init__(self, retry_after: int, scope: str, what: str = "failed log-ins") -> None:
        retry_after = max(1, retry_after)
        at = datetime.fromtimestamp(time.time() + retry_after, tz=timezone.utc)
        minutes = math.ceil(retry_after / 60)
        who = "this account" if scope == "account" else "your address"
        super().__init__(f"Too many {what} for {who}. Try again in {minutes} minute"
                         f"{'s' if minutes != 1 else ''} (after {at:%H:%M} UTC). "
                         f"Expected available in {retry_after} seconds.", retry_after=retry_after)
        self.retry_after = retry_after
        self.scope = scope


def validate_limits(app: Flask) -> None:
    """Fail at start-up, not at the first log-in, on a malformed limit setting."""
    for key in LIMIT_SETTINGS:
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


def _in_database() -> bool:
    return current_app.config["RATELIMIT_STORAGE_URI"].startswith("memory://")


def _window(item: RateLimitItem) -> timedelta:
    return timedelta(seconds=item.get_expiry())


def _wait(item: RateLimitItem, keys: tuple[str, ...]) -> int | None:
    """Seconds until the budget has room again, or None while it has room."""
    if _in_database():
        count, frees_at = rate_limits.hits("/".join(keys), _window(item))
        return None if count < item.amount else math.ceil((frees_at - utcnow()).total_seconds())
    if limiter.limiter.test(item, *keys):
        return None
    return math.ceil(limiter.limiter.get_window_stats(item, *keys).reset_time - time.time())


def _hit(item: RateLimitItem, keys: tuple[str, ...]) -> None:
    if _in_database():
        longest = max(_window(parse(current_app.config[key])) for key in LIMIT_SETTINGS)
        rate_limits.hit("/".join(keys), keep=longest)
    else:
        limiter.limiter.hit(item, *keys)


def _check(budgets: list[tuple[str, RateLimitItem, tuple[str, ...]]], what: str) -> None:
    for scope, item, keys in budgets:
        wait = _wait(item, keys)
        if wait is not None:
            raise TooManyAttempts(wait, scope, what=what)


def check(login: str) -> None:
    """Raise TooManyAttempts when the account or the address has no failed log-ins left."""
    if _enabled():
        _check(_budgets(login), "failed log-ins")


def failed(login: str) -> None:
    """Count one failed log-in against the account and the address."""
    if not _enabled():
        return
    for _, item, keys in _budgets(login):
        _hit(item, keys)


def reset_requested(login: str) -> None:
    """Count one password-reset request (each one mails a link) against the account named and the
    address; raise TooManyAttempts, counting nothing, once either budget is spent."""
    if not _enabled():
        return
    budgets = _budgets(login, "reset")
    _check(budgets, "password-reset requests")
    for _, item, keys in budgets:
        _hit(item, keys)
