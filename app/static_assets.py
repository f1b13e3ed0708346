"""Static files under content-versioned URLs that browsers keep for a year.

A reviewer moves from scan to scan all day: with ``?v=`` in every static URL the browser never
asks for the viewer's scripts again (no revalidation round trips before the first paint), and a
new release changes the URL, so nobody runs a stale script.

ES modules import each other by relative URL, where a query string does not follow: a module
folder is served under ``/static/tree/<version>/...`` instead (:func:`module_url`), one version
for the whole folder, so every module it imports is versioned and kept for a year as well.
"""
from __future__ import annotations

import hashlib
import os

from flask import Flask, Response, request, send_from_directory, url_for

YEAR = 365 * 24 * 3600


def _version(folder: str, filename: str) -> str | None:
    try:
        stat = os.stat(os.path.join(folder, filename))
    except OSError:
        return None  # a missing file keeps its plain URL and answers 404 as before
    return hashlib.sha1(f"{stat.st_mtime_ns}:{stat.st_size}".encode()).hexdigest()[:12]


def _tree_version(folder: str, tree: str) -> str:
    """One version for every file under ``tree`` (names, sizes and change times)."""
    digest = hashlib.sha1()
    for root, _, names in sorted(os.walk(os.path.join(folder, tree))):
        for name in sorted(names):
            stat = os.stat(os.path.join(root, name))
            digest.update(f"{os.path.relpath(os.path.join(root, name), folder)}:{stat.st_mtime_ns}:{stat.st_size};".encode())
    return digest.hexdigest()[:12]


def module_url(app: Flask, filename: str) -> str:
    """The URL of an ES module, versioned with its whole folder."""
    return url_for("static_tree", version=_tree_version(app.static_folder, os.path.dirname(filename)),
                   filename=filename)


def init_static(app: Flask) -> None:
    from app.auth.permissions import permission

    @app.route("/static/tree/<version>/<path:filename>", endpoint="static_tree")
    @permission("public")
    def static_tree(version: str, filename: str) -> Response:
        response = send_from_directory(app.static_folder, filename)
        if version == _tree_version(app.static_folder, os.path.dirname(filename)):
            response.cache_control.public = True
            response.cache_control.max_age = YEAR
            response.cache_control.immutable = True
            response.cache_control.no_cache = None
        return response

    app.jinja_env.globals["module_url"] = lambda filename: module_url(app, filename)

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
