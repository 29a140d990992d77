"""Shared fixtures: one app and one real PostgreSQL database per test process (xdist worker),
a Redis database per worker, and truncation between tests so that each starts empty.

`TEST_DATABASE_URL` / `TEST_REDIS_URL` name the servers (defaults: the local ones);
`scripts/testenv.py` starts throwaway servers where none is reachable.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
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

from jobs.settings import JobsSettings, jobs_settings_of
from webapp.config import Settings, settings_of
from webapp.extensions import db
from webapp.factory import create_app
from webapp.outbox.models import OutboxMessage
from webapp.security.keys import KeyRing, generate_jwk

BASE_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
BASE_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/1")
# Lets several checkouts or agents share one server without touching each other's data.
DB_NAME_PREFIX = os.environ.get("TEST_DB_NAME_PREFIX", "gatehouse_test")
STRONG_PASSWORD = "pale-Orbit-93-lantern"
JOBS_FIELDS = frozenset(JobsSettings.model_fields)
TABLES = (
    "refresh_tokens, sessions, one_time_tokens, audit_events, email_deliveries, outbox_messages, "
    "idempotency_records, api_keys, mfa_recovery_codes, totp_factors, users"
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
        # Random: apps built with env="production" must pass its randomness checks.
        secret_key=secrets.token_urlsafe(48),
        database_url=database_url,
        redis_url=redis_url,
        jwt_keys=test_keys_json(),
        # An explicit keyring, as production requires (apps built with env="production" reuse it).
        encryption_keys="test:" + base64.b64encode(bytes(range(32))).decode(),
        ratelimit_enabled=False,
        # A loaded CI machine can delay a healthy Redis past production's fail-fast timeout.
        redis_timeout=3.0,
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
    """Another app on the same database with some settings changed (rate limits, TTLs...):
    webapp's `Settings` and the jobs package's `JobsSettings` alike, each by its field names."""

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


def log_in(client: FlaskClient, account: Account) -> None:
    """Sign `account` in with its password; its access and refresh tokens are set."""
    response = client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": account.password}
    )
    assert response.status_code == 200, response.get_json()
    account.access_token = response.json["access_token"]
    account.refresh_token = response.json["refresh_token"]


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
            log_in(client, account)
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
    """The outbox messages written so far (optionally of one template), oldest first, their
    payloads opened (secret fields decrypted, as a worker sees them; the rows stay untouched)."""
    from webapp.outbox.sealing import open_payload

    def read(template: str | None = None, recipient: str | None = None) -> list[OutboxMessage]:
        with app.app_context():
            query = select(OutboxMessage).order_by(OutboxMessage.created_at)
            if template:
                query = query.where(OutboxMessage.template == template)
            if recipient:
                query = query.where(OutboxMessage.recipient == recipient)
            rows = list(db.session.scalars(query))
            db.session.expunge_all()
            for row in rows:
                row.payload = open_payload(row.payload, row.id)
            db.session.remove()
            return rows

    return read


# --- Background jobs: a real SMTP server, RQ on the test Redis --------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ReceivedEmail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> Any:
        from email import message_from_bytes, policy

        return message_from_bytes(self.raw, policy=policy.default)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def text(self) -> str:
        return str(self.message.get_body(preferencelist=("plain",)).get_content())

    @property
    def html(self) -> str:
        return str(self.message.get_body(preferencelist=("html",)).get_content())

    @property
    def link(self) -> str:
        import re

        match = re.search(r"https?://\S+", self.text)
        assert match, self.text
        return match.group(0)


class SmtpSink:
    """An aiosmtpd handler that keeps what it accepts. `reply` refuses mail when set to a 4xx/5xx
    line; `hold` (an Event) keeps each DATA waiting until set — a client that dies meanwhile
    cancels it, so nothing is recorded, as with a server that never said 250."""

    def __init__(self) -> None:
        import threading

        self.url = ""
        self.received: list[ReceivedEmail] = []
        self.attempts = 0
        self.abandoned = 0
        self.reply = "250 2.0.0 OK"
        self.delay = 0.0
        self.hold: threading.Event | None = None
        self.entered = threading.Event()
        self._changed = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        with self._changed:
            self.attempts += 1
        self.entered.set()
        try:
            if self.hold is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.hold.wait, 30)
            if self.delay:
                await asyncio.sleep(self.delay)
        except asyncio.CancelledError:  # the client went away before the reply
            with self._changed:
                self.abandoned += 1
                self._changed.notify_all()
            raise
        reply = self.reply
        if reply.startswith("250"):
            with self._changed:
                self.received.append(
                    ReceivedEmail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
                )
                self._changed.notify_all()
        return reply

    def wait_for(self, count: int, timeout: float = 30.0) -> list[ReceivedEmail]:
        """Wait until `count` emails arrived (fails after `timeout` seconds)."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.received) >= count, timeout)
            assert arrived, f"{len(self.received)} of {count} emails arrived in {timeout}s"
            return list(self.received)

    def wait_until(self, condition: Callable[[SmtpSink], bool], timeout: float = 30.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: condition(self), timeout), "sink condition"

    def to(self, recipient: str) -> list[ReceivedEmail]:
        return [m for m in list(self.received) if recipient.lower() in m.rcpt_tos]


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on a free 127.0.0.1 port."""
    from aiosmtpd.controller import Controller

    sink = SmtpSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    sink.url = f"smtp://127.0.0.1:{port}"
    yield sink
    if sink.hold is not None:
        sink.hold.set()
    controller.stop()


FAST_JOBS = {
    "smtp_timeout": 5.0,
    "jobs_retry_backoff": 0.01,
    "jobs_max_retries": 2,
    "jobs_dispatch_interval": 0.05,
    "smtp_breaker_reset_timeout": 0.5,
}


@pytest.fixture
def jobs_app(app: Flask, make_app: Callable[..., Flask], smtp_sink: SmtpSink) -> Iterator[Flask]:
    """The app (on the migrated test database), sending through `smtp_sink`, with retries in
    milliseconds."""
    application = make_app(smtp_url=smtp_sink.url, **FAST_JOBS)
    yield application
    with application.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


@pytest.fixture
def rq_connection(redis_url: str) -> redis.Redis:
    """RQ's Redis: the test process's own database, never db 0."""
    from jobs import queues

    return queues.connect(redis_url)


@pytest.fixture
def work_jobs() -> Callable[..., int]:
    """Dispatch and run jobs in-process (RQ's SimpleWorker, burst) on the app's Redis until the
    outbox has nothing due or in flight, or `timeout` passes; returns how many passes ran."""
    import signal
    import time

    from sqlalchemy import func

    from jobs import queues, runtime
    from jobs.dispatcher import dispatch
    from jobs.worker import build_worker
    from webapp.outbox.models import ENQUEUED, PENDING

    def run(application: Flask, timeout: float = 40.0, until_idle: bool = True) -> int:
        settings, jobs_settings = settings_of(application), jobs_settings_of(application)
        runtime.bind_app(application)
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        deadline = time.monotonic() + timeout
        passes = 0
        try:
            while True:
                passes += 1
                with application.app_context():
                    dispatch(db.session, queues.connect(settings.redis_url), jobs_settings)
                    db.session.remove()
                build_worker(settings).work(burst=True)
                with application.app_context():
                    open_rows = db.session.scalar(
                        select(func.count())
                        .select_from(OutboxMessage)
                        .where(OutboxMessage.status.in_((PENDING, ENQUEUED)))
                    )
                    db.session.remove()
                if not until_idle or not open_rows or time.monotonic() > deadline:
                    return passes
                time.sleep(0.02)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)

    return run


EMAIL_PAYLOADS: dict[str, dict[str, Any]] = {
    "verify_email": {
        "name": "Ada",
        "token": "tok-verify",
        "link": "https://gatehouse.test/verify-email?token=tok-verify",
        "expires_at": "2030-01-01T00:00:00+00:00",
    },
    "password_reset": {
        "name": "Ada",
        "token": "tok-reset",
        "link": "https://gatehouse.test/reset-password?token=tok-reset",
        "expires_at": "2030-01-01T00:00:00+00:00",
    },
    "new_login": {
        "name": "Ada",
        "ip": "203.0.113.7",
        "user_agent": "Test Browser",
        "at": "2030-01-01T00:00:00+00:00",
        "link": "https://gatehouse.test/sessions",
    },
    "welcome": {"name": "Ada", "link": "https://gatehouse.test"},
    "email_change": {
        "name": "Ada",
        "token": "tok-change",
        "link": "https://gatehouse.test/verify-email?token=tok-change",
        "expires_at": "2030-01-01T00:00:00+00:00",
    },
}


@pytest.fixture
def queue_email(app: Flask) -> Callable[..., uuid.UUID]:
    """Write one message to the outbox, as a request would (committed); returns its id."""
    from webapp.context import Origin
    from webapp.outbox import service as outbox_service

    def write(
        template: str = "verify_email",
        *,
        recipient: str | None = None,
        request_id: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> uuid.UUID:
        with app.app_context():
            message = outbox_service.enqueue(
                db.session,
                Origin(request_id=request_id),
                template=template,
                recipient=recipient or f"{uuid.uuid4().hex[:8]}@example.com",
                idempotency_key=f"test:{uuid.uuid4()}",
                payload=payload if payload is not None else dict(EMAIL_PAYLOADS[template]),
            )
            db.session.commit()
            message_id = message.id
            db.session.remove()
        return message_id

    return write


@pytest.fixture
def deliver_now() -> Callable[..., Any]:
    """Deliver outbox messages in-process, as a job would; returns the outcome(s)."""
    from jobs.delivery import Deliverer
    from jobs.tasks import mailer_for

    def deliver(application: Flask, message_id: uuid.UUID, *, batch: bool = False) -> Any:
        with application.app_context():
            settings, jobs_settings = settings_of(application), jobs_settings_of(application)
            mailer = mailer_for(settings, jobs_settings)
            deliverer = Deliverer(db.session, mailer, settings, jobs_settings, batch=batch)
            [outcome] = deliverer.deliver([message_id])
            db.session.remove()
            return outcome

    return deliver


@pytest.fixture
def throwaway_redis() -> Iterator[Any]:
    """A Redis server of this test's own (`tests.redis_server.ThrowawayRedis`), stopped after it."""
    from tests.redis_server import ThrowawayRedis

    server = ThrowawayRedis()
    server.start()
    yield server
    server.stop()
