"""Health of what qcloop depends on: database, storage, queue and MLflow store."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import urlparse

import requests
from flask import current_app
from sqlalchemy import text

from app.db import db


def _database() -> dict:
    db.session.execute(text("SELECT 1"))
    return {"ok": True, "backend": db.engine.url.get_backend_name()}


def _storage() -> dict:
    root = Path(current_app.config["DATA_ROOT"])
    if not root.is_dir():
        return {"ok": False, "error": f"data root {root} does not exist"}
    if not os.access(root, os.W_OK):
        return {"ok": False, "error": f"data root {root} is not writable"}
    return {"ok": True, "data_root": str(root)}


def _queue() -> dict:
    from app.queue import queue_status

    return queue_status(current_app.extensions["huey"])


def mlflow_status(uri: str) -> dict:
    """Reachability of the MLflow store without importing mlflow into the web process."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            return {"ok": False, "error": f"MLflow store folder {path.parent} is missing or not writable"}
        if path.exists():
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
                connection.execute("SELECT 1")
        return {"ok": True, "uri": uri, "initialised": path.exists()}
    if parsed.scheme in ("http", "https"):
        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=3)
        except requests.RequestException as err:
            return {"ok": False, "error": f"MLflow server {uri} unreachable: {type(err).__name__}"}
        return {"ok": response.ok, "uri": uri}
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme else uri)
        ok = path.is_dir() or (path.parent.is_dir() and os.access(path.parent, os.W_OK))
        return {"ok": ok, "uri": uri} if ok else {"ok": False, "error": f"MLflow store {path} is missing"}
    if parsed.scheme in ("postgresql", "mysql", "databricks"):
        return {"ok": True, "uri": parsed.scheme + "://..."}
    return {"ok": False, "error": f"unsupported MLFLOW_TRACKING_URI scheme {parsed.scheme!r}"}


def check() -> dict:
    """Each component's status; a failing check reports its error instead of raising."""
    report = {}
    for name, probe in (("database", _database), ("storage", _storage), ("queue", _queue),
                        ("mlflow", lambda: mlflow_status(current_app.config["MLFLOW_TRACKING_URI"]))):
        try:
            report[name] = probe()
        except Exception as err:  # noqa: BLE001 - health reports, never raises
            report[name] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    report["ok"] = all(part["ok"] for part in report.values())
    return report


def report_for(user) -> dict:
    """The whole report for superusers; anyone else learns only whether qcloop is healthy, since
    the report names paths, stores and errors."""
    report = check()
    return report if user.is_authenticated and user.is_superuser else {"ok": report["ok"]}
