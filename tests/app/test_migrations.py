"""The Alembic chain: empty -> head -> base -> head, and no drift from the ORM metadata."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import flask_migrate

from app import create_app
from app.db import db
from tests.conftest import _test_settings


def test_upgrade_downgrade_upgrade_matches_models(database_factory, tmp_path):
    app = create_app(_test_settings(tmp_path / "instance", database_factory("migrations")))
    with app.app_context():
        flask_migrate.upgrade()
        assert "decisions" in inspect(db.engine).get_table_names()
        flask_migrate.downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        flask_migrate.upgrade()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, db.metadata)
        assert diff == []
        db.engine.dispose()
