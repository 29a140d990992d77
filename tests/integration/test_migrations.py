"""Alembic migrations: upgrade → downgrade → upgrade on a fresh PostgreSQL database leaves exactly
the schema the models describe; upgrade also works on SQLite (the `make run` default)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from tests.support.database import drop_database, fresh_database
from webapp.extensions import db
from webapp.models import MIGRATIONS_DIR

TABLES = {
    "users",
    "sessions",
    "refresh_tokens",
    "one_time_tokens",
    "audit_events",
    "outbox_messages",
    "idempotency_records",
}


def _head() -> str:
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def _state(app: Flask, *, compare: bool = True) -> tuple[set[str], set[str], list]:
    """Tables, the recorded revision(s) and the differences between the models and the database
    (SQLite cannot reflect the expression index on lower(email), so it is not compared there)."""
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": False}
        )
        tables = set(inspect(connection).get_table_names()) - {"alembic_version"}
        revisions = set(context.get_current_heads())
        diff = compare_metadata(context, db.metadata) if compare else []
    return tables, revisions, diff


@pytest.fixture
def scratch_postgres(make_app: Callable[..., Flask]) -> Iterator[Flask]:
    name = f"gh_convtests_migrations_{os.environ.get('PYTEST_XDIST_WORKER', 'gw0')}"
    app = make_app(database_url=fresh_database(name))
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    drop_database(name)


def test_upgrade_downgrade_upgrade_on_postgresql_ends_at_the_models_schema(scratch_postgres):
    app = scratch_postgres
    with app.app_context():
        upgrade()
    tables, revisions, diff = _state(app)
    assert tables >= TABLES
    assert revisions == {_head()}
    assert diff == []

    with app.app_context():
        downgrade(revision="base")
    tables, revisions, _ = _state(app)
    assert tables == set()
    assert revisions == set()

    with app.app_context():
        upgrade()
    tables, revisions, diff = _state(app)
    assert tables >= TABLES
    assert revisions == {_head()}
    assert diff == []


def test_the_email_index_is_unique_on_the_normalized_address_on_postgresql(scratch_postgres):
    app = scratch_postgres
    with app.app_context():
        upgrade()
        with db.engine.connect() as connection:
            indexes = inspect(connection).get_indexes("users")
    [unique] = [index for index in indexes if index.get("unique")]
    assert unique["column_names"] == ["email_normalized"], indexes


def _insert_users(app: Flask, *emails: str) -> None:
    with app.app_context(), db.engine.begin() as connection:
        for number, email in enumerate(emails):
            connection.execute(
                text(
                    "INSERT INTO users (id, email, name, role, active, failed_login_count,"
                    " created_at, updated_at, version) VALUES (:id, :email, 'N', 'user', true, 0,"
                    " now(), now(), 1)"
                ),
                {"id": uuid.UUID(int=number + 1), "email": email},
            )


def test_the_email_change_migration_fills_the_normalized_address_of_existing_users(
    scratch_postgres,
):
    app = scratch_postgres
    with app.app_context():
        upgrade(revision="0003")
    _insert_users(app, "\uff21da@Example.com", "grace@example.com")  # full-width A

    with app.app_context():
        upgrade()
        with db.engine.connect() as connection:
            keys = connection.execute(
                text("SELECT email, email_normalized FROM users ORDER BY email_normalized")
            ).all()
    assert [tuple(row) for row in keys] == [
        ("\uff21da@Example.com", "ada@example.com"),
        ("grace@example.com", "grace@example.com"),
    ]


def test_the_email_change_migration_stops_on_look_alike_accounts(scratch_postgres, caplog):
    app = scratch_postgres
    with app.app_context():
        upgrade(revision="0003")
    # lower(email) differs, so the old index let both in; NFKC folds one into the other.
    _insert_users(app, "ada@example.com", "\uff41da@example.com")

    # Flask-Migrate logs the error and exits.
    with app.app_context(), pytest.raises(SystemExit):
        upgrade()
    assert "look-alike email addresses" in caplog.text


def test_upgrade_on_a_fresh_sqlite_file_creates_the_schema(make_app, tmp_path: Path):
    path = tmp_path / "gatehouse.db"
    app = make_app(database_url=f"sqlite:///{path}")
    try:
        with app.app_context():
            upgrade()
        tables, revisions, _ = _state(app, compare=False)
        assert tables >= TABLES
        assert revisions == {_head()}
        response = app.test_client().post(
            "/api/v1/auth/register",
            json={"email": "lite@example.com", "password": "pale-Orbit-93-lantern", "name": "L"},
        )
        assert response.status_code == 201, response.json
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
