"""The one owner of commits: the end of a request, of a job step, or of a CLI command.

Routes and services flush; a request's writes are committed by :func:`init_request_boundary`'s
hook once its answer is a success, and rolled back otherwise, so a refusal never leaves half a
change behind. Jobs and commands, which have no answer to wait for, call :func:`commit` where
their work must become visible to another process (a queued job row, a job's progress).
"""
from __future__ import annotations

import logging
from typing import Callable

from flask import Flask, Response, current_app
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql import Executable

from app.db.base import db

log = logging.getLogger(__name__)
_KEEP = "qcloop.keep_refused_writes"


def keep_refused_writes() -> None:
    """Commit this request's writes even when its answer is a refusal (a failed log-in is counted and
    audited, so the next attempt sees the count)."""
    db.session.info[_KEEP] = True


def commit() -> None:
    """Commit at a job or command boundary (never in a route: the request boundary commits)."""
    db.session.info.pop(_KEEP, None)
    db.session.commit()


def rollback() -> None:
    """Drop the unit of work, including a request's wish to keep refused writes."""
    db.session.info.pop(_KEEP, None)
    db.session.rollback()


def side_engine() -> Engine:
    """An engine for short writes outside the unit of work (a job's progress and heartbeat, a token's last
    use): on SQLite it never waits long on a locked file, and it never holds the request's write lock."""
    engine = current_app.extensions.get("qcloop.side_engine")
    if engine is None:
        url = db.engine.url
        engine = create_engine(url, connect_args={"timeout": 0.5}) if url.get_backend_name() == "sqlite" else db.engine
        current_app.extensions["qcloop.side_engine"] = engine
    return engine


def write_aside(statement: Executable) -> bool:
    """Run one write in its own short transaction, committed whatever becomes of the unit of work; False when
    the database was too busy to take it at once (such writes are bookkeeping a later one repeats)."""
    try:
        with side_engine().begin() as connection:
            connection.execute(statement)
    except OperationalError:
        log.debug("write aside skipped: database busy")
        return False
    return True


def init_request_boundary(app: Flask, failed: Callable[[], Response]) -> None:
    """Commit a request's writes when its answer succeeds (status below 400, or a refusal that asked to
    keep them) and roll back otherwise; ``failed`` answers a commit the database refused. Register it
    after every other ``after_request`` hook: Flask runs them last first, so the others see the final answer."""

    @app.after_request
    def end_unit_of_work(response: Response) -> Response:
        keep = db.session.info.pop(_KEEP, False)
        if response.status_code >= 400 and not keep:
            db.session.rollback()
            return response
        try:
            db.session.commit()
        except Exception:  # noqa: BLE001 - a refused flush (a database error or a model rule) is the same failure
            log.exception("commit failed at the end of the request")
            db.session.rollback()
            return failed()
        return response
