"""The idempotency record holds no password equivalent.

The bodies of `POST /auth/register` and `POST /users` hold the password, and their idempotency
records are kept for 24 hours: a plain SHA-256 of the body would be open to ~330k guesses a second
per core. Fingerprints are an HMAC-SHA256 under a key derived from SECRET_KEY, over the body with
every secret field left out. The test registers with a known password (and an `Idempotency-Key`),
then reads every column of every table, and every Redis value, and finds no fast unkeyed digest of
the password or of the body, in any common encoding.

OWASP ASVS 4.0.3: V2.4.1 (passwords stored only in a salted, costly one-way form), V6.2.1/V6.2.2
(no custom or weak use of digests for secrets), V8.3.4 (sensitive data identified and protected
at rest), V8.3.6 (no copy of a secret kept longer than needed).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator

import psycopg
import redis
from flask import Flask
from flask.testing import FlaskClient
from psycopg import sql

from tests.support.accounts import Account
from webapp.config import settings_of
from webapp.http import idempotency

PASSWORD = "violet-Summit-86-harbour"
DIGESTS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha3_256", "blake2b", "blake2s")


def _inputs(method: str, path: str, body: dict[str, str], raw: bytes) -> list[bytes]:
    """What a fast digest of the request could have been taken over."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return [
        PASSWORD.encode(),
        raw,
        canonical.encode(),
        json.dumps(body).encode(),
        f"{method} {path}\n{canonical}".encode(),
        f"{method} {path}\n".encode() + raw,
    ]


def _encodings(digest: bytes) -> Iterator[str]:
    yield digest.hex()
    yield base64.b64encode(digest).decode()
    yield base64.b64encode(digest).decode().rstrip("=")
    yield base64.urlsafe_b64encode(digest).decode().rstrip("=")


def forbidden_values(method: str, path: str, body: dict[str, str], raw: bytes) -> set[str]:
    found = {PASSWORD}
    for data in _inputs(method, path, body, raw):
        for name in DIGESTS:
            digest = hashlib.new(name, data).digest()
            found.update(_encodings(digest))
            # A truncated hex digest would still be a password equivalent (most of one).
            found.add(digest.hex()[:32])
    return found


def database_text(database_url: str) -> Iterator[tuple[str, str]]:
    """(table.column, value as text) for every non-null value of every column of every table."""
    with psycopg.connect(database_url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ).fetchall()
        assert len({table for table, _ in columns}) >= 10, columns
        for table, column in columns:
            query = sql.SQL("SELECT {}::text FROM {} WHERE {} IS NOT NULL").format(
                sql.Identifier(column), sql.Identifier(table), sql.Identifier(column)
            )
            for (value,) in conn.execute(query):
                yield f"{table}.{column}", value


def redis_text(redis_url: str) -> Iterator[tuple[str, str]]:
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key)]
        elif kind == b"hash":
            values = list(client.hgetall(key).values())
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"set":
            values = list(client.smembers(key))
        elif kind == b"zset":
            values = client.zrange(key, 0, -1)
        else:
            continue
        for value in values:
            if value is not None:
                yield f"redis:{key.decode(errors='replace')}", value.decode("latin-1")


def leaks(stored: Iterator[tuple[str, str]], forbidden: set[str]) -> list[str]:
    lowered = {value.lower() for value in forbidden}
    found = []
    for where, text in stored:
        low = text.lower()
        hits = [v for v in forbidden if v in text] + [v for v in lowered if v in low]
        if hits:
            found.append(f"{where} holds {hits[0][:24]}…")
    return found


def _post(
    client: FlaskClient, path: str, body: dict[str, str], key: str, headers: dict[str, str]
) -> tuple[int, bytes]:
    raw = json.dumps(body).encode()
    response = client.post(
        path,
        data=raw,
        content_type="application/json",
        headers={"Idempotency-Key": key, **headers},
    )
    return response.status_code, raw


def test_no_stored_value_is_a_fast_digest_of_a_password_or_a_body(
    client: FlaskClient, admin: Account, database_url: str, redis_url: str
):
    forbidden: set[str] = set()
    register = {"email": "fingerprint@example.com", "password": PASSWORD, "name": "Finger Print"}
    status, raw = _post(client, "/api/v1/auth/register", register, "register-1", {})
    assert status == 201
    forbidden |= forbidden_values("POST", "/api/v1/auth/register", register, raw)
    create = {"email": "created@example.com", "password": PASSWORD, "name": "Created"}
    status, raw = _post(client, "/api/v1/users/", create, "create-1", admin.headers)
    assert status == 201
    forbidden |= forbidden_values("POST", "/api/v1/users/", create, raw)

    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM idempotency_records").fetchone() == (2,)
    found = leaks(database_text(database_url), forbidden)
    found += leaks(redis_text(redis_url), forbidden)
    assert not found, "\n".join(found)


def test_a_retry_still_replays_and_another_body_is_still_refused(client: FlaskClient):
    body = {"email": "retry@example.com", "password": PASSWORD, "name": "Retry"}
    first, _ = _post(client, "/api/v1/auth/register", body, "retry-1", {})
    assert first == 201
    response = client.post(
        "/api/v1/auth/register", json=body, headers={"Idempotency-Key": "retry-1"}
    )
    assert response.status_code == 201
    assert response.headers["Idempotent-Replayed"] == "true"
    # Key order and spacing are not the request's identity; its fields are.
    reordered = json.dumps(dict(reversed(list(body.items())))).replace(", ", ",")
    response = client.post(
        "/api/v1/auth/register",
        data=reordered,
        content_type="application/json",
        headers={"Idempotency-Key": "retry-1"},
    )
    assert response.headers.get("Idempotent-Replayed") == "true"
    response = client.post(
        "/api/v1/auth/register",
        json={**body, "name": "Someone Else"},
        headers={"Idempotency-Key": "retry-1"},
    )
    assert response.status_code == 422
    assert response.get_json()["type"] == "/problems/idempotency-key-reused"


def test_the_fingerprint_is_keyed_and_leaves_secret_fields_out():
    def fingerprint(secret_key: str, body: dict[str, object]) -> str:
        raw = json.dumps(body).encode()
        return idempotency.request_fingerprint(secret_key, "POST", "/api/v1/users/", raw)

    body = {"email": "a@example.com", "name": "A", "password": PASSWORD}
    one = fingerprint("k" * 40, body)
    assert len(one) == 64
    assert one != fingerprint("another-server-key-" + "x" * 32, body)
    assert one == fingerprint("k" * 40, {**body, "password": "a-Different-99-password"})
    assert one != fingerprint("k" * 40, {**body, "name": "B"})
    # Which fields were sent still counts (one secret field more is another request).
    assert one != fingerprint("k" * 40, {**body, "current_password": "x"})
    nested: dict[str, object] = {"outer": [{"api_secret": "s1", "code": "123456"}]}
    assert fingerprint("k" * 40, nested) == fingerprint(
        "k" * 40, {"outer": [{"api_secret": "s2", "code": "654321"}]}
    )


def test_deep_or_broken_bodies_still_get_a_fingerprint(app: Flask) -> None:
    secret = settings_of(app).secret_key
    for raw in (b"[" * 5000 + b"]" * 5000, b"{not json", b""):
        assert len(idempotency.request_fingerprint(secret, "POST", "/x", raw)) == 64
