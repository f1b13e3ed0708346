"""Static files under content-versioned URLs that browsers keep for a year.

A reviewer moves from scan to scan all day: with ``?v=`` in every static URL the browser never
asks for the viewer's scripts again (no revalidation round trips before the first paint), and a
new release changes the URL, so nobody runs a stale script.
"""
from __future__ import annotations

import hashlib
import os

from flask import Flask, Response, request

YEAR = 365 * 24 * 3600


def _version(folder: str, filename: str) -> str | None:
    try:
        stat = os.stat(os.path.join(folder, filename))
    except OSError:
        return None  # a missing file keeps its plain URL and answers 404 as before
    return hashlib.sha1(f"{stat.st_mtime_ns}:{stat.st_size}".encode()).hexdigest()[:12]


def init_static(app: Flask) -> None:
    @app.url_defaults
    def add_version(endpoint: str, values: dict) -> None:
        if endpoint == "static" and "filename" in values and "v" not in values:
            version = _version(app.static_folder, values["filename"])
            if version:
                values["v"] = version

    @app.after_request
    def cache_versioned(response: Response) -> Response:
        if request.endpoint == "static" and request.args.get("v") and response.status_code in (200, 304):
            response.cache_control.public = True
            response.cache_control.max_age = YEAR
            response.cache_control.immutable = True
            response.cache_control.no_cache = None
        return response
