"""The on-call dashboard's panels against the observability stack
(tests/support/observability_stack.py): the container panels at the rates the cluster stand-in
serves, for the Gatehouse containers only; the gunicorn saturation panel with a request held in
flight, and not counting the scrape; the alert list's and the table's alerts and runbook links
against the rules Prometheus evaluates."""

from __future__ import annotations

import json
import math
import socket
from typing import Any
from urllib.parse import urlsplit

import requests

from tests.support.dashboards import DASHBOARDS_DIR, expressions, load, panels, substitute
from tests.support.kube_metrics import gatehouse_containers
from tests.support.observability_processes import REQUEST, ROOT, SETTLE, wait_for
from tests.support.observability_stack import API_POD, NAMESPACE, WORKER_POD, Stack
from tests.support.observability_traffic import grafana_variables, sample_value, values_by_pod
from tests.support.rules import alert_names


def test_on_call_use_panels_read_the_cluster_exporters_series_of_the_gatehouse_pods_only(
    stack: Stack,
) -> None:
    """The container panels against the kube-prometheus stand-in: the Gatehouse containers of
    the two pods, each counted once (not with its pod-level cgroup, container=""), not the pause
    container or another pod of the namespace, at the rates the stand-in serves."""
    dashboard = load(DASHBOARDS_DIR / "gatehouse-on-call.json")
    values = grafana_variables(stack, dashboard)
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
            found = values_by_pod(stack, exprs[title])
            return found.keys() == wanted.keys() and all(
                math.isclose(found[pod], value, abs_tol=0.02) for pod, value in wanted.items()
            )

        wait_for(close, f"{title}: {wanted}", SETTLE, stack.processes)


def test_on_call_gunicorn_saturation_counts_requests_in_flight_not_the_scrape(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    dashboard = load(DASHBOARDS_DIR / "gatehouse-on-call.json")
    values = grafana_variables(stack, dashboard)
    exprs = {title: substitute(expr, values) for title, ref, expr in expressions(dashboard)}
    threads = 2 * 4  # WEB_CONCURRENCY x gunicorn.conf.py's GUNICORN_THREADS default
    body = requests.get(stack.api_metrics, timeout=REQUEST).text
    assert sample_value(body, "gatehouse_gunicorn_threads") == threads
    assert sample_value(body, "gatehouse_gunicorn_threads_busy") == 0  # this scrape is not counted
    busy = exprs["gunicorn threads busy"]
    wait_for(lambda: values_by_pod(stack, busy) == {API_POD: 0.0}, "no busy thread", SETTLE)

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
            lambda: values_by_pod(stack, busy) == {API_POD: round(1 / threads, 3)},
            "one busy thread in Prometheus",
            SETTLE,
            stack.processes,
        )
        body = requests.get(stack.api_metrics, timeout=REQUEST).text
        assert sample_value(body, "gatehouse_gunicorn_threads_busy") == 1
        held.sendall(payload[10:])
        assert held.recv(64).startswith(b"HTTP/1.1 401"), "the login was answered"
    wait_for(lambda: values_by_pod(stack, busy) == {API_POD: 0.0}, "the thread freed", SETTLE)

    # Every request took a pooled connection: the checkout wait is measured, per pod.
    wait = [
        e for t, e in ((t, e) for t, _, e in expressions(dashboard)) if t == "DB pool checkout wait"
    ]
    for expr in wait:
        assert API_POD in values_by_pod(stack, substitute(expr, values)), expr
    assert sample_value(body, "gatehouse_db_pool_checkout_seconds_count") > 0


def test_on_call_alerts_link_every_firing_alert_to_its_runbook(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    """The alert list reads Prometheus' rules API (data-source-managed rules); the table reads
    ALERTS. Both see the refresh-token reuse of the traffic, and every link is the rule's own
    runbook_url."""
    dashboard = load(DASHBOARDS_DIR / "gatehouse-on-call.json")
    values = grafana_variables(stack, dashboard)
    response = requests.get(
        f"{stack.prometheus}/api/v1/rules", params={"type": "alert"}, timeout=REQUEST
    )
    rules = [r for group in response.json()["data"]["groups"] for r in group["rules"]]
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
