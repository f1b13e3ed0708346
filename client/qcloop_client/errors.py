"""Typed errors: one class per kind of refusal, each carrying the server's status, code and message."""
from __future__ import annotations

from typing import Any

import httpx


class QcloopError(Exception):
    """Any failure talking to qcloop. ``status`` is the HTTP status (None when no answer came),
    ``error`` the server's short code, ``detail`` its sentence, ``body`` the whole JSON answer."""

    def __init__(self, detail: str, *, status: int | None = None, error: str | None = None,
                 body: Any = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.error = error
        self.body = body

    def __str__(self) -> str:
        return f"{self.status} {self.error}: {self.detail}" if self.status else self.detail


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


class JobFailed(QcloopError):
    """A job waited on ended failed or cancelled; ``body`` is the job."""


_BY_STATUS: dict[int, type[QcloopError]] = {400: InvalidInput, 401: AuthError, 403: AuthError, 404: NotFound,
                                            409: Conflict, 422: InvalidInput}


def _message(body: Any, response: httpx.Response) -> tuple[str | None, str]:
    """The server's (code, sentence): qcloop's {"error", "detail"}, or DRF-style field lists."""
    if isinstance(body, dict):
        if "detail" in body:
            return body.get("error"), str(body["detail"])
        parts = [f"{key}: {' '.join(map(str, value)) if isinstance(value, list) else value}"
                 for key, value in body.items()]
        if parts:
            return None, "; ".join(part.removeprefix("non_field_errors: ") for part in parts)
    text = response.text.strip()
    return None, (text.splitlines()[0][:200] if text and not text.startswith("<") else response.reason_phrase)


def from_response(response: httpx.Response) -> QcloopError:
    """The typed error for a refused request."""
    try:
        body = response.json()
    except ValueError:
        body = None
    code, detail = _message(body, response)
    status = response.status_code
    kind = ServerError if status >= 500 else _BY_STATUS.get(status, QcloopError)
    return kind(detail, status=status, error=code, body=body)
