"""The observability stack end to end, with real processes on loopback only:

- the API under gunicorn (`gunicorn.conf.py`: 2 workers, `PROMETHEUS_MULTIPROC_DIR` in a temp dir)
  on a fresh PostgreSQL database (migrated with `flask --app wsgi db upgrade`) and a Redis db;
- a job worker (`flask --app wsgi jobs worker`, its own multiprocess dir, `METRICS_PORT`) sending
  through a real SMTP server (aiosmtpd);
- Prometheus (Debian package `prometheus`) scraping both every second, with the project's
  recording and alerting rules loaded, evaluated every second;
- Alertmanager (Debian package `prometheus-alertmanager`) with a configuration derived from
  alertmanager/alertmanager.yml whose receivers point at a webhook server run by this test.

It drives traffic, then proves: the multiprocess aggregation over the gunicorn workers (and the
dead-worker cleanup), `promtool check metrics` on both real expositions, that EVERY PromQL query
of EVERY dashboard panel returns data, Alertmanager's routing/inhibition, and that dropping the
database mid-run makes the 5xx-ratio alert (and the database alert) reach the pager webhook.

The alerting rules are loaded from a test copy generated from alertmanager/rules/*.yml by
substitution: every `for:` shortened to 1s and the group `interval:`s removed (so that every group
runs at the 1 s evaluation interval). Nothing else differs; the expressions are the real ones.

Missing tools fail the test (`make ops-deps`), they never skip it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import requests
import yaml
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from tests.support.accounts import STRONG_PASSWORD
from tests.support.dashboards import DASHBOARDS, expressions, load, substitute, variables
from tests.support.database import DB_NAME_PREFIX, drop_database, fresh_database, worker_index
from tests.support.database import signing_keys_json as signing_keys
from tests.support.rules import (
    ALERTMANAGER_CONFIG,
    RULE_FILES,
    metric_names,
    output,
    require_tool,
    run,
)
from tests.support.smtp import SmtpSink
from tests.support.waiting import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
API_JOB, WORKER_JOB = "gatehouse-api", "gatehouse-worker"
NAMESPACE = "obs-e2e"
POOL_SIZE, MAX_OVERFLOW = 4, 2  # per process: capacity 6, 12 for two gunicorn workers
JWKS = "/.well-known/jwks.json"
# Upper bounds of the waits (each returns as soon as its condition holds): generous, because
# `make test` runs this beside other tests on a 2-core machine, where booting the app or one
# Argon2 hash can take many seconds.
STARTUP, SETTLE, REQUEST = 120.0, 90.0, 60.0
# Grafana's built-ins as replaced in this test (Prometheus scrapes every second here).
GRAFANA_BUILTINS = {"__rate_interval": "30s", "__interval": "1s", "__range": "5m"}


# --- processes and servers -----------------------------------------------------------------------


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(self.text().splitlines()[-lines:])

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                for pid in [*self.children(), self.popen.pid]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.popen.wait(timeout=REQUEST)


def start(name: str, command: list[str], env: dict[str, str], logs: Path) -> Process:
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Process(name, popen, log)


def wait_for(
    condition: Callable[[], Any], what: str, timeout: float, processes: list[Process] = ()
) -> Any:
    """Poll `condition` until it returns something truthy (a request that fails counts as not
    yet); fail with the logs after `timeout`, or at once when one of `processes` exited."""

    def attempt() -> Any:
        with contextlib.suppress(requests.RequestException, OSError):
            result = condition()
            if result:
                return result
        dead = [p for p in processes if not p.alive()]
        if dead:
            logs = "\n".join(p.tail() for p in processes)
            names = ", ".join(p.name for p in dead)
            pytest.fail(f"waiting for {what}: {names} exited\n{logs}", pytrace=False)
        return None

    def timed_out() -> str:
        logs = "\n".join(p.tail() for p in processes)
        return f"waiting for {what}: timed out\n{logs}"

    return wait_until(attempt, timeout=timeout, interval=0.2, message=timed_out)


@dataclass
class Webhook:
    """Alertmanager's webhook receivers: every POST body, by path (/pager, /ticket)."""

    server: ThreadingHTTPServer
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def alerts(self, receiver: str) -> list[dict[str, Any]]:
        with self.changed:
            return [
                a for path, body in self.received if path == f"/{receiver}" for a in body["alerts"]
            ]

    def wait_for_alert(self, receiver: str, timeout: float, **labels: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for alert in self.alerts(receiver):
                if alert["status"] == "firing" and all(
                    alert["labels"].get(k) == v for k, v in labels.items()
                ):
                    return alert
            return None

        with self.changed:
            arrived = self.changed.wait_for(lambda: find() is not None, timeout)
        assert arrived, f"no firing {labels} reached the {receiver} webhook: {self.received}"
        found = find()
        assert found is not None
        return found


def start_webhook() -> Webhook:
    hook: Webhook

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with hook.changed:
                hook.received.append((self.path, body))
                hook.changed.notify_all()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook = Webhook(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return hook


# --- configuration derived from the project's files ---------------------------------------------


def shortened_rules(target: Path) -> list[Path]:
    """alertmanager/rules/*.yml, every `for:` shortened to 1s and the group intervals removed."""
    target.mkdir()
    copies = []
    for path in RULE_FILES:
        text = path.read_text()
        shortened = re.sub(r"(?m)^(\s+)for: \S+$", r"\1for: 1s", text)
        shortened = re.sub(r"(?m)^\s+interval: \S+\n", "", shortened)
        original, copy_rules = yaml.safe_load(text), yaml.safe_load(shortened)
        for group, copied in zip(original["groups"], copy_rules["groups"], strict=True):
            assert [r["expr"] for r in group["rules"]] == [r["expr"] for r in copied["rules"]]
        copy = target / path.name
        copy.write_text(shortened)
        copies.append(copy)
    return copies


def alertmanager_config(webhook: Webhook) -> dict[str, Any]:
    """alertmanager.yml with its webhooks pointed at `webhook` and the waits shortened."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{webhook.base}/{receiver['name']}"

    def shorten(route: dict[str, Any], root: bool) -> None:
        for key, value in (
            ("group_wait", "1s"),
            ("group_interval", "1s"),
            ("repeat_interval", "1h"),
        ):
            if root or key in route:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child, root=False)

    shorten(config["route"], root=True)
    return config


# --- the stack -----------------------------------------------------------------------------------


@dataclass
class Stack:
    api: str
    prometheus: str
    alertmanager: str
    api_metrics: str
    worker_metrics: str
    gunicorn: Process
    processes: list[Process]
    api_metrics_dir: Path
    webhook: Webhook
    smtp: SmtpSink
    database: str
    jwks_requests: int = 0

    def query(self, expr: str, *, at_range: bool = True) -> list[dict[str, Any]]:
        if at_range:
            now = time.time()
            params = {"query": expr, "start": now - 90, "end": now, "step": "2s"}
            response = requests.get(
                f"{self.prometheus}/api/v1/query_range", params=params, timeout=REQUEST
            )
        else:
            response = requests.get(
                f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=REQUEST
            )
        body = response.json()
        assert body.get("status") == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr, at_range=False)
        return float(result[0]["value"][1]) if result else None

    def label_values(self, selector: str, label: str) -> list[str]:
        response = requests.get(
            f"{self.prometheus}/api/v1/label/{label}/values",
            params={"match[]": selector},
            timeout=REQUEST,
        )
        values: list[str] = response.json()["data"]
        return values


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = require_tool("prometheus")
    alertmanager_bin = require_tool("prometheus-alertmanager", "alertmanager")
    require_tool("promtool")
    from aiosmtpd.controller import Controller

    work = tmp_path_factory.mktemp("observability-stack")
    logs = work / "logs"
    logs.mkdir()
    # Per xdist worker: the module's tests may be spread over both, each building a stack.
    database_name = f"{DB_NAME_PREFIX}_obs_e2e_{worker_index()}"
    database_url = fresh_database(database_name)
    redis.Redis.from_url(redis_url).flushdb()
    processes: list[Process] = []
    smtp = SmtpSink()
    smtp_port = free_port()
    controller = Controller(smtp, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    smtp.url = f"smtp://127.0.0.1:{smtp_port}"
    webhook = start_webhook()
    try:
        api_port, api_metrics_port, worker_port, prom_port, am_port = (
            free_port() for _ in range(5)
        )
        base_env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        # GATEHOUSE_ENV=test: the production checks (secrets, encryption keys ...) have their own
        # tests; nothing observable differs. Auth limits and lockouts are small, and clients are
        # told apart by X-Forwarded-For (one trusted proxy), so the traffic can trip them.
        base_env.update(
            GATEHOUSE_ENV="test",
            SECRET_KEY="e2e-secret-" + uuid.uuid4().hex * 2,
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            JWT_KEYS=signing_keys(),
            SMTP_URL=smtp.url,
            SMTP_TIMEOUT="2",
            PUBLIC_BASE_URL="https://gatehouse.test",
            LOG_LEVEL="INFO",
            DB_POOL_SIZE=str(POOL_SIZE),
            DB_MAX_OVERFLOW=str(MAX_OVERFLOW),
            RATELIMIT_ENABLED="true",
            RATELIMIT_AUTH="6 per minute",
            TRUSTED_PROXIES="1",
            LOCKOUT_THRESHOLD="3",
            REQUIRE_EMAIL_VERIFICATION="false",
            JOBS_DISPATCH_INTERVAL="0.2",
            JOBS_RETRY_BACKOFF="0.2",
        )
        migrate = run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
            cwd=ROOT,
            env=base_env,
        )
        assert migrate.returncode == 0, output(migrate)

        api_metrics_dir = work / "api-metrics"
        gunicorn = start(
            "gunicorn",
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            {
                **base_env,
                "BIND": f"127.0.0.1:{api_port}",
                # /metrics on a listener of its own, as in production (not on the API's port).
                "METRICS_PORT": str(api_metrics_port),
                "METRICS_ADDR": "127.0.0.1",
                "WEB_CONCURRENCY": "2",
                "PROMETHEUS_MULTIPROC_DIR": str(api_metrics_dir),
            },
            logs,
        )
        processes.append(gunicorn)
        worker_metrics_dir = work / "worker-metrics"
        worker_metrics_dir.mkdir()
        worker_env = {
            **base_env,
            "PROMETHEUS_MULTIPROC_DIR": str(worker_metrics_dir),
            "METRICS_PORT": str(worker_port),
            "METRICS_ADDR": "127.0.0.1",
        }
        worker = start(
            "worker",
            [sys.executable, "-m", "flask", "--app", "wsgi", "jobs", "worker"],
            worker_env,
            logs,
        )
        processes.append(worker)

        rules = shortened_rules(work / "rules")
        prometheus_config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(path) for path in rules],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": NAMESPACE}}
                    ],
                }
                for job, port in ((API_JOB, api_metrics_port), (WORKER_JOB, worker_port))
            ],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config))
        (work / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(webhook)))
        processes.append(
            start(
                "alertmanager",
                [
                    alertmanager_bin,
                    f"--config.file={work / 'alertmanager.yml'}",
                    f"--storage.path={work / 'alertmanager-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
                base_env,
                logs,
            )
        )
        processes.append(
            start(
                "prometheus",
                [
                    prometheus_bin,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--log.level=warn",
                ],
                base_env,
                logs,
            )
        )
        api = f"http://127.0.0.1:{api_port}"
        stack = Stack(
            api=api,
            prometheus=f"http://127.0.0.1:{prom_port}",
            alertmanager=f"http://127.0.0.1:{am_port}",
            api_metrics=f"http://127.0.0.1:{api_metrics_port}/metrics",
            worker_metrics=f"http://127.0.0.1:{worker_port}/metrics",
            gunicorn=gunicorn,
            processes=processes,
            api_metrics_dir=api_metrics_dir,
            webhook=webhook,
            smtp=smtp,
            database=database_name,
        )
        for url, what in (
            (f"{api}/ready", "the API to be ready"),
            (f"{stack.prometheus}/-/ready", "Prometheus"),
            (f"{stack.alertmanager}/-/ready", "Alertmanager"),
        ):
            wait_for(lambda u=url: requests.get(u, timeout=2).ok, what, STARTUP, processes)
        wait_for(lambda: len(gunicorn.children()) == 2, "two gunicorn workers", STARTUP, processes)

        # The worker serves its own /metrics (METRICS_PORT): every sample that it and its
        # work-horses wrote to its multiprocess directory.
        wait_for(
            lambda: "job worker starting" in worker.text(), "the job worker", STARTUP, processes
        )
        wait_for(
            lambda: requests.get(stack.worker_metrics, timeout=1).ok,
            "the worker's own /metrics",
            STARTUP,
            processes,
        )
        wait_for(
            lambda: (
                stack.value(f'min(up{{namespace="{NAMESPACE}"}})') == 1
                and stack.value(f'count(up{{namespace="{NAMESPACE}"}})') == 2
            ),
            "Prometheus to scrape both targets",
            STARTUP,
            processes,
        )
        yield stack
    finally:
        for process in reversed(processes):
            process.stop()
        controller.stop()
        webhook.server.shutdown()
        drop_database(database_name)
        redis.Redis.from_url(redis_url).flushdb()


# --- traffic -------------------------------------------------------------------------------------


@dataclass
class Client:
    base: str
    ip: str

    def call(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = {"X-Forwarded-For": self.ip, **kwargs.pop("headers", {})}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(
            method, self.base + path, headers=headers, timeout=REQUEST, **kwargs
        )


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> dict[str, Any]:
    """Every kind of request the dashboards show: reads, sign-ins, refreshes and their reuse,
    password change and reset (emails sent by the worker), 401/403/404, a lockout, rate limits."""
    statuses: dict[str, list[int]] = {}

    def record(name: str, response: requests.Response) -> requests.Response:
        statuses.setdefault(name, []).append(response.status_code)
        return response

    users = []
    for index in range(4):
        client = Client(stack.api, f"198.51.100.{10 + index}")
        email = f"e2e-{index}-{uuid.uuid4().hex[:6]}@example.com"
        created = record(
            "register",
            client.call(
                "POST",
                "/api/v1/auth/register",
                json={"email": email, "password": STRONG_PASSWORD, "name": "E2E"},
            ),
        )
        assert created.status_code == 201, created.text
        login = record(
            "login",
            client.call(
                "POST", "/api/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}
            ),
        )
        assert login.status_code == 200, login.text
        tokens = login.json()
        user_id = created.json()["id"]
        for _ in range(8):
            assert record("me", client.call("GET", "/api/v1/users/me", tokens["access_token"])).ok
        assert record(
            "user", client.call("GET", f"/api/v1/users/{user_id}", tokens["access_token"])
        ).ok
        record(
            "other user",
            client.call("GET", f"/api/v1/users/{uuid.uuid4()}", tokens["access_token"]),
        )
        record("list users", client.call("GET", "/api/v1/users/", tokens["access_token"]))
        rotated = record(
            "refresh",
            client.call(
                "POST", "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
            ),
        )
        assert rotated.status_code == 200, rotated.text
        reused = record(
            "refresh reuse",
            client.call(
                "POST", "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
            ),
        )
        assert reused.status_code == 401  # reuse detected: the whole session is revoked
        again = record(
            "login",
            client.call(
                "POST", "/api/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}
            ),
        )
        assert again.status_code == 200, again.text
        users.append({"client": client, "email": email, "id": user_id, "tokens": again.json()})

    # Password change and a full password reset (the link comes by email, sent by the worker).
    first, second = users[0], users[1]
    changed = record(
        "password",
        first["client"].call(
            "POST",
            "/api/v1/auth/password",
            first["tokens"]["access_token"],
            json={"current_password": STRONG_PASSWORD, "new_password": "quiet-Harbor-71-meadow"},
        ),
    )
    assert changed.status_code == 204, changed.text
    requested = record(
        "password-reset",
        second["client"].call(
            "POST", "/api/v1/auth/password-reset", json={"email": second["email"]}
        ),
    )
    assert requested.status_code == 202
    stack.smtp.wait_until(
        lambda sink: any("reset" in m.subject.lower() for m in sink.to(second["email"])),
        timeout=SETTLE,
    )
    [reset_mail] = [m for m in stack.smtp.to(second["email"]) if "reset" in m.subject.lower()]
    token = parse_qs(urlsplit(reset_mail.link).query)["token"][0]
    confirmed = record(
        "password-reset/confirm",
        second["client"].call(
            "POST",
            "/api/v1/auth/password-reset/confirm",
            json={"token": token, "password": "amber-Falcon-58-river"},
        ),
    )
    assert confirmed.status_code == 200, confirmed.text

    # A lockout: three wrong passwords for one account, then even the right one is refused.
    victim = users[2]
    attacker = Client(stack.api, "203.0.113.7")
    for _ in range(3):
        wrong = attacker.call(
            "POST",
            "/api/v1/auth/login",
            json={"email": victim["email"], "password": "wrong-Guess-00-attempt"},
        )
        assert record("wrong password", wrong).status_code == 401
    locked = record(
        "locked",
        attacker.call(
            "POST",
            "/api/v1/auth/login",
            json={"email": victim["email"], "password": STRONG_PASSWORD},
        ),
    )
    assert locked.status_code == 429, locked.text
    # The per-IP auth budget (6 per minute): the rest of a burst is refused.
    flooder = Client(stack.api, "203.0.113.99")
    burst = [
        record(
            "flood",
            flooder.call(
                "POST",
                "/api/v1/auth/login",
                json={"email": f"nobody{i}@example.com", "password": "x" * 12},
            ),
        ).status_code
        for i in range(9)
    ]
    assert 429 in burst, burst

    anonymous = Client(stack.api, "198.51.100.200")
    assert record("anonymous", anonymous.call("GET", "/api/v1/users/me")).status_code == 401
    assert record("unmatched", anonymous.call("GET", "/no/such/page")).status_code == 404
    assert anonymous.call("GET", "/health").ok
    assert anonymous.call("GET", "/ready").ok
    # The verification emails of the registrations and the reset went out through the worker.
    stack.smtp.wait_for(len(users) + 1, timeout=SETTLE)
    return {"users": users, "statuses": statuses}


# --- the tests -----------------------------------------------------------------------------------


def _jwks_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "flask_http_request_duration_seconds_count"
                and sample.labels.get("url_rule") == JWKS
            ):
                return float(sample.value)
    return 0.0


def _per_process_jwks(directory: Path, tmp: Path) -> dict[int, float]:
    """The jwks request count each gunicorn process wrote, read file by file."""
    counts = {}
    for path in directory.glob("histogram_*.db"):
        pid = int(path.stem.split("_")[-1])
        single = tmp / f"pid-{pid}"
        single.mkdir(exist_ok=True)
        (single / path.name).write_bytes(path.read_bytes())
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(single))
        counts[pid] = _jwks_count(generate_latest(registry).decode())
    return counts


def _metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not exposed")


def test_multiprocess_metrics_aggregate_across_gunicorn_workers(
    stack: Stack, tmp_path: Path
) -> None:
    session_free = Client(stack.api, "198.51.100.250")

    def burst(count: int) -> None:
        with ThreadPoolExecutor(max_workers=12) as pool:
            codes = list(
                pool.map(lambda _: session_free.call("GET", JWKS).status_code, range(count))
            )
        assert codes == [200] * count
        stack.jwks_requests += count

    # Each request on a new connection: the kernel spreads them over both workers' accepts.
    for _ in range(6):
        burst(60)
        per_process = _per_process_jwks(stack.api_metrics_dir, tmp_path)
        if len([c for c in per_process.values() if c > 0]) >= 2:
            break
    busy = {pid for pid, count in per_process.items() if count > 0}
    assert len(busy) >= 2, f"requests all went to one worker: {per_process}"
    assert busy <= set(stack.gunicorn.children())
    assert sum(per_process.values()) == stack.jwks_requests

    # Whichever worker answers the scrape, /metrics shows the sum of every process's samples.
    for _ in range(6):
        body = requests.get(stack.api_metrics, timeout=REQUEST).text
        assert _jwks_count(body) == stack.jwks_requests
        assert _metric(body, "gatehouse_db_pool_capacity") == 2 * (POOL_SIZE + MAX_OVERFLOW)
    expr = f'sum(flask_http_request_duration_seconds_count{{job="{API_JOB}", url_rule="{JWKS}"}})'
    wait_for(
        lambda: stack.value(expr) == stack.jwks_requests, "Prometheus to see every request", SETTLE
    )

    # A worker that exits is marked dead: its live gauges go, its counters stay.
    victim = sorted(stack.gunicorn.children())[0]
    os.kill(victim, signal.SIGTERM)
    wait_for(
        lambda: victim not in stack.gunicorn.children() and len(stack.gunicorn.children()) == 2,
        "gunicorn to replace the worker",
        STARTUP,
        stack.processes,
    )
    assert not list(stack.api_metrics_dir.glob(f"gauge_live*_{victim}.db"))
    wait_for(
        lambda: (
            _metric(
                requests.get(stack.api_metrics, timeout=REQUEST).text,
                "gatehouse_db_pool_capacity",
            )
            == 2 * (POOL_SIZE + MAX_OVERFLOW)
        ),
        "the new worker's pool gauge",
        STARTUP,
        stack.processes,
    )
    body = requests.get(stack.api_metrics, timeout=REQUEST).text
    assert _jwks_count(body) == stack.jwks_requests


def test_real_expositions_pass_promtool_check_metrics(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    promtool = require_tool("promtool")
    for url in (stack.api_metrics, stack.worker_metrics):
        body = requests.get(url, timeout=REQUEST).text
        assert "gatehouse_" in body, url
        done = run([promtool, "check", "metrics"], input=body)
        assert done.returncode == 0, f"{url}\n{output(done)}"
    # Not on the API's own port: that one is public.
    assert requests.get(f"{stack.api}/metrics", timeout=REQUEST).status_code == 404
    api_body = requests.get(stack.api_metrics, timeout=REQUEST).text
    names = {family.name for family in text_string_to_metric_families(api_body)}
    assert {"gatehouse_queue_depth", "gatehouse_outbox_messages", "gatehouse_database_up"} <= names
    # url_rule: the exporter's request metrics; route: the rate-limit counter.
    routes = {
        sample.labels[label]
        for family in text_string_to_metric_families(api_body)
        for sample in family.samples
        for label in ("url_rule", "route")
        if label in sample.labels
    }
    assert "/api/v1/users/<uuid:user_id>" in routes
    for user in traffic["users"]:
        assert not any(user["id"] in route for route in routes), routes


def regex_escape(value: str) -> str:
    """Escape a label value for a PromQL regex as Grafana does (RE2 rejects `\\-`)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", value)


def _grafana_variables(stack: Stack, dashboard: dict[str, Any]) -> dict[str, str]:
    """What Grafana sends for $namespace and $job with "All" selected: the variables' own
    label_values() queries run against Prometheus, the job regex applied."""
    found = variables(dashboard)
    values = dict(GRAFANA_BUILTINS)
    for name in ("namespace", "job"):
        variable = found[name]
        query = (
            variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        )
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", substitute(query, values))
        assert match, query
        discovered = stack.label_values(match.group(1), match.group(2))
        pattern = variable.get("regex", "").strip("/")
        discovered = (
            sorted(v for v in discovered if re.search(pattern, v)) if pattern else discovered
        )
        assert discovered, f"variable {name}: {query} found nothing"
        values[name] = "|".join(regex_escape(v) for v in discovered)
    assert values["namespace"] == NAMESPACE
    assert set(values["job"].split("|")) == {API_JOB, WORKER_JOB}
    return values


def test_every_dashboard_query_returns_data(stack: Stack, traffic: dict[str, Any]) -> None:
    queries = []
    for path in DASHBOARDS:
        dashboard = load(path)
        values = _grafana_variables(stack, dashboard)
        for title, ref, expr in expressions(dashboard):
            queries.append((f"{path.stem} / {title} / {ref}", expr, substitute(expr, values)))
    assert len(queries) >= 40

    # Counters appear with the traffic and rates need two scrapes: retry the empty ones a while.
    empty = list(queries)
    deadline = time.monotonic() + SETTLE
    while empty and time.monotonic() < deadline:
        empty = [q for q in empty if not stack.query(q[2])]
        if empty:
            time.sleep(1)

    report = []
    for where, expr, sent in empty:
        absent = sorted(
            name
            for name in metric_names(expr)
            if not name.startswith("gatehouse:")
            and not stack.query(f'count({{__name__="{name}"}})', at_range=False)
        )
        report.append(f"{where}\n    {sent}\n    series absent from Prometheus: {absent or 'none'}")
    assert not report, "dashboard queries without data:\n" + "\n".join(report)
    # The worker's counters were among them, scraped from the worker's own target.
    for name in ("gatehouse_emails_total", "gatehouse_jobs_total"):
        assert stack.query(f'{name}{{job="{WORKER_JOB}", namespace="{NAMESPACE}"}}'), name


def test_alertmanager_routes_by_severity_inhibits_twins_and_drops_info(stack: Stack) -> None:
    """Alerts posted to the real Alertmanager running the derived alertmanager.yml."""
    now = time.time()

    def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
        return {
            "labels": {"alertname": name, "severity": severity, "namespace": "am-check", **labels},
            "annotations": {"summary": f"{name} {severity}", "description": "routing check"},
            "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 600)),
        }

    posted = [
        alert("GatehouseQueueBacklog", "critical", queue="high"),
        alert("GatehouseQueueBacklog", "warning", queue="high"),
        alert("GatehouseRedisDown", "warning", job=API_JOB, instance="api-1"),
        alert("GatehouseRefreshTokenReuseDetected", "info"),
    ]
    response = requests.post(f"{stack.alertmanager}/api/v2/alerts", json=posted, timeout=REQUEST)
    assert response.ok, response.text

    stack.webhook.wait_for_alert(
        "pager",
        SETTLE,
        alertname="GatehouseQueueBacklog",
        severity="critical",
        namespace="am-check",
    )
    stack.webhook.wait_for_alert(
        "ticket", SETTLE, alertname="GatehouseRedisDown", severity="warning", namespace="am-check"
    )

    def state() -> dict[tuple[str, str], dict[str, Any]]:
        found = requests.get(
            f"{stack.alertmanager}/api/v2/alerts",
            params={"filter": 'namespace="am-check"'},
            timeout=REQUEST,
        ).json()
        return {(a["labels"]["alertname"], a["labels"]["severity"]): a for a in found}

    alerts = wait_for(
        lambda: len(state()) == 4 and state(), "Alertmanager to list the alerts", SETTLE
    )
    twin = alerts[("GatehouseQueueBacklog", "warning")]
    assert twin["status"]["state"] == "suppressed"
    assert twin["status"]["inhibitedBy"] == [
        alerts[("GatehouseQueueBacklog", "critical")]["fingerprint"]
    ]
    info = alerts[("GatehouseRefreshTokenReuseDetected", "info")]
    assert info["status"]["state"] == "active"
    assert [r["name"] for r in info["receivers"]] == ["null"]
    # A sentinel posted after them reaching its receiver proves Alertmanager has dispatched
    # what was posted before it: anything wrongly routed would have been sent by now.
    sentinel = alert("GatehouseRoutingSentinel", "warning")
    response = requests.post(
        f"{stack.alertmanager}/api/v2/alerts", json=[sentinel], timeout=REQUEST
    )
    assert response.ok, response.text
    stack.webhook.wait_for_alert(
        "ticket", SETTLE, alertname="GatehouseRoutingSentinel", namespace="am-check"
    )
    for receiver in ("pager", "ticket"):
        sent = [
            (a["labels"]["alertname"], a["labels"]["severity"])
            for a in stack.webhook.alerts(receiver)
            if a["labels"].get("namespace") == "am-check"
        ]
        assert ("GatehouseQueueBacklog", "warning") not in sent, receiver
        assert ("GatehouseRefreshTokenReuseDetected", "info") not in sent, receiver


@contextlib.contextmanager
def steady(call: Callable[[int], int], workers: int, pause: float) -> Iterator[list[int]]:
    """Keep `workers` clients calling `call(index)` (each pausing `pause` s between calls) until
    the block ends; yields the list the status codes are appended to."""
    codes: list[int] = []
    stop = threading.Event()

    def keep_calling(first: int) -> None:
        index = first
        while not stop.is_set():
            codes.append(call(index))
            index += workers
            stop.wait(pause)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        running = [pool.submit(keep_calling, worker) for worker in range(workers)]
        try:
            yield codes
        finally:
            stop.set()
            for done in running:
                done.result()


def test_dropping_the_database_pages_through_prometheus_and_alertmanager(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    """The fault: the app's database is dropped mid-run, so every request that needs it fails.

    Traffic flows all along, as in a real outage. Bursts are not enough: a series whose
    requests all fall between two scrapes first appears at its final value, and rate() over a
    series that never grows after its first sample is 0 (so the SLI is NaN and nothing fires)."""
    user = traffic["users"][3]
    keys = Client(stack.api, "198.51.100.99")

    def failing_login(index: int) -> int:
        client = Client(stack.api, f"192.0.2.{index % 250 + 1}")
        return client.call(
            "POST", "/api/v1/auth/login", json={"email": user["email"], "password": STRONG_PASSWORD}
        ).status_code

    def measured() -> tuple[float] | None:
        ratio = stack.value(f'gatehouse:sli_availability:error_ratio_rate5m{{job="{API_JOB}"}}')
        return (ratio,) if ratio is not None and not math.isnan(ratio) else None

    with steady(lambda _: keys.call("GET", JWKS).status_code, workers=1, pause=0.25) as healthy:
        (ratio,) = wait_for(measured, "the availability SLI to be computed", SETTLE)
        assert ratio < 0.01, ratio
        drop_database(stack.database)
        # About 8 logins/s over 250 client IPs: under the login limit (6 per minute per IP).
        with steady(failing_login, workers=4, pause=0.5) as failed:
            page = stack.webhook.wait_for_alert(
                "pager",
                STARTUP,
                alertname="GatehouseHigh5xxRatio",
                severity="critical",
                namespace=NAMESPACE,
            )
    assert set(healthy) == {200}, healthy
    assert sum(code >= 500 for code in failed) >= 0.95 * len(failed) > 0, failed
    assert page["labels"]["job"] == API_JOB
    assert page["annotations"]["runbook_url"].endswith("docs/runbooks/GatehouseHigh5xxRatio.md")
    assert "answered with a 5xx" in page["annotations"]["description"]
    database = stack.webhook.wait_for_alert(
        "pager",
        STARTUP,
        alertname="GatehouseDatabaseDown",
        severity="critical",
        namespace=NAMESPACE,
    )
    assert database["annotations"]["runbook_url"].endswith("docs/runbooks/GatehouseDatabaseDown.md")
