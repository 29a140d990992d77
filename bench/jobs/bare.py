"""The floor under the pipeline: only the work no email delivery can skip, without Gatehouse.

Per email: claim it (INSERT … COMMIT, waiting for the disk), send it over a kept SMTP
connection (a prebuilt message: no rendering), record it sent (UPDATE … COMMIT, not waiting for
the disk) — raw psycopg and smtplib, no ORM, no breaker, no logging.

- `per-email`: one stock RQ job per email (`rq.SimpleWorker`, nothing of Gatehouse's), as many
  worker processes as the pipeline run had;
- `batched`: the same processes claim fifty at a time (one commit) and loop over their share.

    python -m bench.jobs.bare MODE PORT DATABASE_URL REDIS_URL MESSAGES PROCESSES

prints emails per second. `bench.jobs` runs it beside the pipeline, as the last column.
"""

from __future__ import annotations

import multiprocessing
import os
import smtplib
import sys
import time
import uuid
from typing import Any

import psycopg
import redis
from rq import Queue, SimpleWorker

_TABLE = "bench_bare_deliveries"
_state: dict[str, Any] = {}


def _body() -> bytes:
    from jobs.emails import Envelope, compose
    from jobs.settings import JobsSettings
    from tests.support.jobs import EMAIL_PAYLOADS
    from webapp.config import Settings

    email = compose(
        Envelope("new_login", "bare@example.com", "bench:bare", dict(EMAIL_PAYLOADS["new_login"])),
        Settings(),
        JobsSettings(),
    )
    return email.as_bytes(policy=email.policy.clone(linesep="\r\n"))


def _connections() -> tuple[psycopg.Connection[Any], smtplib.SMTP, bytes]:
    """This process's database connection, SMTP connection and message, opened once."""
    if not _state:
        _state["db"] = psycopg.connect(os.environ["BARE_DATABASE_URL"])
        _state["smtp"] = smtplib.SMTP("127.0.0.1", int(os.environ["BARE_SMTP_PORT"]), timeout=30)
        _state["body"] = _body()
    return _state["db"], _state["smtp"], _state["body"]


def _send_and_record(key: str) -> None:
    db, smtp, body = _connections()
    smtp.sendmail("bench@example.com", [f"{key}@example.com"], body)
    db.execute("SET LOCAL synchronous_commit = off")
    db.execute(f"UPDATE {_TABLE} SET status = 'sent', sent_at = now() WHERE key = %s", (key,))  # noqa: S608
    db.commit()


def bare_job(key: str) -> None:
    """One email as one RQ job: claim, send, record."""
    db, _, _ = _connections()
    db.execute(f"INSERT INTO {_TABLE} (key, status) VALUES (%s, 'sending')", (key,))  # noqa: S608
    db.commit()
    _send_and_record(key)


def _batched(keys: list[str]) -> None:
    db, _, _ = _connections()
    for start in range(0, len(keys), 50):
        chunk = keys[start : start + 50]
        with db.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {_TABLE} (key, status) VALUES (%s, 'sending')",  # noqa: S608
                [(k,) for k in chunk],
            )
        db.commit()
        for key in chunk:
            _send_and_record(key)


def _rq_worker(redis_url: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    SimpleWorker([Queue("bare", connection=connection)], connection=connection).work(
        burst=True, logging_level="WARNING"
    )


def measure(
    mode: str, port: int, database_url: str, redis_url: str, messages: int, processes: int
) -> float:
    os.environ.update(BARE_SMTP_PORT=str(port), BARE_DATABASE_URL=database_url)
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute(f"DROP TABLE IF EXISTS {_TABLE}")
        db.execute(
            f"CREATE TABLE {_TABLE} (key text PRIMARY KEY, status text, sent_at timestamptz)"
        )
    keys = [uuid.uuid4().hex for _ in range(messages)]
    fork = multiprocessing.get_context("fork")
    if mode == "per-email":
        connection = redis.Redis.from_url(redis_url)
        queue = Queue("bare", connection=connection)
        queue.enqueue_many(
            [Queue.prepare_data("bench.jobs.bare.bare_job", args=(key,)) for key in keys]
        )
        workers = [fork.Process(target=_rq_worker, args=(redis_url,)) for _ in range(processes)]
    else:
        shares = [keys[i::processes] for i in range(processes)]
        workers = [fork.Process(target=_batched, args=(share,)) for share in shares]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    with psycopg.connect(database_url, autocommit=True) as db:
        row = db.execute(f"SELECT count(*) FROM {_TABLE} WHERE status = 'sent'").fetchone()  # noqa: S608
        db.execute(f"DROP TABLE {_TABLE}")
    if row is None or row[0] != messages:
        raise SystemExit(f"bare {mode}: {row} of {messages} recorded sent")
    return messages / elapsed


if __name__ == "__main__":
    mode, port, database_url, redis_url, messages, processes = sys.argv[1:7]
    rate = measure(mode, int(port), database_url, redis_url, int(messages), int(processes))
    print(f"{rate:.1f}")
