"""EVERY PromQL query of EVERY dashboard panel returns data from the observability stack's
Prometheus (tests/support/observability_stack.py), with Grafana's variables as Grafana resolves
them, after the traffic of tests/support/observability_traffic.py."""

from __future__ import annotations

import time
from typing import Any

from tests.support.dashboards import DASHBOARDS, expressions, load, substitute
from tests.support.kube_metrics import KUBERNETES_SERIES
from tests.support.observability_processes import SETTLE
from tests.support.observability_stack import NAMESPACE, WORKER_JOB, Stack
from tests.support.observability_traffic import grafana_variables
from tests.support.rules import metric_names


def test_every_dashboard_query_returns_data(stack: Stack, traffic: dict[str, Any]) -> None:
    queries = []
    for path in DASHBOARDS:
        dashboard = load(path)
        values = grafana_variables(stack, dashboard)
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
