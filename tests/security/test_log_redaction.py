"""No secret reaches a log line: not through a database error's SQL parameters
(`password_hash` among them), nor under a field name such as `password_hash`.

Every engine hides SQL parameters from exception text (`hide_parameters`), and the log filter
redacts the value of every field whose name holds password, secret, token, hash or key (ids
excepted) — in messages, exception text and `extra` fields, nested ones included — and any
Argon2/bcrypt hash or SQL parameter dump, whatever logger (gunicorn's too) writes it.

OWASP ASVS 4.0.3: V7.1.1 (no credentials or payment details in logs; session tokens only in an
irreversible form), V7.1.2 (no other sensitive data in logs), V7.4.1 (a generic error shown,
the detail logged without secrets), V8.3.4 (sensitive data identified and handled accordingly).
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError

import observability.logging as log_setup
from webapp.extensions import db
from webapp.security import passwords
from webapp.users.models import User

PASSWORD = "tidal-Copper-42-orchard"


@pytest.fixture
def log_output() -> Iterator[Callable[[], str]]:
    """Everything the production handler (its formatter and filters) writes, as text."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    handler = log_setup.json_handler(buffer)
    handler.set_name("test-redaction")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield buffer.getvalue
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def password_hash(app: Flask) -> str:
    with app.app_context():
        return passwords.hash_password(PASSWORD)


def _insert_failing(password_hash: str) -> None:
    """An INSERT whose parameters hold a password hash, refused by the driver (a NUL in text)."""
    db.session.execute(
        insert(User).values(
            id=uuid.uuid4(),
            email=f"nul-{uuid.uuid4().hex[:6]}@example.com",
            name="broken\x00name",
            password_hash=password_hash,
            role="user",
        )
    )


def test_every_engine_hides_sql_parameters(make_app: Callable[..., Flask], database_url: str):
    app = make_app(database_replica_url=database_url)
    with app.app_context():
        assert set(db.engines) == {None, "replica"}
        for engine in db.engines.values():
            assert engine.hide_parameters, engine


def test_a_database_error_logs_no_parameter_and_no_hash(
    app: Flask, password_hash: str, log_output: Callable[[], str]
):
    with app.app_context():
        with pytest.raises(DBAPIError) as caught:
            _insert_failing(password_hash)
        db.session.rollback()
        db.session.remove()
    text = str(caught.value)
    assert password_hash not in text
    assert "parameters hidden" in text
    logging.getLogger("gatehouse.test").exception("insert failed")
    output = log_output()
    assert "insert failed" in output
    assert password_hash not in output
    assert "$argon2" not in output


def test_an_unhandled_database_error_in_a_request_logs_no_hash(
    make_app: Callable[..., Flask], password_hash: str, log_output: Callable[[], str]
):
    app = make_app()

    @app.post("/db-error-for-test")
    def db_error() -> str:
        _insert_failing(password_hash)
        return "unreachable"

    response = app.test_client().post("/db-error-for-test")
    assert response.status_code == 500
    assert password_hash not in response.get_data(as_text=True)
    output = log_output()
    assert "unhandled error" in output
    assert "Traceback" in output
    assert password_hash not in output
    assert PASSWORD not in output


def test_sensitive_names_are_redacted_in_messages_and_nested_extra_fields(
    password_hash: str, log_output: Callable[[], str]
):
    api_key_id = str(uuid.uuid4())
    log = logging.getLogger("gatehouse.test")
    log.warning("params %s", {"email": "a@example.com", "password_hash": password_hash})
    log.warning("row: password_hash=%s; client_secret: 's3cr3t-value'", "plain-hash-value")
    log.warning(
        "a bare hash %s and a dump [parameters: ('x', 'y-positional-secret')]", "$2b$12$" + "a" * 53
    )
    log.warning("bare argon2 %s", password_hash)
    log.info(
        "nested",
        extra={
            "payload": {
                "user": {"password": PASSWORD, "name": "visible-name"},
                "refresh_token": "rt-value-secret",
                "items": [{"api_key": "ak-value-secret"}, "eyJhbGciOi.eyJzdWIiOi.c2ln"],
            },
            "webhook_signing_key": "wsk-value-secret",
            "totp_secret_hash": "tsh-value-secret",
            "api_key_id": api_key_id,
            "key_id": "kid-visible",
            "token_ids": ["tid-visible"],
        },
    )
    output = log_output()
    lines = [json.loads(line) for line in output.splitlines()]
    for leak in (
        password_hash,
        "$argon2",
        "plain-hash-value",
        "s3cr3t-value",
        "y-positional-secret",
        "$2b$12$",
        PASSWORD,
        "rt-value-secret",
        "ak-value-secret",
        "eyJhbGciOi",
        "wsk-value-secret",
        "tsh-value-secret",
    ):
        assert leak not in output, leak
    nested = lines[-1]
    assert nested["payload"]["user"]["name"] == "visible-name"
    assert nested["payload"]["user"]["password"] == log_setup.REDACTED
    assert (nested["api_key_id"], nested["key_id"]) == (api_key_id, "kid-visible")
    assert nested["token_ids"] == ["tid-visible"]


def test_the_caller_s_extra_object_is_not_modified(log_output: Callable[[], str]):
    payload: dict[str, Any] = {"password": PASSWORD}
    logging.getLogger("gatehouse.test").info("x", extra={"payload": payload})
    assert payload == {"password": PASSWORD}
    assert PASSWORD not in log_output()


def test_gunicorn_s_own_lines_are_redacted(capfd: pytest.CaptureFixture[str]):
    from gunicorn.config import Config

    from observability.gunicorn_logging import JsonLogger

    logger = JsonLogger(Config())
    reset = "/api/v1/auth/password-reset/confirm?token=" + "t" * 43
    logger.warning(f"Invalid request from ip=192.0.2.1: Invalid Request Line 'GET {reset}'")
    try:
        raise RuntimeError("password_hash='" + "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA" + "'")
    except RuntimeError:
        logger.exception("Error handling request")
    err = capfd.readouterr().err
    assert "Invalid request" in err
    assert "Error handling request" in err
    assert "t" * 43 not in err
    assert "$argon2id" not in err
