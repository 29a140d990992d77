"""`/health` (liveness: touches nothing), `/ready` (this pod can serve: database reachable, schema
at or ahead of this release; see `webapp.ops.readiness`), `/.well-known/jwks.json`, and the Swagger
UI assets served locally (works air-gapped)."""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Response, jsonify, send_from_directory

from webapp.auth.tokens import keyring
from webapp.config import current_settings
from webapp.extensions import db, limiter, redis_store
from webapp.ops import readiness

bp = Blueprint("ops", __name__)
SWAGGER_DIST = Path(flask_swagger_ui.__file__).parent / "dist"
OWN_STATIC = Path(__file__).resolve().parent.parent / "static"


@bp.get("/health")
@limiter.exempt
def health() -> Response:
    return jsonify(status="ok")


@bp.get("/ready")
@limiter.exempt
def ready() -> tuple[Response, int]:
    if redis_store.client is None:
        redis_state = "not configured"
    else:
        redis_state = "ok" if redis_store.ping() else "unavailable"
    answer = readiness.check(db.session, redis_state)
    return jsonify(answer.body()), 200 if answer.ready else 503


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
