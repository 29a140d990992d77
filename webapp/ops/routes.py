"""`/health` (liveness: touches nothing), `/ready` (database, Redis, migrations at head),
`/.well-known/jwks.json`, and the Swagger UI assets served locally (works air-gapped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flask_swagger_ui
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Blueprint, Response, jsonify, send_from_directory
from sqlalchemy import text

from webapp.auth.tokens import keyring
from webapp.config import current_settings
from webapp.extensions import db, limiter, redis_store

bp = Blueprint("ops", __name__)
SWAGGER_DIST = Path(flask_swagger_ui.__file__).parent / "dist"
OWN_STATIC = Path(__file__).resolve().parent.parent / "static"
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


@bp.get("/health")
@limiter.exempt
def health() -> Response:
    return jsonify(status="ok")


def _migration_heads() -> tuple[set[str], set[str]]:
    script = ScriptDirectory(str(MIGRATIONS))
    with db.engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    return current, set(script.get_heads())


@bp.get("/ready")
@limiter.exempt
def ready() -> tuple[Response, int]:
    checks: dict[str, Any] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
        current, expected = _migration_heads()
        checks["migrations"] = "ok" if current == expected else f"at {sorted(current)}"
    except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
        checks["database"] = f"unavailable: {exc.__class__.__name__}"
        checks.setdefault("migrations", "unknown")
    finally:
        db.session.rollback()
    if redis_store.client is None:
        checks["redis"] = "not configured"
    else:
        checks["redis"] = "ok" if redis_store.ping() else "unavailable"
    healthy = all(v in ("ok", "not configured") for v in checks.values())
    if current_settings().is_production and checks["redis"] != "ok":
        healthy = False
    body = {"status": "ok" if healthy else "unavailable", "checks": checks}
    return jsonify(body), 200 if healthy else 503


@bp.get("/.well-known/jwks.json")
@limiter.exempt
def jwks() -> Response:
    response = jsonify(keyring().public_jwks())
    max_age = current_settings().jwks_max_age
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    return response


@bp.get("/api/docs/assets/<path:filename>")
@limiter.exempt
def docs_assets(filename: str) -> Response:
    directory = OWN_STATIC if (OWN_STATIC / filename).is_file() else SWAGGER_DIST
    response = send_from_directory(directory, filename, max_age=3600)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
