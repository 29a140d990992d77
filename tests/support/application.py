"""The app of the tests: one per test process on its migrated database, other apps on the same
database with some settings changed, and truncation between tests so that each starts empty."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import text

from jobs.settings import JobsSettings
from tests.support.database import signing_keys_json
from webapp.config import Settings
from webapp.extensions import db
from webapp.factory import create_app

TABLES = (
    "refresh_tokens, sessions, one_time_tokens, audit_events, email_deliveries, outbox_messages, "
    "idempotency_records, api_keys, mfa_recovery_codes, totp_factors, oauth_authorization_codes, "
    "oauth_browser_sessions, oauth_consents, oauth_clients, users, domain_events, "
    "webhook_attempts, webhook_endpoints"
)
JOBS_FIELDS = frozenset(JobsSettings.model_fields)


@pytest.fixture(scope="session")
def base_settings(database_url: str, redis_url: str) -> Settings:
    return Settings().with_overrides(
        env="test",
        # Random: apps built with env="production" must pass its randomness checks.
        secret_key=secrets.token_urlsafe(48),
        database_url=database_url,
        redis_url=redis_url,
        jwt_keys=signing_keys_json(),
        # An explicit keyring, as production requires (apps built with env="production" reuse it).
        encryption_keys="test:" + base64.b64encode(bytes(range(32))).decode(),
        ratelimit_enabled=False,
        # A loaded CI machine can delay a healthy Redis past production's fail-fast timeout.
        redis_timeout=3.0,
        public_base_url="https://gatehouse.test",
        # Every request's access line, so that tests can look for the line of a successful one
        # (production samples those: ACCESS_LOG_SAMPLE).
        access_log_sample=1.0,
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
        jobs = {name: overrides.pop(name) for name in list(overrides) if name in JOBS_FIELDS}
        return create_app(
            base_settings.with_overrides(**overrides), JobsSettings().with_overrides(**jobs)
        )

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
    application.extensions["gatehouse_redis"].forget_local()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def app_ctx(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield
        db.session.remove()
