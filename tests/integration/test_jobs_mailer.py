"""SMTP configuration, authentication, templates and the development mail sink."""

from __future__ import annotations

import io
import logging
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from jobs import devsink, emails
from jobs.delivery import Result
from jobs.mailer import Refused, SmtpConfig
from jobs.settings import JobsSettings
from tests.support.jobs import EMAIL_PAYLOADS, FAST_JOBS
from tests.support.smtp import SmtpSink
from tests.support.waiting import free_port
from webapp.config import ConfigError, Settings


def test_smtp_settings_come_from_the_url_with_explicit_credentials_taking_precedence():
    plain = SmtpConfig.from_settings(
        JobsSettings(smtp_url="smtp://mailer%40corp:s%3Acret@mail.example.com:2525", smtp_timeout=3)
    )
    assert (plain.host, plain.port, plain.implicit_tls, plain.starttls) == (
        "mail.example.com",
        2525,
        False,
        False,
    )
    assert (plain.username, plain.password, plain.timeout) == ("mailer@corp", "s:cret", 3)
    tls = SmtpConfig.from_settings(
        JobsSettings(
            smtp_url="smtps://mail.example.com",
            smtp_starttls=True,
            smtp_username="u",
            smtp_password="p",
        )
    )
    assert (tls.port, tls.implicit_tls, tls.starttls, tls.username) == (465, True, False, "u")
    starttls = SmtpConfig.from_settings(JobsSettings(smtp_url="smtp://relay", smtp_starttls=True))
    assert (starttls.port, starttls.starttls) == (25, True)


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"smtp_url": "http://mail.example.com"}, "SMTP_URL"),
        ({"smtp_url": "smtp://"}, "SMTP_URL"),
        ({"jobs_max_retries": -1}, "JOBS_MAX_RETRIES"),
        ({"jobs_retry_backoff": 0}, "JOBS_RETRY_BACKOFF"),
        ({"jobs_lease": 0}, "JOBS_LEASE"),
        ({"smtp_timeout": 0}, "SMTP_TIMEOUT"),
        ({"jobs_batch_size": 0}, "JOBS_BATCH_SIZE"),
        ({"jobs_worker_max_jobs": 0}, "JOBS_WORKER_MAX_JOBS"),
        ({"jobs_worker_max_memory_mb": 0}, "JOBS_WORKER_MAX_MEMORY_MB"),
    ],
)
def test_bad_job_settings_are_refused_naming_the_variable(overrides, variable):
    with pytest.raises(ConfigError, match=variable):
        JobsSettings().with_overrides(**overrides)


def test_job_settings_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("JOBS_MAX_RETRIES", "7")
    monkeypatch.setenv("JOBS_RETRY_BACKOFF", "2.5")
    monkeypatch.setenv("SMTP_URL", "smtp://relay.internal:587")
    monkeypatch.setenv("SMTP_STARTTLS", "true")
    monkeypatch.setenv("SMTP_BREAKER_FAIL_MAX", "3")
    monkeypatch.setenv("JOBS_WORKER_MAX_JOBS", "250")
    monkeypatch.setenv("JOBS_WORKER_MAX_MEMORY_MB", "300")

    settings = JobsSettings.from_env()

    assert (settings.jobs_worker_max_jobs, settings.jobs_worker_max_memory_mb) == (250, 300)

    assert (settings.jobs_max_retries, settings.jobs_retry_backoff) == (7, 2.5)
    assert (settings.smtp_url, settings.smtp_starttls, settings.smtp_breaker_fail_max) == (
        "smtp://relay.internal:587",
        True,
        3,
    )
    defaults = JobsSettings()
    assert (defaults.jobs_max_retries, defaults.jobs_retry_backoff) == (5, 10.0)


class _Authenticator:
    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            b"mailer",
            b"right-password",
        )
        return AuthResult(success=ok)


@pytest.fixture
def authenticating_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    port = free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        authenticator=_Authenticator(),
        auth_require_tls=False,
        auth_required=True,
    )
    controller.start()
    sink.url = f"smtp://mailer:right-password@127.0.0.1:{port}"
    yield sink
    controller.stop()


