"""The metrics the observability stack (tests/support/observability_stack.py) exposes: the
multiprocess aggregation over the gunicorn workers (and the dead-worker cleanup), and
`promtool check metrics` on both real expositions, the API's and the job worker's."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from tests.support.observability_processes import REQUEST, SETTLE, STARTUP, wait_for
from tests.support.observability_stack import (
    API_JOB,
    JWKS,
    MAX_OVERFLOW,
    POOL_SIZE,
    Client,
    Stack,
)
from tests.support.observability_traffic import sample_value
from tests.support.rules import output, require_tool, run


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
        assert sample_value(body, "gatehouse_db_pool_capacity") == 2 * (POOL_SIZE + MAX_OVERFLOW)
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
            sample_value(
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
