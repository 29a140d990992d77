"""The servers of the tests: one PostgreSQL database and one Redis database per test process
(xdist worker), throwaway databases beside them, and the signing keys of a test app.

`TEST_DATABASE_URL` / `TEST_REDIS_URL` name the servers (defaults: the local ones);
`scripts/testenv.py` starts throwaway servers where none is reachable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from webapp.security.keys import KeyRing, generate_jwk

BASE_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
BASE_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/1")
# Lets several checkouts or agents share one server without touching each other's data.
DB_NAME_PREFIX = os.environ.get("TEST_DB_NAME_PREFIX", "gatehouse_test")


def worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker.removeprefix("gw") or 0)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def offset_redis_db(url: str, offset: int) -> str:
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
    return with_database(BASE_DATABASE_URL, name)


def drop_database(name: str) -> None:
    with psycopg.connect(BASE_DATABASE_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def signing_keys_json() -> str:
    """A JWKS of one new RS256 key, as JWT_KEYS takes it."""
    ring = KeyRing.from_jwks({"keys": [generate_jwk("RS256")]})
    return json.dumps(ring.to_jwks())


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"{DB_NAME_PREFIX}_{worker_index()}"
    url = fresh_database(name)
    yield url
    drop_database(name)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return offset_redis_db(BASE_REDIS_URL, worker_index())
