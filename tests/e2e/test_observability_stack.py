"""The observability stack end to end, with real processes on loopback only:

- the API under gunicorn (`gunicorn.conf.py`: 2 workers, `PROMETHEUS_MULTIPROC_DIR` in a temp dir)
  on a fresh PostgreSQL database (migrated with `flask --app wsgi db upgrade`) and a Redis db;
- a job worker (`flask --app wsgi jobs worker`, its own multiprocess dir, `METRICS_PORT`) sending
  through a real SMTP server (aiosmtpd);
- Prometheus (Debian package `prometheus`) scraping both every second, with the project's
  recording and alerting rules loaded, evaluated every second;
- Alertmanager (Debian package `prometheus-alertmanager`) with a configuration derived from
  alertmanager/alertmanager.yml whose receivers point at a webhook server run by this test;
- two webhook endpoints subscribed to every event of the traffic (`WEBHOOK_ALLOW_PRIVATE=true`),
  delivered by the worker to a receiver run by this test: one accepts, one always fails.

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

import base64
import contextlib
import hashlib
import html
import json
import math
import os
import re
import signal
import socket
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
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import redis
import requests
import yaml
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from scripts.build_k8s_generated import with_runbook_links
from tests.support.accounts import STRONG_PASSWORD
from tests.support.dashboards import (
    DASHBOARDS,
    DASHBOARDS_DIR,
    expressions,
    load,
    panels,
    substitute,
    variables,
)
from tests.support.database import DB_NAME_PREFIX, drop_database, fresh_database, worker_index
from tests.support.database import signing_keys_json as signing_keys
from tests.support.kube_metrics import KUBERNETES_SERIES, KubeExporters, gatehouse_containers
from tests.support.rules import (
    ALERTMANAGER_CONFIG,
    RULE_FILES,
    alert_names,
    metric_names,
    output,
    require_tool,
    run,
)
from tests.support.smtp import SmtpSink
from tests.support.waiting import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
API_JOB, WORKER_JOB = "gatehouse-api", "gatehouse-worker"
# The `pod` target label a ServiceMonitor gives each target, and the pods of the cluster series.
API_POD, WORKER_POD = "gatehouse-api-7c9d5b8f6d-x2x4q", "gatehouse-worker-6f7b9c8d5-k7m2p"
NAMESPACE = "obs-e2e"
POOL_SIZE, MAX_OVERFLOW = 4, 2  # per process: capacity 6, 12 for two gunicorn workers
JWKS = "/.well-known/jwks.json"
ADMIN_EMAIL = "e2e-admin@example.com"
FLASK = [sys.executable, "-m", "flask", "--app", "wsgi"]
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


@dataclass
class HookReceiver:
    """The subscribers of the stack's webhook endpoints: `/ok` answers 204, anything else 500.
    Records the path of every delivery."""

    server: ThreadingHTTPServer
    paths: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


def start_receiver() -> HookReceiver:
    receiver: HookReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            receiver.paths.append(self.path)
            self.send_response(204 if self.path == "/ok" else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = HookReceiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver


# --- configuration derived from the project's files ---------------------------------------------


def shortened_rules(target: Path) -> list[Path]:
    """alertmanager/rules/*.yml, every `for:` shortened to 1s and the group intervals removed,
    with the runbook links made absolute as the generated PrometheusRules carry them."""
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
        copy_rules["groups"] = with_runbook_links(copy_rules["groups"])
        copy.write_text(yaml.safe_dump(copy_rules, sort_keys=False))
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
    hooks: HookReceiver
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
    hooks = start_receiver()
    kube = KubeExporters(NAMESPACE, gatehouse_containers(API_POD, WORKER_POD))
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
            # The webhook receiver of this test listens on loopback.
            WEBHOOK_ALLOW_PRIVATE="true",
        )
        migrate = run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
            cwd=ROOT,
            env=base_env,
        )
        assert migrate.returncode == 0, output(migrate)
        admin = run(
            [*FLASK, "users", "create-admin", "--email", ADMIN_EMAIL],
            cwd=ROOT,
            env={**base_env, "GATEHOUSE_ADMIN_PASSWORD": STRONG_PASSWORD},
        )
        assert admin.returncode == 0, output(admin)

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
                        {
                            "targets": [f"127.0.0.1:{port}"],
                            "labels": {"namespace": NAMESPACE, "pod": pod},
                        }
                    ],
                }
                for job, port, pod in (
                    (API_JOB, api_metrics_port, API_POD),
                    (WORKER_JOB, worker_port, WORKER_POD),
                )
            ]
            + kube.scrape_configs(),
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
            hooks=hooks,
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
        hooks.server.shutdown()
        kube.stop()
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
    password change and reset (emails sent by the worker), 401/403/404, a lockout, rate limits,
    and the OpenID Connect provider's (`oidc_traffic`)."""
    statuses: dict[str, list[int]] = {}

    def record(name: str, response: requests.Response) -> requests.Response:
        statuses.setdefault(name, []).append(response.status_code)
        return response

    # Two webhook endpoints, subscribed to every event of the traffic below: one receiver
    # accepts, the other always fails (each of its deliveries is retried).
    operator = Client(stack.api, "198.51.100.240")
    signed_in = operator.call(
        "POST", "/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": STRONG_PASSWORD}
    )
    assert signed_in.status_code == 200, signed_in.text
    admin_token = signed_in.json()["access_token"]
    for path in ("/ok", "/fail"):
        subscribed = operator.call(
            "POST", "/api/v1/webhooks/", admin_token, json={"url": stack.hooks.url(path)}
        )
        assert subscribed.status_code == 201, subscribed.text

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

    oidc_traffic(operator, admin_token, users[3], record)

    anonymous = Client(stack.api, "198.51.100.200")
    assert record("anonymous", anonymous.call("GET", "/api/v1/users/me")).status_code == 401
    assert record("unmatched", anonymous.call("GET", "/no/such/page")).status_code == 404
    assert anonymous.call("GET", "/health").ok
    assert anonymous.call("GET", "/ready").ok
    # The verification emails of the registrations and the reset went out through the worker.
    stack.smtp.wait_for(len(users) + 1, timeout=SETTLE)
    # And the events went to both webhook endpoints: delivered to one, failed at the other.
    wait_for(
        lambda: {"/ok", "/fail"} <= set(stack.hooks.paths),
        "a webhook delivered and one failed",
        SETTLE,
        stack.processes,
    )
    return {"users": users, "statuses": statuses}


def _form_field(page: requests.Response, name: str) -> str:
    match = re.search(rf'name="{name}"[^>]*?value="([^"]*)"', page.text)
    assert match, f"no field {name} in {page.text[:1000]}"
    return html.unescape(match.group(1))


def oidc_traffic(
    operator: Client,
    admin_token: str,
    user: dict[str, Any],
    record: Callable[[str, requests.Response], requests.Response],
) -> None:
    """The provider's panels: a machine client's `client_credentials` token (and one refused as
    `invalid_client`), an authorization request for an unknown client (the error page), and a
    user's sign-in through the pages to a code, exchanged for tokens. The user signs in from the
    address and client it used before (no new-device email), within its IP's auth budget."""
    machine = operator.call(
        "POST",
        "/api/v1/oauth/clients/",
        admin_token,
        json={"client_name": "E2E machine", "grant_types": ["client_credentials"]},
    )
    assert machine.status_code == 201, machine.text
    portal = operator.call(
        "POST",
        "/api/v1/oauth/clients/",
        admin_token,
        json={
            "client_name": "E2E portal",
            "redirect_uris": ["https://portal.example.com/callback"],
            "scope": "openid email",
            "first_party": True,
        },
    )
    assert portal.status_code == 201, portal.text
    machine_auth = (machine.json()["client_id"], machine.json()["client_secret"])
    granted = record(
        "oauth token",
        operator.call(
            "POST", "/oauth/token", data={"grant_type": "client_credentials"}, auth=machine_auth
        ),
    )
    assert granted.status_code == 200, granted.text
    refused = record(
        "oauth token",
        operator.call(
            "POST",
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(machine_auth[0], "not-the-secret"),
        ),
    )
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")
    unknown = record(
        "oauth authorize",
        operator.call("GET", "/oauth/authorize?client_id=no-such-client&response_type=code"),
    )
    assert unknown.status_code == 400
    assert "Location" not in unknown.headers  # an error page, never a redirect

    browser: Client = user["client"]
    verifier = "e2e-" + uuid.uuid4().hex * 2
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    )
    callback = "https://portal.example.com/callback"
    query = urlencode(
        {
            "client_id": portal.json()["client_id"],
            "redirect_uri": callback,
            "response_type": "code",
            "scope": "openid email",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    page = record("oauth authorize", browser.call("GET", f"/oauth/authorize?{query}"))
    assert page.status_code == 200, page.text[:500]
    # The cookie is Secure (the issuer is https): sent back by hand over this plain http.
    cookie = re.search(r"gh_op_session=([^;]+)", page.headers["Set-Cookie"])
    assert cookie, page.headers
    signed_in = record(
        "oauth login",
        browser.call(
            "POST",
            "/oauth/login",
            headers={"Cookie": f"gh_op_session={cookie.group(1)}"},
            data={
                "csrf_token": _form_field(page, "csrf_token"),
                "request": _form_field(page, "request"),
                "email": user["email"],
                "password": STRONG_PASSWORD,
            },
            allow_redirects=False,
        ),
    )
    assert signed_in.status_code == 303, signed_in.text[:500]
    code = parse_qs(urlsplit(signed_in.headers["Location"]).query)["code"][0]
    exchanged = record(
        "oauth token",
        browser.call(
            "POST",
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": callback,
                "code_verifier": verifier,
            },
            auth=(portal.json()["client_id"], portal.json()["client_secret"]),
        ),
    )
    assert exchanged.status_code == 200, exchanged.text
    assert "id_token" in exchanged.json()


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
    """Escape a label value for a PromQL regex as Grafana does: a backslash for the regex,
    doubled inside the double-quoted string (`127\\\\.0\\\\.0\\\\.1`); RE2 rejects `\\-`."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


def _grafana_variables(stack: Stack, dashboard: dict[str, Any]) -> dict[str, str]:
    """What Grafana sends for its variables with "All" selected: each query variable's own
    label_values() query run against Prometheus in order (a later one reads the earlier ones),
    its regex applied; constants as they are."""
    values = dict(GRAFANA_BUILTINS)
    for name, variable in variables(dashboard).items():
        if variable["type"] == "constant":
            values[name] = variable["query"]
        if variable["type"] != "query":
            continue
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
    if "pod" in values:  # the scrape jobs of cAdvisor and kube-state-metrics add no pod
        assert set(values["pod"].split("|")) == {API_POD, WORKER_POD}
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
        names = metric_names(expr) | {n for n in KUBERNETES_SERIES if n in expr}
        absent = sorted(
            name
            for name in names
            if not name.startswith("gatehouse:")
            and not stack.query(f'count({{__name__="{name}"}})', at_range=False)
        )
        report.append(f"{where}\n    {sent}\n    series absent from Prometheus: {absent or 'none'}")
    assert not report, "dashboard queries without data:\n" + "\n".join(report)
    # The worker's counters were among them, scraped from the worker's own target.
    for name in ("gatehouse_emails_total", "gatehouse_jobs_total"):
        assert stack.query(f'{name}{{job="{WORKER_JOB}", namespace="{NAMESPACE}"}}'), name
    # The provider's panels saw its traffic: both grants, a refusal, the error page, a code and
    # the sign-in that led to it.
    for name, labels in (
        ("gatehouse_oauth_token_grants_total", 'grant="client_credentials", result="success"'),
        ("gatehouse_oauth_token_grants_total", 'grant="authorization_code", result="success"'),
        ("gatehouse_oauth_token_grants_total", 'result="invalid_client"'),
        ("gatehouse_oauth_authorizations_total", 'result="error_page"'),
        ("gatehouse_oauth_authorizations_total", 'result="login_page"'),
        ("gatehouse_oauth_authorizations_total", 'result="code_issued"'),
        ("gatehouse_oauth_signins_total", 'result="success"'),
    ):
        assert stack.query(f'{name}{{job="{API_JOB}", {labels}}}'), (name, labels)
    # The webhook panels saw real deliveries: both results, and the failing endpoint (read by
    # the API from the database) — the accepting one's latest attempt succeeded.
    for result in ("delivered", "failed"):
        selector = f'gatehouse_webhook_deliveries_total{{job="{WORKER_JOB}", result="{result}"}}'
        assert stack.query(selector), result
    failing = f'max(gatehouse_webhook_endpoints_failing{{job="{API_JOB}"}})'
    wait_for(lambda: stack.value(failing) == 1, "one failing webhook endpoint", SETTLE)


def _by_pod(stack: Stack, expr: str) -> dict[str, float]:
    """The latest value of each series of `expr`, by pod (and container, where it has one)."""
    found = {}
    for series in stack.query(expr, at_range=False):
        labels = series["metric"]
        key = "/".join(filter(None, (labels.get("pod", ""), labels.get("container"))))
        assert key not in found, f"two series for {key}: {expr}"
        found[key] = round(float(series["value"][1]), 3)
    return found


def test_on_call_use_panels_read_the_cluster_exporters_series_of_the_gatehouse_pods_only(
    stack: Stack,
) -> None:
    """The container panels against the kube-prometheus stand-in: the Gatehouse containers of
    the two pods, each counted once (not with its pod-level cgroup, container=""), not the pause
    container or another pod of the namespace, at the rates the stand-in serves."""
    dashboard = load(DASHBOARDS_DIR / "gatehouse-on-call.json")
    values = _grafana_variables(stack, dashboard)
    exprs = {title: substitute(expr, values) for title, ref, expr in expressions(dashboard)}
    api, worker = gatehouse_containers(API_POD, WORKER_POD)
    a, w = f"{API_POD}/{api.container}", f"{WORKER_POD}/{worker.container}"
    expected = {
        "CPU used of limit": {
            a: api.cpu_rate / api.cpu_limit,
            w: worker.cpu_rate / worker.cpu_limit,
        },
        "CPU throttling": {a: api.throttled, w: worker.throttled},
        "Memory working set of limit": {
            a: api.working_set / api.memory_limit,
            w: worker.working_set / worker.memory_limit,
        },
        "Container restarts in the last hour": {a: 0.0, w: 0.0},
    }
    for title, wanted in expected.items():

        def close(title: str = title, wanted: dict[str, float] = wanted) -> bool:
            found = _by_pod(stack, exprs[title])
            return found.keys() == wanted.keys() and all(
                math.isclose(found[pod], value, abs_tol=0.02) for pod, value in wanted.items()
            )

        wait_for(close, f"{title}: {wanted}", SETTLE, stack.processes)


def test_on_call_gunicorn_saturation_counts_requests_in_flight_not_the_scrape(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    dashboard = load(DASHBOARDS_DIR / "gatehouse-on-call.json")
    values = _grafana_variables(stack, dashboard)
    exprs = {title: substitute(expr, values) for title, ref, expr in expressions(dashboard)}
    threads = 2 * 4  # WEB_CONCURRENCY x gunicorn.conf.py's GUNICORN_THREADS default
    body = requests.get(stack.api_metrics, timeout=REQUEST).text
    assert _metric(body, "gatehouse_gunicorn_threads") == threads
    assert _metric(body, "gatehouse_gunicorn_threads_busy") == 0  # this scrape is not counted
    busy = exprs["gunicorn threads busy"]
    wait_for(lambda: _by_pod(stack, busy) == {API_POD: 0.0}, "no busy thread", SETTLE)

    # A login whose body has not all arrived: the view waits for it on one thread.
    host, port = urlsplit(stack.api).netloc.split(":")
    payload = json.dumps({"email": "held@example.com", "password": "x" * 12}).encode()
    head = (
        f"POST /api/v1/auth/login HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nX-Forwarded-For: 198.51.100.251\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=REQUEST) as held:
        held.sendall(head + payload[:10])
        wait_for(
            lambda: _by_pod(stack, busy) == {API_POD: round(1 / threads, 3)},
            "one busy thread in Prometheus",
            SETTLE,
            stack.processes,
        )
        body = requests.get(stack.api_metrics, timeout=REQUEST).text
        assert _metric(body, "gatehouse_gunicorn_threads_busy") == 1
        held.sendall(payload[10:])
        assert held.recv(64).startswith(b"HTTP/1.1 401"), "the login was answered"
    wait_for(lambda: _by_pod(stack, busy) == {API_POD: 0.0}, "the thread freed", SETTLE)

    # Every request took a pooled connection: the checkout wait is measured, per pod.
    wait = [
        e for t, e in ((t, e) for t, _, e in expressions(dashboard)) if t == "DB pool checkout wait"
    ]
    for expr in wait:
        assert API_POD in _by_pod(stack, substitute(expr, values)), expr
    assert _metric(body, "gatehouse_db_pool_checkout_seconds_count") > 0


def test_on_call_alerts_link_every_firing_alert_to_its_runbook(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    """The alert list reads Prometheus' rules API (data-source-managed rules); the table reads
    ALERTS. Both see the refresh-token reuse of the traffic, and every link is the rule's own
    runbook_url."""
    dashboard = load(DASHBOARDS_DIR / "gatehouse-on-call.json")
    values = _grafana_variables(stack, dashboard)

    def rules_once_reuse_fires() -> list[dict[str, Any]] | None:
        response = requests.get(
            f"{stack.prometheus}/api/v1/rules", params={"type": "alert"}, timeout=REQUEST
        )
        found = [r for group in response.json()["data"]["groups"] for r in group["rules"]]
        firing = [
            alert
            for rule in found
            if rule["name"] == "GatehouseRefreshTokenReuseDetected"
            for alert in rule.get("alerts", [])
            if alert["state"] == "firing"
        ]
        return found if firing else None

    # The traffic's reuse fires within a few evaluations (1 s each); a loaded machine needs more.
    rules = wait_for(
        rules_once_reuse_fires, "the traffic's refresh-token reuse to fire", SETTLE, stack.processes
    )
    assert {r["name"] for r in rules} == alert_names()
    for rule in rules:
        assert rule["annotations"]["runbook_url"] == f"{values['runbook_base']}/{rule['name']}.md"
        assert (ROOT / "docs" / "runbooks" / f"{rule['name']}.md").is_file()
    by_type = {p["type"]: p for p in panels(dashboard)}
    content = substitute(by_type["text"]["options"]["content"], values)
    for rule in rules:
        assert f"({rule['annotations']['runbook_url']})" in content, rule["name"]

    # The alert list's filters, applied to the alert instances of the rules API.
    options = by_type["alertlist"]["options"]
    label_filter = substitute(options["alertInstanceLabelFilter"], values)
    selector = f'ALERTS{{alertname=~".*{options["alertName"]}.*", {label_filter.strip("{}")}}}'
    listed = {
        a["labels"]["alertname"]
        for rule in rules
        for a in rule.get("alerts", [])
        if options["alertName"] in rule["name"]
        and a["labels"].get("namespace") == NAMESPACE
        and a["state"] in ("firing", "pending")
    }
    assert "GatehouseRefreshTokenReuseDetected" in listed
    assert {r["metric"]["alertname"] for r in stack.query(selector, at_range=False)} >= listed

    # The table's rows and the link each row's alert name opens.
    table = by_type["table"]
    [target] = table["targets"]
    rows = stack.query(substitute(target["expr"], values), at_range=False)
    firing = {r["metric"]["alertname"] for r in rows}
    assert "GatehouseRefreshTokenReuseDetected" in firing
    [override] = [
        o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "alertname"
    ]
    [link] = next(p for p in override["properties"] if p["id"] == "links")["value"]
    runbooks = {r["name"]: r["annotations"]["runbook_url"] for r in rules}
    for name in firing:
        url = substitute(link["url"], values).replace("${__value.raw}", name)
        assert url == runbooks[name]


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
