"""The k6 thresholds are the SLOs themselves, read from the Prometheus rules.

`k6 inspect` (the real k6) evaluates each scenario script and prints the options it would run
with; the SLO scenarios (smoke, load, soak: CI's k6 stage and `make load`) must judge exactly:

- standard requests: 99 % within the `le` of `gatehouse:sli_latency` (100 ms);
- password-hashing requests: 99 % within the `le` of `gatehouse:sli_hashing_latency` (500 ms);
- availability: at most the error budget of `GatehouseAvailabilityBudgetBurn` (0.1 %) of requests
  answered with a 5xx (or not at all);

and the endpoints k6 tags `hashing` are the routes the hashing SLI selects, the others not.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.load.runner import ENDPOINTS
from tests.support.ops import ROOT, output, run, tool

RULES = ROOT / "alertmanager" / "rules"
SLO_SCENARIOS = ("smoke", "load", "soak")
DEGRADED_SCENARIOS = ("stress", "spike")
# The route each k6 endpoint tag requests (tests/load/k6/lib.js).
ROUTES = {
    "login": "/api/v1/auth/login",
    "register": "/api/v1/auth/register",
    "refresh": "/api/v1/auth/refresh",
    "me": "/api/v1/users/me",
    "admin_list": "/api/v1/users/",
}


def recorded(name: str) -> str:
    for group in yaml.safe_load((RULES / "recording.yml").read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("record") == name:
                expr: str = rule["expr"]
                return expr
    raise AssertionError(f"no recording rule {name}")


def bucket_ms(expr: str) -> int:
    (le,) = set(re.findall(r'le="([0-9.]+)"', expr))
    return round(float(le) * 1000)


@pytest.fixture(scope="module")
def slo() -> dict[str, Any]:
    hashing = recorded("gatehouse:sli_hashing_latency:slow_ratio_rate5m")
    # The availability objective, recorded once as data: the error budget is 1 - objective.
    objectives = {
        rule["labels"]["slo"]: rule["expr"]
        for group in yaml.safe_load((RULES / "recording.yml").read_text())["groups"]
        for rule in group["rules"]
        if rule.get("record") == "gatehouse:slo_objective:ratio"
    }
    (objective,) = re.findall(r"vector\(([0-9.]+)\)", objectives["availability"])
    budget = round(1 - float(objective), 6)
    (route_regex,) = set(re.findall(r'url_rule=~"([^"]+)"', hashing))
    return {
        "standard_ms": bucket_ms(recorded("gatehouse:sli_latency:slow_ratio_rate5m")),
        "hashing_ms": bucket_ms(hashing),
        "budget": budget,
        "hashing_routes": re.compile(route_regex),
    }


def thresholds(scenario: str, selection: str = "slo") -> dict[str, list[str]]:
    # `k6 run` sees the environment (the runner sets THRESHOLDS there); `k6 inspect` only `-e`.
    script = str(ROOT / "tests/load/k6" / f"{scenario}.js")
    done = run([tool("k6"), "inspect", "-e", f"THRESHOLDS={selection}", script])
    assert done.returncode == 0, output(done)
    found: dict[str, list[str]] = json.loads(done.stdout)["thresholds"]
    return found


@pytest.mark.parametrize("scenario", SLO_SCENARIOS)
def test_slo_scenarios_judge_the_slos(scenario: str, slo: dict[str, Any]) -> None:
    found = thresholds(scenario)
    assert found["http_req_duration{slo:standard}"] == [f"p(99)<{slo['standard_ms']}"]
    assert found["http_req_duration{slo:hashing}"] == [f"p(99)<{slo['hashing_ms']}"]
    assert found["server_errors"] == [f"rate<={slo['budget']:g}"]
    # Latency is judged per SLO class only: nothing mixes the classes or is stricter than the SLO.
    judged = {
        m for m, t in found.items() if m.startswith("http_req_duration") and "max<" not in t[0]
    }
    assert judged == {"http_req_duration{slo:standard}", "http_req_duration{slo:hashing}"}
    # Every endpoint's latency stays in the summary (the runner's table).
    for endpoint in ENDPOINTS:
        assert f"http_req_duration{{endpoint:{endpoint}}}" in found


@pytest.mark.parametrize("scenario", DEGRADED_SCENARIOS)
def test_overload_scenarios_may_be_slow_but_keep_availability(
    scenario: str, slo: dict[str, Any]
) -> None:
    found = thresholds(scenario)
    assert found["server_errors"] == [f"rate<={slo['budget']:g}"]
    assert found["http_req_duration{slo:standard}"] == ["p(99)<2000"]


def test_functional_runs_keep_availability_without_latency(slo: dict[str, Any]) -> None:
    found = thresholds("smoke", "errors")
    assert found["server_errors"] == [f"rate<={slo['budget']:g}"]
    assert found["http_req_duration{slo:standard}"] == ["p(99)<60000"]


def test_k6_slo_classes_are_the_rules_classes(slo: dict[str, Any]) -> None:
    assert set(ROUTES) == set(ENDPOINTS)
    lib = (ROOT / "tests/load/k6/lib.js").read_text()
    for endpoint, route in ROUTES.items():
        assert f"`${{API}}{route.removeprefix('/api/v1')}" in lib, f"{endpoint}: {route}"
        expected = "hashing" if slo["hashing_routes"].fullmatch(route) else "standard"
        assert ENDPOINTS[endpoint] == expected, endpoint
        assert re.search(rf"\b{endpoint}: '{expected}'", lib), f"lib.js tags {endpoint} otherwise"
