"""The baselines: the least a Flask JSON endpoint can cost under our gunicorn configuration, and
the least a login can cost in the same stack.

Served exactly like the API (`gunicorn -c gunicorn.conf.py bench.http.bare_app:app`) so the
difference between `GET /bare` and `GET /api/v1/users/me` is what Gatehouse itself adds:
middleware, token verification, the session/user lookup and serialization.

`observed_app()` (served as `bench.http.bare_app:observed_app()`) is the same `GET /bare` with the
observability production runs and the targets require switched on exactly as Gatehouse wires
it (`observability.init_app`: JSON access lines at the configured sampling, prometheus-flask-
exporter's HTTP metrics, tracing with the configured sampler and endpoint) and nothing else: the
floor under `/users/me` once those are paid for.

`POST /bare/login` does only the work no login can skip, with the libraries Gatehouse is built
on and its production engine options: read the JSON body, one SELECT of the password hash by
email, the Argon2 verification, one INSERT of a session row, the COMMIT, and an access token
signed with the current key of `JWT_KEYS_FILE` — no lockout counters, no audit event, no refresh
token, no metrics, logging or tracing. Its server CPU beyond one raw hash is the floor under the
login target of docs/benchmarks.md. It needs the benchmark's environment (`DATABASE_URL`,
`JWT_KEYS_FILE`) and its user; `GET /bare` needs nothing.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from flask import Flask, Response, jsonify, request
from sqlalchemy import Engine, create_engine, text

import observability
from webapp.config import sqlalchemy_url
from webapp.security.keys import KeyRing
from webapp.users.models import email_key

app = Flask(__name__)

_USER = text("SELECT id, password_hash FROM users WHERE email_normalized = :email_key")
_SESSION = text(
    "INSERT INTO sessions (id, user_id, created_at, last_used_at, auth_time, expires_at, ip, "
    "user_agent, remember_me) VALUES (:id, :user_id, :now, :now, :now, :expires_at, :ip, "
    ":user_agent, false)"
)


@functools.cache
def _engine() -> Engine:
    # Gatehouse's production engine options (webapp/factory.py) that cost per request.
    return create_engine(
        sqlalchemy_url(os.environ["DATABASE_URL"]),
        pool_size=5,
        pool_pre_ping=True,
        hide_parameters=True,
    )


@functools.cache
def _keys() -> KeyRing:
    return KeyRing.load(None, os.environ["JWT_KEYS_FILE"])


_hasher = PasswordHasher()


@app.get("/bare")
def bare() -> Response:
    return jsonify(status="ok", service="bare")


@app.post("/bare/login")
def bare_login() -> tuple[Response, int] | Response:
    body: dict[str, Any] = request.get_json()
    now = datetime.now(UTC)
    with _engine().connect() as conn:
        row = conn.execute(_USER, {"email_key": email_key(body["email"])}).one_or_none()
        try:
            if row is None:
                raise VerificationError
            _hasher.verify(row.password_hash, body["password"])
        except VerificationError:
            return jsonify(error="invalid credentials"), 401
        session_id = uuid.uuid4()
        conn.execute(
            _SESSION,
            {
                "id": session_id,
                "user_id": row.id,
                "now": now,
                "expires_at": now + timedelta(days=1),
                "ip": request.remote_addr,
                "user_agent": request.user_agent.string[:512],
            },
        )
        conn.commit()
    signing = _keys().signing_key
    issued = int(time.time())
    token = jwt.encode(
        {"sub": str(row.id), "sid": str(session_id), "iat": issued, "exp": issued + 900},
        signing.private_key,
        algorithm=signing.alg,
        headers={"kid": signing.kid},
    )
    return jsonify(access_token=token, token_type="Bearer", expires_in=900)


def observed_app() -> Flask:
    """`GET /bare` with production's observability; built on call, so that serving `app` loads
    no logging, metrics or tracing setup."""
    observed = Flask("observed")
    observed.add_url_rule("/bare", view_func=bare)
    observability.init_app(
        observed,
        log_level=os.environ.get("LOG_LEVEL", "INFO"),
        access_log_sample=float(os.environ.get("ACCESS_LOG_SAMPLE", "0.1")),
        access_log_slow_ms=float(os.environ.get("ACCESS_LOG_SLOW_MS", "100")),
        metrics_port=None,
        otel_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
    )
    return observed
