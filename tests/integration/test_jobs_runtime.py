"""The pieces around the jobs: the dispatcher thread, the app a job runs in, the dev mail sink."""

from __future__ import annotations

import os
import signal
import smtplib
import threading
from email.message import EmailMessage

from jobs import devsink, runtime
from jobs.dispatcher import DispatcherThread
from tests.support.waiting import free_port, wait_until
from webapp.outbox.models import ENQUEUED


def test_the_dispatcher_thread_moves_new_messages_to_their_queue_until_stopped(
    jobs_app, rq_connection, queue_email, outbox
):
    from rq import Queue

    thread = DispatcherThread(jobs_app, rq_connection)
    thread.start()
    try:
        queue_email("verify_email")
        wait_until(
            lambda: outbox()[0].status == ENQUEUED,
            message="the dispatcher thread did not enqueue",
        )
    finally:
        thread.stop()

    assert not thread.is_alive()
    assert Queue("high", connection=rq_connection).count == 1


def test_a_stock_rq_worker_fails_its_jobs_saying_how_to_run_a_worker(
    monkeypatch, app, rq_connection, queue_email, outbox
):
    """The jobs package never builds an application (the composition root imports `jobs`, not
    the other way round): a process that bound none fails the job, and the message stays
    `enqueued` for a real worker."""
    from rq import Queue, SimpleWorker
    from rq.registry import FailedJobRegistry

    from jobs.dispatcher import dispatch
    from jobs.settings import jobs_settings_of
    from webapp.extensions import db

    monkeypatch.setattr(runtime, "_app", None)
    message_id = queue_email("verify_email")
    with app.app_context():
        dispatch(db.session, rq_connection, jobs_settings_of(app))
        db.session.remove()
    high = Queue("high", connection=rq_connection)

    SimpleWorker([high], connection=rq_connection).work(burst=True)

    job = high.fetch_job(str(message_id))
    assert job is not None
    assert job.id in FailedJobRegistry(queue=high)
    assert "flask --app wsgi jobs worker" in (job.latest_result().exc_string or "")
    assert outbox()[0].status == ENQUEUED


def test_the_development_mail_sink_runs_until_it_is_told_to_stop(capsys):
    port = free_port()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def send_then_stop() -> None:
        def sent() -> bool:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
                    message = EmailMessage()
                    message["From"] = "no-reply@gatehouse.local"
                    message["To"] = "dev@example.com"
                    message["Subject"] = "Hello from make run"
                    message.set_content("https://gatehouse.test/verify-email?token=dev")
                    client.send_message(message)
            except OSError:  # not listening yet
                return False
            return True

        wait_until(sent, timeout=20, message="the mail sink never accepted the email")
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
