"""The Grafana dashboards of the repository: their panels, variables and queries as Grafana sends
them to Prometheus."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.rules import ROOT

DASHBOARDS_DIR = ROOT / "grafana" / "dashboards"
DASHBOARDS = sorted(DASHBOARDS_DIR.glob("*.json"))
PROVISIONING = ROOT / "grafana" / "provisioning"
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
EXPECTED_UIDS = {
    "gatehouse-service",
    "gatehouse-jobs",
    "gatehouse-security",
    "gatehouse-dependencies",
    "gatehouse-oncall",
}
# Panels that send no PromQL: Grafana's alert list (it reads the alerting rules) and text.
QUERYLESS_PANELS = {"alertlist", "text"}
# Grafana's built-in variables as they are replaced before a query reaches Prometheus.
BUILTIN_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "6h"}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace `$name` and `${name}` the way Grafana does before sending the query."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name])
        expr = re.sub(rf"\${re.escape(name)}\b", lambda _m, n=name: values[n], expr)
    return expr


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query of every panel."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target.get("refId", ""), target.get("expr", "")


def all_expressions() -> list[tuple[str, str, str, str]]:
    """(dashboard file, panel title, refId, expr) over every dashboard."""
    return [
        (path.name, title, ref, expr)
        for path in DASHBOARDS
        for title, ref, expr in expressions(load(path))
    ]


def selectors(expr: str, names: str | None = None) -> list[tuple[str, str]]:
    """(metric, matchers) of every series selector in `expr` reading Gatehouse's series, or the
    series whose names match the regex `names`."""
    found = []
    pattern = names or r"gatehouse[_:][A-Za-z0-9_:]*|flask_[A-Za-z0-9_]*|up|scrape_duration_seconds"
    for match in re.finditer(rf"\b({pattern})\b", expr):
        rest = expr[match.end() :]
        inner = re.match(r"\{([^}]*)\}", rest)
        found.append((match.group(1), inner.group(1) if inner else ""))
    return found
