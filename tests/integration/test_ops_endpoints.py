"""Operational endpoints: /health (liveness, touches nothing), /ready (this pod can serve: the
decision table of webapp.ops.readiness, which docs/deploy.md shows) and the JWKS document."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import psycopg
import pytest
from flask import Flask

from tests.support.database import DB_NAME_PREFIX, drop_database, fresh_database, worker_index
from webapp.extensions import db
from webapp.ops.readiness import DECISIONS, _script, release_heads, schema_state
from webapp.security.keys import KeyRing, generate_jwk

UNREACHABLE_DB = "postgresql://postgres@127.0.0.1:1/nowhere"
DEAD_REDIS = "redis://127.0.0.1:1/0"
ROOT = Path(__file__).resolve().parents[2]


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


# --- /ready: the decision table -----------------------------------------------------------------
#
# webapp.ops.readiness.DECISIONS is the table docs/deploy.md shows; each row is answered here by the
# real endpoint, on a database whose alembic_version says where its schema is.

HEAD = next(iter(release_heads()))
NEWER_RELEASE = "0099_written_by_a_newer_release"
SCHEMAS = {
    "at head": [HEAD],
    "ahead (newer release)": [NEWER_RELEASE],
    "behind or empty": [],  # never migrated; one revision behind is a case of its own below
}


def decision_cases() -> list[tuple[str, str, str, int, str]]:
    """DECISIONS with "any" Redis state spelled out as both."""
    cases = []
    for database, schema, redis_state, code, status in DECISIONS:
        for state in ("up", "down") if redis_state == "any" else (redis_state,):
            cases.append((database, schema, state, code, status))
    return cases


def render_decisions() -> str:
    """The Markdown table of docs/deploy.md."""
    lines = [
        "| database | schema against this release | Redis | `/ready` | `status` |",
        "| --- | --- | --- | --- | --- |",
    ]
    for database, schema, redis_state, code, status in DECISIONS:
        lines.append(f"| {database} | {schema} | {redis_state} | {code} | `{status}` |")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def schema_database() -> Iterator[Callable[[list[str]], str]]:
    """A database beside the test database that holds only `alembic_version`, set per test."""
    name = f"{DB_NAME_PREFIX}_ready_{worker_index()}"
    url = fresh_database(name)

    def at(revisions: list[str]) -> str:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS alembic_version")
            if revisions:
                conn.execute("CREATE TABLE alembic_version (version_num varchar(64) PRIMARY KEY)")
                for revision in revisions:
                    conn.execute("INSERT INTO alembic_version VALUES (%s)", (revision,))
        return url

    yield at
    drop_database(name)


@pytest.mark.parametrize(("database", "schema", "redis_state", "code", "status"), decision_cases())
def test_ready_follows_the_decision_table(
    other_app, schema_database, database, schema, redis_state, code, status
):
    url = schema_database(SCHEMAS[schema]) if database == "reachable" else UNREACHABLE_DB
    overrides = {"redis_url": DEAD_REDIS} if redis_state == "down" else {}
    response = other_app(database_url=url, **overrides).test_client().get("/ready")
    assert (response.status_code, response.json["status"]) == (code, status), response.json
    checks = response.json["checks"]
    assert checks["redis"] == ("ok" if redis_state == "up" else "unavailable")
    if database == "unreachable":
        assert checks["database"] == "unavailable: OperationalError"
        assert checks["migrations"] == "unknown"
        assert "schema" not in response.json
    else:
        assert checks["database"] == "ok"
        expected = {"at head": "ok", "ahead (newer release)": "ahead"}.get(schema, "behind")
        assert checks["migrations"] == expected
        assert response.json["schema"] == {"database": SCHEMAS[schema], "release": [HEAD]}


def test_the_docs_show_the_decision_table():
    assert render_decisions() in (ROOT / "docs" / "deploy.md").read_text()
    assert {row[3] for row in DECISIONS} == {200, 503}


def test_ready_answers_ok_with_every_check_when_all_is_well(client):
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json["status"] == "ok"
    assert response.json["checks"] == {"database": "ok", "migrations": "ok", "redis": "ok"}


def test_a_readiness_probe_logs_nothing_of_its_own(client, caplog):
    """Probes come every few seconds from every pod: at INFO, production's level, only the
    access line may record one."""
    with caplog.at_level(logging.INFO):
        assert client.get("/ready").status_code == 200
    assert [r.name for r in caplog.records if not r.name.startswith("gatehouse.access")] == []


def test_ready_is_503_one_revision_behind(other_app, schema_database):
    previous = _script().get_revision(HEAD).down_revision
    assert isinstance(previous, str)
    app = other_app(database_url=schema_database([previous]))
    response = app.test_client().get("/ready")
    assert response.status_code == 503
    assert response.json["checks"]["migrations"] == "behind"
    assert response.json["schema"]["database"] == [previous]


def test_ready_stays_200_in_production_when_redis_is_down(other_app):
    """A Redis blip must not take every pod out of the Service: the API degrades without it."""
    app = other_app(env="production", redis_url=DEAD_REDIS, ratelimit_enabled=True)
    response = app.test_client().get("/ready")
    assert response.status_code == 200
    assert response.json["status"] == "degraded"
    assert response.json["checks"]["redis"] == "unavailable"


def test_redis_down_goes_to_the_metrics_not_to_readiness(other_app):
    app = other_app(redis_url=DEAD_REDIS)  # /metrics on the API's port: outside production only
    client = app.test_client()
    assert client.get("/ready").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "gatehouse_redis_up 0.0" in metrics.text
    assert "gatehouse_database_up 1.0" in metrics.text


def test_ready_reports_redis_not_configured_outside_production(other_app):
    app = other_app(redis_url=None)
    response = app.test_client().get("/ready")
    assert response.status_code == 200
    assert response.json["status"] == "ok"
    assert response.json["checks"]["redis"] == "not configured"


def test_schema_state_reads_the_scripts_of_this_release():
    script = _script()
    previous = script.get_revision(HEAD).down_revision
    assert schema_state({HEAD}, script) == "ok"
    assert schema_state(set(), script) == "behind"
    assert schema_state({previous}, script) == "behind"  # type: ignore[arg-type]
    assert schema_state({NEWER_RELEASE}, script) == "ahead"
    # a newer release that merged a branch of its own beside this head
    assert schema_state({HEAD, NEWER_RELEASE}, script) == "ahead"


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
