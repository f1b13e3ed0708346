"""One place that turns errors into answers: JSON for the API, pages for the browser."""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, make_response, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from app.db import AppendOnlyError, boundary
from app.services.errors import ServiceError, Unauthorized
from app.storage import StorageError

log = logging.getLogger(__name__)


def wants_json() -> bool:
    if request.path.startswith("/api") or request.path.startswith("/healthz"):
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def _answer(status: int, code: str, message: str, details: dict | None = None):
    if wants_json():
        body = {"error": code, "detail": message}
        if details:
            body.update(details)
        return jsonify(body), status
    return render_template("error.html", status=status, message=message), status


def _invalid_field_names(messages: dict) -> list[str]:
    """The field names in webargs' {location: {field: [messages]}}."""
    return [str(name) for by_field in messages.values() if isinstance(by_field, dict) for name in by_field]


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def service_error(err: ServiceError):
        boundary.rollback()  # a refused request leaves nothing half-written behind
        if isinstance(err, Unauthorized) and not wants_json():
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        answer = app.make_response(_answer(err.status, err.code, err.message, err.details))
        if "retry_after" in err.details:  # e.g. a volume still being prepared: when to ask again
            answer.headers["Retry-After"] = str(err.details["retry_after"])
        return answer

    @app.errorhandler(StorageError)
    def storage_error(err: StorageError):
        boundary.rollback()
        return _answer(400, "storage", str(err))

    @app.errorhandler(AppendOnlyError)
    def append_only(err: AppendOnlyError):
        boundary.rollback()
        return _answer(409, "append_only", str(err))

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        if err.code is None or err.code < 400:
            return err
        boundary.rollback()
        details = {}
        data = getattr(err, "data", None)
        # flask-smorest / webargs put field messages in err.data["messages"].
        if isinstance(data, dict) and data.get("messages"):
            details["fields"] = data["messages"]
        status, code = err.code, err.name.lower().replace(" ", "_")
        message = err.description or err.name
        if details:  # schema validation (400, or 422 from a parser left at webargs' default), as MIQA answers
            names = _invalid_field_names(details["fields"])
            status, code, message = 400, "invalid", "invalid input: " + (", ".join(names) or "body")
            if names:  # the first field at fault, as service errors name it
                details["field"] = names[0]
        answer = app.make_response(_answer(status, code, message, details))
        original = err.get_response()
        for header in ("Retry-After", "Allow", "WWW-Authenticate"):
            if header in original.headers:
                answer.headers[header] = original.headers[header]
        return answer

    @app.errorhandler(RecursionError)
    def nested_too_deep(err: RecursionError):
        # Python's JSON parser recurses once per level, so its recursion limit is the depth limit of every
        # request body, however it is read (Flask's get_json, webargs): past it the client is at fault.
        if "decoding a JSON" in str(err):
            boundary.rollback()
            return _answer(400, "invalid", "the JSON is nested too deeply")
        return unexpected(err)

    @app.errorhandler(Exception)
    def unexpected(err: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        boundary.rollback()  # a failed statement must not poison what else shares this session
        return _answer(500, "internal", "internal error; it has been logged")


def commit_failed() -> Response:
    """The answer when the database refuses a request's commit: an error, never the success the view meant
    (nor the message it flashed for the next page)."""
    session.pop("_flashes", None)
    return make_response(_answer(500, "internal", "the change could not be stored; it has been logged"))
