"""Shared fixtures: one app and one real PostgreSQL database per test process (xdist worker),
a Redis database per worker, and truncation between tests so that each starts empty.

`TEST_DATABASE_URL` / `TEST_REDIS_URL` name the servers (defaults: the local ones);
`scripts/testenv.py` starts throwaway servers where none is reachable.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from psycopg import sql
from sqlalchemy import select, text

from webapp import create_app
from webapp.config import Settings
from webapp.extensions import db
from webapp.outbox.models import OutboxMessage
from webapp.security.keys import KeyRing, generate_jwk

BASE_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
BASE_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/1")
# Lets several checkouts or agents share one server without touching each other's data.
DB_NAME_PREFIX = os.environ.get("TEST_DB_NAME_PREFIX", "gatehouse_test")
STRONG_PASSWORD = "pale-Orbit-93-lantern"
TABLES = (
    "refresh_tokens, sessions, one_time_tokens, audit_events, outbox_messages, "
    "idempotency_records, users"
)


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker.removeprefix("gw") or 0)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _with_redis_db(url: str, offset: int) -> str:
    """The base URL's database number plus `offset` (one Redis database per xdist worker)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        params = [p for p in parts.query.split("&") if p]
        base = next((int(p[3:]) for p in params if p.startswith("db=")), 0)
        rest = [p for p in params if not p.startswith("db=")]
        return urlunsplit(parts._replace(query="&".join([*rest, f"db={base + offset}"])))
    base = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{base + offset}"))


def fresh_database(name: str) -> str:
    """Drop and create database `name` beside the test database; returns its URL."""
    with psycopg.connect(BASE_DATABASE_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_database(BASE_DATABASE_URL, name)


def drop_database(name: str) -> None:
    with psycopg.connect(BASE_DATABASE_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def test_keys_json() -> str:
    ring = KeyRing.from_jwks({"keys": [generate_jwk("RS256")]})
    return json.dumps(ring.to_jwks())


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"{DB_NAME_PREFIX}_{_worker_index()}"
    url = fresh_database(name)
    yield url
    drop_database(name)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _with_redis_db(BASE_REDIS_URL, _worker_index())


@pytest.fixture(scope="session")
def base_settings(database_url: str, redis_url: str) -> Settings:
    return Settings().with_overrides(
        env="test",
        secret_key="test-secret-" + "x" * 32,
        database_url=database_url,
        redis_url=redis_url,
        jwt_keys=test_keys_json(),
        ratelimit_enabled=False,
        public_base_url="https://gatehouse.test",
    )


@pytest.fixture(scope="session")
def app(base_settings: Settings) -> Flask:
    application = create_app(base_settings)
    with application.app_context():
        upgrade()
        db.session.remove()
    return application


@pytest.fixture(scope="session")
def make_app(base_settings: Settings) -> Callable[..., Flask]:
    """Another app on the same database with some settings changed (rate limits, TTLs...)."""

    def build(**overrides: Any) -> Flask:
        return create_app(base_settings.with_overrides(**overrides))

    return build


@pytest.fixture(autouse=True)
def _clean_state(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "app" not in request.fixturenames:
        return
    application: Flask = request.getfixturevalue("app")
    with application.app_context():
        db.session.remove()
        with db.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    redis.Redis.from_url(request.getfixturevalue("redis_url")).flushdb()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def app_ctx(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield
        db.session.remove()


@dataclass
class Account:
    id: uuid.UUID
    email: str
    password: str
    role: str
    access_token: str = ""
    refresh_token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@pytest.fixture
def make_user(app: Flask, client: FlaskClient) -> Callable[..., Account]:
    """Create a verified account through the service layer and sign it in through the API."""
    from webapp.context import SYSTEM
    from webapp.users import service

    counter = iter(range(1_000_000))

    def build(
        role: str = "user",
        *,
        email: str | None = None,
        password: str = STRONG_PASSWORD,
        login: bool = True,
        name: str = "Test User",
    ) -> Account:
        email = email or f"{role}{next(counter)}-{uuid.uuid4().hex[:6]}@example.com"
        with app.app_context():
            user = service.create_user(
                db.session, SYSTEM, email=email, name=name, password=password, role=role
            )
            account = Account(user.id, email, password, role)
            db.session.remove()
        if login:
            response = client.post(
                "/api/v1/auth/login", json={"email": email, "password": password}
            )
            assert response.status_code == 200, response.get_json()
            account.access_token = response.json["access_token"]
            account.refresh_token = response.json["refresh_token"]
        return account

    return build


@pytest.fixture
def admin(make_user: Callable[..., Account]) -> Account:
    return make_user("admin")


@pytest.fixture
def member(make_user: Callable[..., Account]) -> Account:
    return make_user("user")


@pytest.fixture
def outbox(app: Flask) -> Callable[..., list[OutboxMessage]]:
    """The outbox messages written so far (optionally of one template), oldest first."""

    def read(template: str | None = None, recipient: str | None = None) -> list[OutboxMessage]:
        with app.app_context():
            query = select(OutboxMessage).order_by(OutboxMessage.created_at)
            if template:
                query = query.where(OutboxMessage.template == template)
            if recipient:
                query = query.where(OutboxMessage.recipient == recipient)
            rows = list(db.session.scalars(query))
            db.session.expunge_all()
            db.session.remove()
            return rows

    return read