def test_credentials_in_the_smtp_url_authenticate_the_worker(
    make_app, app, authenticating_sink, queue_email, deliver_now
):
    gatehouse = make_app(smtp_url=authenticating_sink.url, **FAST_JOBS)
    assert deliver_now(gatehouse, queue_email("welcome")).result is Result.SENT
    assert len(authenticating_sink.wait_for(1)) == 1


def test_starttls_against_a_server_without_it_is_a_refusal_not_an_outage(
    make_app, app, smtp_sink, queue_email, deliver_now
):
    gatehouse = make_app(smtp_url=smtp_sink.url, smtp_starttls=True, **FAST_JOBS)
    outcome = deliver_now(gatehouse, queue_email("welcome"))
    assert outcome.result is Result.RETRY
    assert "STARTTLS" in outcome.detail


def test_an_smtp_refusal_keeps_the_servers_reply():
    refused = Refused(550, "5.1.1 No such user")
    assert str(refused) == "550 5.1.1 No such user"
    assert refused.code == 550


LINKED = sorted(name for name, payload in EMAIL_PAYLOADS.items() if "link" in payload)


@pytest.mark.parametrize("template", LINKED)
def test_every_template_renders_text_and_html_with_its_link(template):
    settings = Settings(public_base_url="https://id.example.com")
    payload = dict(EMAIL_PAYLOADS[template])

    rendered = emails.render(template, payload, recipient="ada@example.com", settings=settings)

    assert rendered.subject
    assert "\n" not in rendered.subject
    assert payload["link"] in rendered.text
    assert f'href="{payload["link"]}"' in rendered.html
    assert "Hello Ada" in rendered.text
    assert "ada@example.com" in rendered.html


def test_html_emails_escape_what_users_typed():
    payload = {**EMAIL_PAYLOADS["welcome"], "name": "<script>alert(1)</script>"}
    rendered = emails.render("welcome", payload, recipient="a@example.com", settings=Settings())
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;" in rendered.html
    assert "<script>" in rendered.text  # plain text is not HTML


def test_an_unknown_template_is_refused():
    with pytest.raises(ValueError, match="unknown email template"):
        emails.render("newsletter", {}, recipient="a@example.com", settings=Settings())


def test_the_message_id_depends_only_on_the_idempotency_key():
    first = emails.message_id_for("verify_email:1", "Gatehouse <no-reply@id.example.com>")
    assert first == emails.message_id_for("verify_email:1", "no-reply@id.example.com")
    assert first.endswith("@id.example.com>")
    assert first != emails.message_id_for("verify_email:2", "no-reply@id.example.com")


def test_the_development_sink_prints_each_email_with_its_link():
    out = io.StringIO()
    port = free_port()
    controller = devsink.start("127.0.0.1", port, out)
    try:
        message = EmailMessage()
        message["From"] = "no-reply@gatehouse.local"
        message["To"] = "ada@example.com"
        message["Subject"] = "Confirm your email address"
        message.set_content("Open https://gatehouse.test/verify-email?token=abc")
        message.add_alternative("<p>html</p>", subtype="html")
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.send_message(message)
    finally:
        controller.stop()

    printed = out.getvalue()
    assert "Subject: Confirm your email address" in printed
    assert "To: ada@example.com" in printed
    assert "https://gatehouse.test/verify-email?token=abc" in printed
    assert "<p>html</p>" not in printed


def test_the_breaker_logs_when_it_opens(make_app, app, queue_email, caplog, deliver_now):
    away = make_app(
        smtp_url=f"smtp://127.0.0.1:{free_port()}",
        **{**FAST_JOBS, "smtp_breaker_fail_max": 1, "smtp_breaker_reset_timeout": 60.0},
    )
    with caplog.at_level(logging.WARNING, logger="jobs.mailer"):
        assert deliver_now(away, queue_email("welcome")).result is Result.POSTPONED
    assert "smtp circuit breaker closed -> open" in caplog.text


def test_a_message_with_no_tries_left_configured_dies_on_its_first_refusal(
    make_app, app, smtp_sink, queue_email, deliver_now
):
    smtp_sink.reply = "550 no"
    strict = make_app(smtp_url=smtp_sink.url, **{**FAST_JOBS, "jobs_max_retries": 0})
    outcome = deliver_now(strict, queue_email("verify_email"))
    assert outcome.result is Result.DEAD
    assert outcome.detail.startswith("refused: 550")
