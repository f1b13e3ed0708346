"""Shared fixtures: a migrated database per session (SQLite, or PostgreSQL when DATABASE_URL
says so), a fresh app and emptied tables per test, factories for users, projects and scans."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from flask import g

from app import create_app
from app.db import db
from tests.orthanc import orthanc, orthanc_server  # noqa: F401  (a real Orthanc for the DICOMweb sync tests)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ARTIFACTS_DIR = Path(__file__).resolve().parents[1] / "test-artifacts"


def _postgres_database(base_url: str, name: str, action: str) -> str:
    url = make_url(base_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        if action == "create":
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        else:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``database`` every test whose fixtures reach a database: the PostgreSQL run selects them with
    ``-m database``, as the rest (networks, storage, parsers, the fake servers) would only repeat the SQLite run."""
    for item in items:
        if "database_factory" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.database)


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory) -> Callable[[str], str]:
    """Make an empty database and return its URL (dropped at the end of the session)."""
    base = os.environ.get("DATABASE_URL", "")
    made: list[str] = []

    def make(label: str) -> str:
        if base.startswith("postgresql"):
            name = f"qcloop_test_{label}_{uuid.uuid4().hex[:8]}"
            made.append(name)
            return _postgres_database(base, name, "create")
        return f"sqlite:///{tmp_path_factory.mktemp('db') / (label + '.db')}"

    yield make
    for name in made:
        _postgres_database(base, name, "drop")


@pytest.fixture(scope="session")
def database_url(database_factory) -> str:
    """The suite's database, migrated to head once."""
    import flask_migrate

    url = database_factory("suite")
    app = create_app(_test_settings(Path(os.environ.get("TMPDIR", "/tmp")) / f"qcloop-migrate-{uuid.uuid4().hex}", url))
    with app.app_context():
        flask_migrate.upgrade()
        db.engine.dispose()
    return url


def _test_settings(instance: Path, database_url: str, **overrides) -> dict:
    instance.mkdir(parents=True, exist_ok=True)
    settings = {
        "TESTING": True,
        "INSTANCE_PATH": str(instance),
        "SECRET_KEY": "test-secret",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "DATA_ROOT": str(instance / "data"),
        "CACHE_DIR": str(instance / "cache"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{instance / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(instance / "mlartifacts"),
        "QUEUE_IMMEDIATE": True,
        "WTF_CSRF_ENABLED": False,
        "RATELIMIT_ENABLED": False,
        "SERVER_NAME": None,
    }
    (instance / "data").mkdir(exist_ok=True)
    settings.update(overrides)
    return settings


def _empty_tables() -> None:
    for table in reversed(db.metadata.sorted_tables):
        db.session.execute(table.delete())
    db.session.commit()


@pytest.fixture
def make_app(database_url, tmp_path):
    """Build an app on the suite database with settings overridden; tables are emptied after."""
    apps = []

    def make(**overrides):
        app = create_app(_test_settings(tmp_path / f"instance{len(apps)}", database_url, **overrides))
        apps.append(app)
        # Tests keep one app context pushed, which requests then share (a server gives each request
        # its own): forget Flask-Login's cached user so each request authenticates afresh.
        app.before_request(lambda: g.pop("_login_user", None) and None)
        with app.app_context():
            from app.services import vocabulary

            vocabulary.seed_defaults()
            db.session.commit()
        return app

    yield make
    if apps:
        with apps[0].app_context():
            db.session.rollback()
            _empty_tables()
        for app in apps:
            with app.app_context():
                db.engine.dispose()


@pytest.fixture
def app(make_app):
    app = make_app()
    with app.app_context():
        yield app
        db.session.rollback()


@pytest.fixture
def queued_app(make_app):
    """An app whose jobs are queued, never run: a generated or allowed POST may start an import or a training."""
    app = make_app(QUEUE_IMMEDIATE=False)
    with app.app_context():
        yield app
        db.session.rollback()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def factory(app):
    from tests.factories import Factory

    return Factory(app)


@pytest.fixture
def live_server(app):
    """The app served over real HTTP on a free localhost port, in a thread, for browsers and scripts."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_port}"
    yield server
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def two_torch_threads():
    """CI has two cores; keep torch from oversubscribing them in tests that train or run networks."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright (no downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=os.environ.get("QCLOOP_CHROMIUM", "/usr/bin/chromium"),
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--enable-unsafe-swiftshader"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    yield page
    context.close()
