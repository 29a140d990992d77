"""The observability stack end to end, with real processes on loopback only, started once per
test session (per xdist worker) for the modules tests/e2e/test_observability_*.py:

- the API under gunicorn (`gunicorn.conf.py`: 2 workers, `PROMETHEUS_MULTIPROC_DIR` in a temp dir)
  on a fresh PostgreSQL database (migrated with `flask --app wsgi db upgrade`) and a Redis db;
- a job worker (`flask --app wsgi jobs worker`, its own multiprocess dir, `METRICS_PORT`) sending
  through a real SMTP server (aiosmtpd);
- Prometheus (Debian package `prometheus`) scraping both every second, with the project's
  recording and alerting rules loaded, evaluated every second, and the stand-in for the cluster's
  container exporters (tests/support/kube_metrics.py);
- Alertmanager (Debian package `prometheus-alertmanager`) with a configuration derived from
  alertmanager/alertmanager.yml whose receivers point at a webhook server run by the tests
  (tests/support/observability_processes.py).

One test drops the stack's database (marked `drops_the_stack_database`): it runs after every other
test of the stack, whatever order the modules are given in.

Missing tools fail the tests (`make ops-deps`), they never skip them.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import yaml

from tests.support.database import DB_NAME_PREFIX, drop_database, fresh_database, worker_index
from tests.support.database import signing_keys_json as signing_keys
from tests.support.kube_metrics import KubeExporters, gatehouse_containers
from tests.support.observability_processes import (
    REQUEST,
    ROOT,
    STARTUP,
    Process,
    Webhook,
    alertmanager_config,
    shortened_rules,
    start,
    start_webhook,
    wait_for,
)
from tests.support.rules import output, require_tool, run
from tests.support.smtp import SmtpSink
from tests.support.waiting import free_port

API_JOB, WORKER_JOB = "gatehouse-api", "gatehouse-worker"
# The `pod` target label a ServiceMonitor gives each target, and the pods of the cluster series.
API_POD, WORKER_POD = "gatehouse-api-7c9d5b8f6d-x2x4q", "gatehouse-worker-6f7b9c8d5-k7m2p"
NAMESPACE = "obs-e2e"
POOL_SIZE, MAX_OVERFLOW = 4, 2  # per process: capacity 6, 12 for two gunicorn workers
JWKS = "/.well-known/jwks.json"
DROPS_DATABASE = "drops_the_stack_database"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{DROPS_DATABASE}: drops the observability stack's database; runs after the stack's "
        "other tests",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests that drop the stack's database after the last other test using the stack:
    the stack is shared by several modules, which a command line may name in any order."""
    dropping = [item for item in items if item.get_closest_marker(DROPS_DATABASE)]
    kept = [item for item in items if not item.get_closest_marker(DROPS_DATABASE)]
    users = [i for i, item in enumerate(kept) if "stack" in getattr(item, "fixturenames", ())]
    if dropping and users:
        items[:] = kept[: users[-1] + 1] + dropping + kept[users[-1] + 1 :]


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


@pytest.fixture(scope="session")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = require_tool("prometheus")
    alertmanager_bin = require_tool("prometheus-alertmanager", "alertmanager")
    require_tool("promtool")
    from aiosmtpd.controller import Controller

    work = tmp_path_factory.mktemp("observability-stack")
    logs = work / "logs"
    logs.mkdir()
    # Per xdist worker: the stack's tests may be spread over both, each building a stack.
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
