"""The traffic the observability stack's tests drive (once per session, after the stack), and
what they share to read the stack: a metric of an exposition, and Grafana's variables and the
per-pod values of a dashboard query as Prometheus answers them."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.accounts import STRONG_PASSWORD
from tests.support.dashboards import substitute, variables
from tests.support.observability_processes import SETTLE
from tests.support.observability_stack import (
    API_JOB,
    API_POD,
    NAMESPACE,
    WORKER_JOB,
    WORKER_POD,
    Client,
    Stack,
)

# Grafana's built-ins as replaced in these tests (Prometheus scrapes every second here).
GRAFANA_BUILTINS = {"__rate_interval": "30s", "__interval": "1s", "__range": "5m"}


@pytest.fixture(scope="session")
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


def sample_value(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not exposed")


def regex_escape(value: str) -> str:
    """Escape a label value for a PromQL regex as Grafana does: a backslash for the regex,
    doubled inside the double-quoted string (`127\\\\.0\\\\.0\\\\.1`); RE2 rejects `\\-`."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


def grafana_variables(stack: Stack, dashboard: dict[str, Any]) -> dict[str, str]:
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


def values_by_pod(stack: Stack, expr: str) -> dict[str, float]:
    """The latest value of each series of `expr`, by pod (and container, where it has one)."""
    found = {}
    for series in stack.query(expr, at_range=False):
        labels = series["metric"]
        key = "/".join(filter(None, (labels.get("pod", ""), labels.get("container"))))
        assert key not in found, f"two series for {key}: {expr}"
        found[key] = round(float(series["value"][1]), 3)
    return found
