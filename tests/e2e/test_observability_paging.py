"""Alerting through the observability stack (tests/support/observability_stack.py): routing and
inhibition in the real Alertmanager, and dropping the database mid-run makes the 5xx-ratio alert
(and the database alert) reach the pager webhook through Prometheus and Alertmanager."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.support.accounts import STRONG_PASSWORD
from tests.support.database import drop_database
from tests.support.observability_processes import REQUEST, SETTLE, STARTUP, wait_for
from tests.support.observability_stack import API_JOB, JWKS, NAMESPACE, Client, Stack


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


# The stack is shared and stays broken after this: the marker runs it after the stack's other tests.
@pytest.mark.drops_the_stack_database
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
