"""Typed errors: one class per kind of refusal, each carrying the server's status, code and message."""
from __future__ import annotations

from typing import Any

import httpx


class QcloopError(Exception):
    """Any failure talking to qcloop. ``status`` is the HTTP status (None when no answer came),
    ``error`` the server's short code (None when it gave none), ``detail`` its sentence, ``body`` the
    whole JSON answer."""

    def __init__(self, detail: str, *, status: int | None = None, error: str | None = None,
                 body: Any = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.error = error
        self.body = body

    def __str__(self) -> str:
        prefix = " ".join(str(part) for part in (self.status, self.error) if part is not None)
        return f"{prefix}: {self.detail}" if prefix else self.detail


class AuthError(QcloopError):
    """401 or 403: no, a wrong, an expired or a revoked token, or not allowed."""


class NotFound(QcloopError):
    """404: no such object (or not visible to the caller)."""


class Conflict(QcloopError):
    """409: the object's state refuses the change (a lock held by another, a model not better, ...)."""


class InvalidInput(QcloopError):
    """400 or 422: the request was refused; ``body`` may name the fields at fault."""


class ServerError(QcloopError):
    """5xx: the server failed (or is not ready, e.g. 503 with Retry-After)."""


class ConnectionFailed(QcloopError):
    """No answer: wrong URL, server down, timeout."""

    def __str__(self) -> str:
        return self.detail  # it names the URL and what came back


class NotQcloop(ConnectionFailed):
    """Something answered, but not as a qcloop server does (an HTML page, JSON of another shape): a wrong URL."""


class JobFailed(QcloopError):
    """A job waited on ended failed or cancelled; ``body`` is the job."""


_BY_STATUS: dict[int, type[QcloopError]] = {400: InvalidInput, 401: AuthError, 403: AuthError, 404: NotFound,
                                            409: Conflict, 422: InvalidInput}


def describe(response: httpx.Response) -> str:
    """What came back, for a message: status, reason and media type (never a None)."""
    media = response.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    reason = response.reason_phrase or "no reason"
    return f"{response.status_code} {reason}, {media}"


def not_qcloop(url: str, response: httpx.Response, why: str, body: Any = None) -> NotQcloop:
    return NotQcloop(f"{url} did not answer as a qcloop server ({describe(response)}: {why})",
                     status=response.status_code, error="not_qcloop", body=body)


def _message(body: Any) -> tuple[str | None, str] | None:
    """The server's (code, sentence) from qcloop's {"error", "detail"} or a DRF-style field list; None
    for any other shape."""
    if not isinstance(body, dict) or not body:
        return None
    if isinstance(body.get("detail"), str):
        code = body.get("error")
        return (code if isinstance(code, str) else None), body["detail"]
    if all(isinstance(value, list) and all(isinstance(item, str) for item in value) for value in body.values()):
        parts = [f"{key}: {' '.join(value)}" for key, value in body.items()]
        return None, "; ".join(part.removeprefix("non_field_errors: ") for part in parts)
    return None


def from_response(url: str, response: httpx.Response) -> QcloopError:
    """The typed error for a refused request; a refusal not in qcloop's words is a NotQcloop (a 5xx
    stays a ServerError: a proxy in front of qcloop may answer it)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    status = response.status_code
    message = _message(body)
    if message is None:
        if status < 500:
            why = "an error not in qcloop's JSON" if body is not None else "an error that is not JSON"
            return not_qcloop(url, response, why, body)
        text = response.text.strip()
        first = text.splitlines()[0][:200] if text and not text.startswith("<") else ""
        message = (None, first or f"{url} answered {describe(response)}")
    code, detail = message
    kind = ServerError if status >= 500 else _BY_STATUS.get(status, QcloopError)
    return kind(detail, status=status, error=code, body=body)
