"""DATABASE_REPLICA_URL: list endpoints read from the replica engine, writes go to the primary.

The "replica" here is the test database itself under a second engine, so both engines see the
same rows while every statement can be attributed to the engine that ran it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from flask import Flask
from sqlalchemy import event

from tests.support.accounts import STRONG_PASSWORD
from webapp.extensions import db

USERS = "/api/v1/users/"
EVENTS = "/api/v1/audit-events/"
WRITE_VERBS = ("INSERT", "UPDATE", "DELETE")


@dataclass
class Statements:
    replica: list[str] = field(default_factory=list)
    primary: list[str] = field(default_factory=list)

    def clear(self) -> None:
        self.replica.clear()
        self.primary.clear()


def _writes(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith(WRITE_VERBS)]


def _touching(statements: list[str], table: str) -> list[str]:
    return [s for s in statements if f"FROM {table}" in s or f"{table}." in s]


@pytest.fixture
def replica_app(app: Flask, make_app, database_url: str) -> Iterator[tuple[Flask, Statements]]:
    application = make_app(database_replica_url=database_url)
    seen = Statements()
    with application.app_context():
        replica, primary = db.engines["replica"], db.engines[None]

    def on_replica(conn, cursor, statement, parameters, context, executemany):
        seen.replica.append(statement)

    def on_primary(conn, cursor, statement, parameters, context, executemany):
        seen.primary.append(statement)

    event.listen(replica, "before_cursor_execute", on_replica)
    event.listen(primary, "before_cursor_execute", on_primary)
    yield application, seen
    event.remove(replica, "before_cursor_execute", on_replica)
    event.remove(primary, "before_cursor_execute", on_primary)
    replica.dispose()
    primary.dispose()


def test_without_a_replica_url_there_is_no_replica_engine(app):
    with app.app_context():
        assert "replica" not in db.engines


def test_the_users_list_runs_its_query_on_the_replica(replica_app, admin, make_user):
    application, seen = replica_app
    make_user(email="listed@example.com", login=False)
    client = application.test_client()
    seen.clear()

    response = client.get(USERS, query_string={"sort": "email"}, headers=admin.headers)

    assert response.status_code == 200
    assert "listed@example.com" in [u["email"] for u in response.json["items"]]
    assert _touching(seen.replica, "users"), seen.replica
    assert [s for s in seen.primary if "ORDER BY" in s] == [], seen.primary
    assert _writes(seen.replica) == []


def test_offset_mode_counts_on_the_replica_too(replica_app, admin):
    application, seen = replica_app
    client = application.test_client()
    seen.clear()

    response = client.get(USERS, query_string={"offset": 0}, headers=admin.headers)

    assert response.status_code == 200
    assert response.json["total"] == 1
    assert any("count(" in s.lower() for s in seen.replica), seen.replica
    assert not any("count(" in s.lower() for s in seen.primary)


def test_the_audit_list_runs_its_query_on_the_replica(replica_app, admin):
    application, seen = replica_app
    client = application.test_client()
    seen.clear()

    response = client.get(EVENTS, headers=admin.headers)

    assert response.status_code == 200
    assert response.json["items"]
    assert _touching(seen.replica, "audit_events"), seen.replica
    assert _touching(seen.primary, "audit_events") == []


def test_a_cursor_walk_on_the_replica_sees_every_row(replica_app, admin, make_user):
    application, seen = replica_app
    for _ in range(4):
        make_user(login=False)
    client = application.test_client()
    seen.clear()

    ids, params = [], {"limit": 2}
    while True:
        page = client.get(USERS, query_string=params, headers=admin.headers)
        ids.extend(u["id"] for u in page.json["items"])
        if page.json["next_cursor"] is None:
            break
        params["cursor"] = page.json["next_cursor"]

    assert len(ids) == len(set(ids)) == 5
    assert len(_touching(seen.replica, "users")) == 3


def test_writes_go_to_the_primary_and_never_to_the_replica(replica_app, admin, member):
    application, seen = replica_app
    client = application.test_client()
    seen.clear()

    created = client.post(
        USERS,
        json={"email": "written@example.com", "name": "Written", "password": STRONG_PASSWORD},
        headers=admin.headers,
    )
    renamed = client.patch(f"{USERS}{member.id}", json={"name": "Renamed"}, headers=admin.headers)
    deleted = client.delete(f"{USERS}{member.id}", headers=admin.headers)

    assert (created.status_code, renamed.status_code, deleted.status_code) == (201, 200, 204)
    assert seen.replica == []
    primary_writes = _writes(seen.primary)
    assert any(s.startswith("INSERT INTO users") for s in primary_writes)
    assert any(s.startswith("UPDATE users") for s in primary_writes)
    assert any(s.startswith("DELETE FROM users") for s in primary_writes)
    assert any(s.startswith("INSERT INTO audit_events") for s in primary_writes)


def test_a_write_is_visible_in_the_next_replica_list(replica_app, admin):
    application, seen = replica_app
    client = application.test_client()
    client.post(
        USERS,
        json={"email": "fresh@example.com", "name": "Fresh", "password": STRONG_PASSWORD},
        headers=admin.headers,
    )
    seen.clear()

    response = client.get(USERS, query_string={"email": "fresh"}, headers=admin.headers)

    assert [u["email"] for u in response.json["items"]] == ["fresh@example.com"]
    assert _touching(seen.replica, "users")


def test_replica_sessions_return_their_connections_to_the_pool(replica_app, admin):
    application, _seen = replica_app
    client = application.test_client()

    for path in (USERS, EVENTS, f"{USERS}?offset=0"):
        assert client.get(path, headers=admin.headers).status_code == 200

    with application.app_context():
        assert db.engines["replica"].pool.checkedout() == 0
