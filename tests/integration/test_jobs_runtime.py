"""The pieces around the jobs: the dispatcher thread, the app a job runs in, the dev mail sink."""

from __future__ import annotations

import os
import signal
import smtplib
import threading
import time
from email.message import EmailMessage

from jobs import devsink, runtime
from jobs.dispatcher import DispatcherThread
from tests.conftest import free_port
from webapp.outbox.models import ENQUEUED


def test_the_dispatcher_thread_moves_new_messages_to_their_queue_until_stopped(
    jobs_app, rq_connection, queue_email, outbox
):
    from rq import Queue

    thread = DispatcherThread(jobs_app, rq_connection)
    thread.start()
    try:
        queue_email("verify_email")
        deadline = time.monotonic() + 30
        while outbox()[0].status != ENQUEUED:
            assert time.monotonic() < deadline, "the dispatcher thread did not enqueue"
            time.sleep(0.05)
    finally:
        thread.stop()

    assert not thread.is_alive()
    assert Queue("high", connection=rq_connection).count == 1


def test_jobs_outside_the_worker_build_their_app_from_the_environment(
    monkeypatch, database_url, redis_url, app
):
    from tests.conftest import test_keys_json as signing_keys

    monkeypatch.setattr(runtime, "_app", None)
    monkeypatch.setenv("GATEHOUSE_ENV", "test")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("JWT_KEYS", signing_keys())

    built = runtime.app()

    assert built.config["GATEHOUSE"].database_url == database_url
    assert runtime.app() is built
    runtime._forget_inherited_connections()  # what a forked work-horse runs first
    runtime.bind_app(app)


def test_the_development_mail_sink_runs_until_it_is_told_to_stop(capsys):
    port = free_port()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def send_then_stop() -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
                    message = EmailMessage()
                    message["From"] = "no-reply@gatehouse.local"
                    message["To"] = "dev@example.com"
                    message["Subject"] = "Hello from make run"
                    message.set_content("https://gatehouse.test/verify-email?token=dev")
                    client.send_message(message)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_then_stop)
    sender.start()
    try:
        assert devsink.main(["--port", str(port)]) == 0
    finally:
        sender.join(10)
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    printed = capsys.readouterr().out
    assert f"development mail sink on smtp://127.0.0.1:{port}" in printed
    assert "Subject: Hello from make run" in printed
    assert "https://gatehouse.test/verify-email?token=dev" in printed
