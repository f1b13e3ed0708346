"""qcloop's Flask application factory."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.routing import IntegerConverter

from app.config import Config
from app.db.base import MAX_ID
from app.extensions import csrf, db, limiter, login_manager, migrate

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")


class IdConverter(IntegerConverter):
    """``<int:...>`` ids stop at what a database column holds: a larger one is a 404, not a 500."""

    def __init__(self, map, *args, **kwargs) -> None:  # noqa: A002 - werkzeug's name
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def create_app(config: Config | dict[str, Any] | None = None) -> Flask:
    """Build the app; ``config`` overrides the environment (a Config or a dict of keys)."""
    settings = Config().as_dict()
    if isinstance(config, Config):
        settings = config.as_dict()
    elif config:
        settings.update(config)
    app = Flask(__name__, instance_path=settings["INSTANCE_PATH"])
    app.url_map.converters["int"] = IdConverter
    app.config.update(settings)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {**app.config["SQLALCHEMY_ENGINE_OPTIONS"],
                                                   "connect_args": {"timeout": 30}}
    logging.basicConfig(level=app.config["LOG_LEVEL"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    login_manager.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)

    from app.headers import init_headers
    from app.queue import init_queue
    from app.static_assets import init_static

    init_queue(app)
    init_static(app)
    init_headers(app)

    from app.db.boundary import init_request_boundary
    from app.errors import commit_failed, register_error_handlers
    from app.auth import init_auth

    init_auth(app)

    from app.admin import bp as admin_bp
    from app.api import init_api
    from app.ui import bp as ui_bp

    app.register_blueprint(ui_bp)
    app.register_blueprint(admin_bp, url_prefix="/admin")
    init_api(app)
    register_error_handlers(app)  # after the API, so these handlers replace flask-smorest's
    init_request_boundary(app, commit_failed)  # the last after_request hook, so it runs first

    from app.services import job_kinds  # noqa: F401 - registers the job handlers

    return app


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    """Foreign keys (for ON DELETE) and WAL (readers never wait on the writer) on SQLite."""
    import sqlite3

    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()
