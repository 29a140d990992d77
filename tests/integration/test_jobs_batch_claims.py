"""Claims taken for a whole job at once, records written one send at a time, and the one SMTP
connection a job process keeps between jobs — each against the real SMTP sink, PostgreSQL and
Redis."""

from __future__ import annotations

import email
import socket
import uuid
from datetime import timedelta
from email import policy

import pytest
from sqlalchemy import event, select

from jobs import emails, mailer
from jobs.delivery import Deliverer, Result
from jobs.settings import JobsSettings, jobs_settings_of
from jobs.tasks import mailer_for
from tests.support.jobs import EMAIL_PAYLOADS, FAST_JOBS, hold_claim
from tests.support.waiting import free_port
from webapp.config import Settings, settings_of
from webapp.db import utcnow
from webapp.extensions import db
from webapp.outbox.models import DELIVERED, FAILED, PENDING, SENDING, SENT, EmailDelivery
from webapp.outbox.models import OutboxMessage as Message


def _deliver(application, ids, **kwargs):
    with application.app_context():
        settings, jobs_settings = settings_of(application), jobs_settings_of(application)
        mailer = mailer_for(settings, jobs_settings)
        try:
            return Deliverer(db.session, mailer, settings, jobs_settings, **kwargs).deliver(ids)
        finally:
            db.session.remove()


def _rows(application, model, ids):
    column = model.id if model is Message else model.message_id
    with application.app_context():
        rows = {
            (row.id if model is Message else row.message_id): row
            for row in db.session.scalars(select(model).where(column.in_(ids)))
        }
        db.session.expunge_all()
        db.session.remove()
    return [rows.get(i) for i in ids]


def test_a_batch_claims_its_messages_in_one_commit_and_records_each_right_after_its_send(
    jobs_app, smtp_sink, queue_email
):
    ids = [queue_email("welcome", recipient=f"batch{i}@example.com") for i in range(5)]
    commits = []
    with jobs_app.app_context():
        engine = db.engine
    listener = lambda conn: commits.append(len(smtp_sink.received))  # noqa: E731
    event.listen(engine, "commit", listener)
    try:
        outcomes = _deliver(jobs_app, ids, batch=True)
    finally:
        event.remove(engine, "commit", listener)

    assert [o.result for o in outcomes] == [Result.SENT] * 5
    # One commit for the five claims before any send, then one per email once the server has it.
    assert commits == [0, 1, 2, 3, 4, 5]
    deliveries = _rows(jobs_app, EmailDelivery, ids)
    assert all(d.status == DELIVERED and d.send_attempts == 1 for d in deliveries)
    assert all(m.status == SENT for m in _rows(jobs_app, Message, ids))


def test_a_live_claim_inside_a_batch_postpones_that_message_only(jobs_app, smtp_sink, queue_email):
    ids = [queue_email("welcome", recipient=f"busy{i}@example.com") for i in range(3)]
    until = utcnow() + timedelta(seconds=120)
    hold_claim(jobs_app, ids[1], until)

    outcomes = _deliver(jobs_app, ids, batch=True)

    assert [o.result for o in outcomes] == [Result.SENT, Result.BUSY, Result.SENT]
    assert sorted(r for m in smtp_sink.received for r in m.rcpt_tos) == [
        "busy0@example.com",
        "busy2@example.com",
    ]
    busy = _rows(jobs_app, Message, ids)[1]
    assert (busy.status, busy.available_at, busy.attempts) == (PENDING, until, 0)


def test_a_server_gone_mid_batch_releases_the_claims_of_the_messages_not_tried(
    make_app, app, queue_email
):
    away = make_app(smtp_url=f"smtp://127.0.0.1:{free_port()}", **FAST_JOBS)
    ids = [queue_email("welcome") for _ in range(4)]

    outcomes = _deliver(away, ids, batch=True)

    assert [o.result for o in outcomes] == [Result.POSTPONED] * 4
    deliveries = _rows(away, EmailDelivery, ids)
    assert [(d.status, d.claimed_until) for d in deliveries] == [(FAILED, None)] * 4
    assert all(m.status == PENDING and m.attempts == 0 for m in _rows(away, Message, ids))


