"""The two log formats: JSON lines (production, tests) and readable text lines (development),
both behind the same correlation ids and secret redaction."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

import observability.logging as log_setup
from observability.context import request_id_var

SECRET = "hunter2-Correct-Horse"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


@pytest.fixture
def emit() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own and the buffer its handler (built like the root's: `use`) fills."""
    buffer = io.StringIO()
    logger = logging.getLogger("gatehouse.test-formats")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, buffer
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


def use(logger: logging.Logger, buffer: io.StringIO, fmt: str) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.addHandler(log_setup.log_handler(buffer, fmt))


def test_a_text_line_has_time_level_logger_request_id_message_and_extras(emit):
    logger, buffer = emit
    use(logger, buffer, "text")
    token = request_id_var.set("req-1234")
    try:
        logger.warning("signed in as %s", "ada@example.com", extra={"status": 201, "route": "/x"})
    finally:
        request_id_var.reset(token)

    line = buffer.getvalue()
    assert line.count("\n") == 1
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} WARNING gatehouse\.test-formats \[req-1234\] "
        r"signed in as ada@example\.com status=201 route=/x\n",
        line,
    ), line


def test_a_text_line_carries_no_secret(emit):
    logger, buffer = emit
    use(logger, buffer, "text")

    logger.info(
        "Authorization: Bearer %s", JWT, extra={"password": SECRET, "payload": {"token": SECRET}}
    )
    try:
        raise ValueError(f"password={SECRET}")
    except ValueError:
        logger.exception("failed")

    output = buffer.getvalue()
    assert SECRET not in output
    assert JWT not in output
    assert "password=[REDACTED]" in output
    assert "Traceback" in output


def test_a_text_line_escapes_line_breaks_of_its_input(emit):
    logger, buffer = emit
    use(logger, buffer, "text")

    logger.info("name %s", "x\n2026-01-01 00:00:00,000 CRITICAL forged", extra={"note": "a\r\nb"})

    assert buffer.getvalue().count("\n") == 1
    assert "x\\n2026-01-01" in buffer.getvalue()
    assert "note=a\\r\\nb" in buffer.getvalue()


def test_a_json_line_is_one_object_with_the_same_fields_and_no_secret(emit):
    logger, buffer = emit
    use(logger, buffer, "json")

    logger.info("login", extra={"password": SECRET, "status": 200})

    record = json.loads(buffer.getvalue())
    assert record["level"] == "INFO"
    assert record["logger"] == "gatehouse.test-formats"
    assert record["message"] == "login"
    assert record["status"] == 200
    assert record["password"] == log_setup.REDACTED


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="json, text"):
        log_setup.formatter("yaml")


def test_gunicorn_s_own_lines_follow_the_format_and_are_redacted(capfd: pytest.CaptureFixture[str]):
    from gunicorn.config import Config

    from observability.gunicorn_logging import JsonLogger, TextLogger

    reset = "/api/v1/auth/password-reset/confirm?token=" + "t" * 43
    TextLogger(Config()).warning(f"Invalid request: 'GET {reset}'")
    text = capfd.readouterr().err
    JsonLogger(Config()).warning(f"Invalid request: 'GET {reset}'")
    as_json = capfd.readouterr().err

    assert re.search(r" WARNING gunicorn\.error \[-\] Invalid request: 'GET /api", text), text
    assert json.loads(as_json)["message"].startswith("Invalid request: 'GET /api")
    assert "t" * 43 not in text + as_json
