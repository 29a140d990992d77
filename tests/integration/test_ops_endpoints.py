"""Operational endpoints: /health (liveness, touches nothing), /ready (database, Redis, migrations
at head; 503 with details otherwise) and the JWKS document."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import jwt
import pytest
from flask import Flask

from tests.support.database import drop_database, fresh_database
from webapp.extensions import db
from webapp.security.keys import KeyRing, generate_jwk

UNREACHABLE_DB = "postgresql://postgres@127.0.0.1:1/nowhere"
DEAD_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def other_app(app: Flask, make_app: Callable[..., Flask]) -> Iterator[Callable[..., Flask]]:
    """Apps with other settings; the process-wide Redis store is put back afterwards."""
    built: list[Flask] = []

    def build(**overrides) -> Flask:
        built.append(make_app(**overrides))
        return built[-1]

    yield build
    for other in built:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()


# --- /health ----------------------------------------------------------------------------------


def test_health_answers_ok(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_health_answers_ok_without_a_database(other_app):
    app = other_app(database_url=UNREACHABLE_DB, redis_url=DEAD_REDIS)
    response = app.test_client().get("/health")
    assert response.status_code == 200
    assert response.json["status"] == "ok"
    assert response.headers["X-Request-ID"]


# --- /ready -----------------------------------------------------------------------------------


def test_ready_answers_ok_with_every_check_when_all_is_well(client):
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json == {
        "status": "ok",
        "checks": {"database": "ok", "migrations": "ok", "redis": "ok"},
    }


def test_ready_is_503_with_details_when_the_database_is_unreachable(other_app):
    app = other_app(database_url=UNREACHABLE_DB)
    response = app.test_client().get("/ready")
    assert response.status_code == 503
    assert response.json["status"] == "unavailable"
    assert response.json["checks"]["database"].startswith("unavailable")
    assert response.json["checks"]["migrations"] != "ok"
    assert response.json["checks"]["redis"] == "ok"


def test_ready_is_503_when_redis_is_down_in_production(other_app):
    # Production requires rate limits on.
    app = other_app(env="production", redis_url=DEAD_REDIS, ratelimit_enabled=True)
    response = app.test_client().get("/ready")
    assert response.status_code == 503
    assert response.json["status"] == "unavailable"
    assert response.json["checks"]["redis"] == "unavailable"
    assert response.json["checks"]["database"] == "ok"


def test_ready_is_503_when_migrations_are_not_at_head(other_app):
    name = f"gh_convtests_nomigrations_{os.environ.get('PYTEST_XDIST_WORKER', 'gw0')}"
    app = other_app(database_url=fresh_database(name))
    try:
        response = app.test_client().get("/ready")
        assert response.status_code == 503
        assert response.json["checks"]["database"] == "ok"
        assert response.json["checks"]["migrations"] != "ok"
        assert response.json["status"] == "unavailable"
    finally:
        with app.app_context():
            db.engine.dispose()
        drop_database(name)


def test_ready_reports_redis_not_configured_outside_production(other_app):
    app = other_app(redis_url=None)
    response = app.test_client().get("/ready")
    assert response.status_code == 200
    assert response.json["checks"]["redis"] == "not configured"


# --- JWKS -------------------------------------------------------------------------------------


def test_jwks_publishes_the_key_that_signs_access_tokens(client, member):
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    kid = jwt.get_unverified_header(member.access_token)["kid"]
    [published] = [key for key in response.json["keys"] if key["kid"] == kid]
    public_key = jwt.PyJWK(published).key
    claims = jwt.decode(
        member.access_token, public_key, algorithms=[published["alg"]], audience="gatehouse"
    )
    assert claims["sub"] == str(member.id)


def test_jwks_is_cacheable_and_holds_no_private_parts(client):
    response = client.get("/.well-known/jwks.json")
    assert response.headers["Cache-Control"] == "public, max-age=300"
    for key in response.json["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
        assert key["use"] == "sig"


def test_jwks_publishes_the_next_current_and_previous_keys(other_app):
    ring = KeyRing.from_jwks(
        {"keys": [generate_jwk("EdDSA"), {**generate_jwk("EdDSA"), "status": "next"}]}
    ).rotated()
    app = other_app(jwt_keys=json.dumps(ring.to_jwks()), jwks_max_age=60)
    response = app.test_client().get("/.well-known/jwks.json")
    kids = {key["kid"] for key in response.json["keys"]}
    expected = {ring.signing_key.kid, ring.next_key.kid, *(k.kid for k in ring.previous_keys)}
    assert len(expected) == 3
    assert kids == expected
    assert response.headers["Cache-Control"] == "public, max-age=60"