def test_a_batch_cut_short_frees_the_messages_it_had_not_tried(
    jobs_app, smtp_sink, queue_email, monkeypatch
):
    """An exception no send handles (the job's timeout, a shutdown) ends the batch: what was
    sent stays sent, the message in flight keeps its claim (the server may have it), and the
    rest are due again at once with their claims released."""
    ids = [queue_email("welcome", recipient=f"cut{i}@example.com") for i in range(4)]
    real_send = mailer.SmtpSession.send
    sends = []

    def send_then_stop(self, message):
        sends.append(message["To"])
        if len(sends) == 2:
            raise SystemExit("stopped mid-batch")
        return real_send(self, message)

    monkeypatch.setattr(mailer.SmtpSession, "send", send_then_stop)
    with pytest.raises(SystemExit):
        _deliver(jobs_app, ids, batch=True)
    started = utcnow()

    deliveries = _rows(jobs_app, EmailDelivery, ids)
    messages = _rows(jobs_app, Message, ids)
    assert (deliveries[0].status, messages[0].status) == (DELIVERED, SENT)
    assert deliveries[1].status == SENDING
    assert deliveries[1].claimed_until > started
    for delivery, message in zip(deliveries[2:], messages[2:], strict=True):
        assert (delivery.status, delivery.claimed_until) == (FAILED, None)
        assert message.status == PENDING
        assert message.available_at <= started
        assert message.attempts == 0


def test_a_job_process_sends_one_job_after_another_over_one_kept_connection(
    jobs_app, smtp_sink, queue_email
):
    first, second = queue_email("welcome"), queue_email("new_login")
    with jobs_app.app_context():
        kept = mailer_for(settings_of(jobs_app), jobs_settings_of(jobs_app))
    _deliver(jobs_app, [first])
    connection = kept._kept._smtp if kept._kept else None

    _deliver(jobs_app, [second])

    assert connection is not None
    assert kept._kept is not None
    assert kept._kept._smtp is connection
    assert len(smtp_sink.wait_for(2)) == 2


@pytest.fixture
def one_sent(jobs_app, queue_email) -> tuple[mailer.Mailer, mailer._SMTP, uuid.UUID]:
    """One email sent through this process's mailer: the mailer, the connection it kept, and
    a second message waiting."""
    first, second = queue_email("welcome"), queue_email("welcome")
    _deliver(jobs_app, [first])
    with jobs_app.app_context():
        kept = mailer_for(settings_of(jobs_app), jobs_settings_of(jobs_app))
    assert kept._kept is not None
    connection = kept._kept._smtp
    assert isinstance(connection, mailer._SMTP)
    return kept, connection, second


def test_a_kept_connection_the_server_dropped_is_reopened_and_the_email_sent_once(
    jobs_app, smtp_sink, one_sent
):
    kept, connection, second = one_sent
    connection.sock.shutdown(socket.SHUT_RDWR)  # gone, as after a server's idle timeout

    [outcome] = _deliver(jobs_app, [second])

    assert outcome.result is Result.SENT
    assert len(smtp_sink.wait_for(2)) == 2
    assert kept.breaker.current_state == "closed"
    assert _rows(jobs_app, Message, [second])[0].attempts == 0


def test_a_kept_connection_idle_too_long_is_closed_and_a_new_one_opened(
    jobs_app, smtp_sink, one_sent, monkeypatch
):
    kept, old, second = one_sent
    monkeypatch.setattr(mailer, "KEEP_IDLE", 0.0)

    _deliver(jobs_app, [second])

    assert old.sock is None  # closed (QUIT), not reused
    assert kept._kept is not None
    assert kept._kept._smtp is not None
    assert kept._kept._smtp is not old


def test_names_and_subjects_beyond_ascii_are_encoded_and_read_back():
    payload = {**EMAIL_PAYLOADS["welcome"], "name": "Zoë «Ω», Jr."}
    envelope = emails.Envelope("welcome", "zoe@example.com", "k:1", payload)

    message = emails.compose(envelope, Settings(), JobsSettings())
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))

    assert raw.isascii()  # 7-bit clean: no server needs 8BITMIME or SMTPUTF8 for it
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed["To"].addresses[0].display_name == "Zoë «Ω», Jr."
    assert parsed["To"].addresses[0].addr_spec == "zoe@example.com"
    assert "Hello Zoë «Ω», Jr." in parsed.get_body(("plain",)).get_content()
    assert "Zoë «Ω», Jr." in parsed.get_body(("html",)).get_content()
    assert parsed["Message-ID"] == emails.message_id_for("k:1", JobsSettings().mail_from)
    assert parsed["Auto-Submitted"] == "auto-generated"
