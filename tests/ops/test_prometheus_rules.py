"""Prometheus rules, Alertmanager configuration and runbooks, checked with the real tools.

`promtool check rules` and `promtool test rules` (alertmanager/tests/*.yml: every alert at every
severity fires when it should, and stays silent when it should), `amtool check-config` and
`amtool config routes test` (critical -> pager, warning -> ticket, info nowhere), the labels and
annotations every alert must carry, one runbook per alert and no runbook without an alert, and
`promtool check metrics` on a real /metrics exposition. A missing tool fails with the command that
installs it (`make ops-deps`): these checks are never skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.rules import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_SERIES,
    ROOT,
    RULE_FILES,
    RULE_TESTS,
    RULES_DIR,
    RUNBOOKS,
    SEVERITIES,
    alert_names,
    alert_rules,
    exposed_series_names,
    load_rule_groups,
    metric_names,
    output,
    recording_rule_names,
    require_tool,
    run,
)


def _walk_routes(route: dict[str, Any]) -> Iterable[dict[str, Any]]:
    yield route
    for child in route.get("routes", []):
        yield from _walk_routes(child)


# --- promtool: syntax and unit tests -------------------------------------------------------------


def test_promtool_check_rules_accepts_every_rule_file() -> None:
    promtool = require_tool("promtool")
    assert {p.name for p in RULE_FILES} >= {"alerts.yml", "recording.yml"}
    done = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert done.returncode == 0, output(done)
    assert done.stdout.count("SUCCESS") == len(RULE_FILES), output(done)


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.stem)
def test_promtool_unit_tests_pass(path: Path) -> None:
    promtool = require_tool("promtool")
    done = run([promtool, "test", "rules", str(path)], cwd=ROOT)
    assert done.returncode == 0, output(done)
    assert "SUCCESS" in done.stdout, output(done)
    assert "FAILED" not in done.stdout + done.stderr, output(done)


def test_there_are_promtool_unit_tests_for_every_group_of_alerts() -> None:
    assert {p.stem for p in RULE_TESTS} >= {
        "slo_test",
        "api_test",
        "jobs_test",
        "dependencies_test",
    }


def test_unit_tests_load_the_real_rule_files() -> None:
    for path in RULE_TESTS:
        spec = yaml.safe_load(path.read_text())
        loaded = {(path.parent / name).resolve() for name in spec["rule_files"]}
        assert loaded == {p.resolve() for p in RULE_FILES}, path.name


def test_every_alert_at_every_severity_is_unit_tested_firing_and_silent() -> None:
    firing: set[tuple[str, str]] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                expected = check.get("exp_alerts") or []
                if not expected:
                    silent.add(check["alertname"])
                for alert in expected:
                    firing.add((check["alertname"], alert["exp_labels"]["severity"]))
                    # The annotations are checked too, so templating errors cannot hide.
                    assert set(alert.get("exp_annotations", {})) >= {
                        "summary",
                        "description",
                        "runbook_url",
                    }, (path.name, case["name"], check["alertname"])
    rules = {(rule["alert"], rule["labels"]["severity"]) for rule in alert_rules()}
    assert rules - firing == set(), "alerts never seen firing in alertmanager/tests"
    assert alert_names() - silent == set(), "alerts never checked silent in alertmanager/tests"
    assert firing - rules == set(), "tests expect alerts that do not exist"


# --- what every alert carries --------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    alert_rules(),
    ids=lambda rule: f"{rule['alert']}-{rule['labels'].get('severity')}",
)
def test_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"Gatehouse[A-Z][A-Za-z0-9]+", name), name
    assert rule["labels"].get("severity") in SEVERITIES
    annotations = rule["annotations"]
    assert annotations.get("summary", "").strip()
    assert len(annotations.get("description", "").strip()) > 40
    url = annotations.get("runbook_url", "")
    assert url.endswith(f"docs/runbooks/{name}.md"), url
    assert urlsplit(url).scheme == "https"
    assert (RUNBOOKS / f"{name}.md").is_file(), f"docs/runbooks/{name}.md is missing"


def test_runbook_urls_share_one_base_ending_in_docs_runbooks() -> None:
    bases = {
        rule["annotations"]["runbook_url"].removesuffix(f"{rule['alert']}.md")
        for rule in alert_rules()
    }
    assert len(bases) == 1, bases
    assert bases.pop().endswith("docs/runbooks/")


def test_twin_alerts_differ_only_by_severity() -> None:
    """An alert name at two severities must be critical + warning: Alertmanager inhibits the
    warning while the critical one fires (equal alertname, namespace, job, queue)."""
    by_name: dict[str, list[str]] = {}
    for rule in alert_rules():
        by_name.setdefault(rule["alert"], []).append(rule["labels"]["severity"])
    for name, severities in by_name.items():
        assert len(severities) == len(set(severities)), f"{name}: a severity twice"
        if len(severities) > 1:
            assert sorted(severities) == ["critical", "warning"], name


def test_slo_alerts_use_the_sre_workbook_burn_rates_and_the_slo_numbers() -> None:
    """Page: 14.4x over 1h and 5m, 6x over 6h and 30m. Ticket: 1x over 3d and 6h (Table 5-8)."""
    budgets = {
        "GatehouseAvailabilityBudgetBurn": ("gatehouse:sli_availability:error_ratio_rate", "0.001"),
        "GatehouseLatencyBudgetBurn": ("gatehouse:sli_latency:slow_ratio_rate", "0.01"),
        "GatehousePasswordHashingLatencyBudgetBurn": (
            "gatehouse:sli_hashing_latency:slow_ratio_rate",
            "0.01",
        ),
    }
    seen = set()
    for rule in alert_rules():
        if rule["alert"] not in budgets:
            continue
        sli, budget = budgets[rule["alert"]]
        expr = " ".join(rule["expr"].split())
        if rule["labels"]["severity"] == "critical":
            for long, short, factor in (("1h", "5m", "14.4"), ("6h", "30m", "6")):
                for window in (long, short):
                    assert f"{sli}{window} > ({factor} * {budget})" in expr, (rule["alert"], expr)
        else:
            for window in ("3d", "6h"):
                assert f"{sli}{window} > {budget}" in expr, (rule["alert"], expr)
        seen.add((rule["alert"], rule["labels"]["severity"]))
    assert len(seen) == 6
    recording = (RULES_DIR / "recording.yml").read_text()
    assert 'le="0.1"' in recording
    assert 'le="0.5"' in recording


def test_rules_read_only_metrics_that_gatehouse_exposes() -> None:
    known = exposed_series_names() | recording_rule_names() | PROMETHEUS_SERIES
    for group in load_rule_groups():
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - known
            assert not unknown, (rule.get("alert") or rule.get("record"), unknown)


# --- runbooks ------------------------------------------------------------------------------------


def test_every_alert_has_a_runbook_and_every_runbook_names_an_alert() -> None:
    runbooks = {path.stem for path in RUNBOOKS.glob("*.md")}
    assert alert_names() - runbooks == set(), "alerts without a runbook"
    assert runbooks - alert_names() == set(), "runbooks for alerts that do not exist"


@pytest.mark.parametrize("name", sorted(alert_names()))
def test_runbook_says_what_it_means_how_to_confirm_and_how_to_mitigate(name: str) -> None:
    text = (RUNBOOKS / f"{name}.md").read_text()
    assert text.startswith(f"# {name}\n"), "the first line is `# <AlertName>`"
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings[:3] == ["Meaning", "Confirm", "Mitigate"], headings
    assert "```promql" in text, "the Confirm section shows the PromQL to run"
    for other in re.findall(r"\bGatehouse[A-Z][A-Za-z0-9]+\b", text):
        assert other in alert_names(), f"{name}.md names {other}, which is no alert"


# --- Alertmanager --------------------------------------------------------------------------------


def test_amtool_check_config_passes() -> None:
    amtool = require_tool("amtool")
    done = run([amtool, "check-config", str(ALERTMANAGER_CONFIG)])
    assert done.returncode == 0, output(done)
    assert "SUCCESS" in done.stdout, output(done)


@pytest.mark.parametrize(
    ("severity", "receiver"), [("critical", "pager"), ("warning", "ticket"), ("info", "null")]
)
def test_alerts_are_routed_by_severity(severity: str, receiver: str) -> None:
    amtool = require_tool("amtool")
    done = run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_CONFIG}",
            "alertname=GatehouseHigh5xxRatio",
            f"severity={severity}",
            "namespace=prod",
            "job=gatehouse-api",
        ]
    )
    assert done.returncode == 0, output(done)
    assert done.stdout.split() == [receiver], output(done)


def test_info_goes_nowhere_and_receivers_hold_no_secrets() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert set(receivers["null"]) == {"name"}, "the info/default receiver must notify no one"
    assert config["route"]["receiver"] == "null"
    for name in ("pager", "ticket"):
        hooks = receivers[name]["webhook_configs"]
        assert hooks
        for hook in hooks:
            host = urlsplit(hook["url"]).hostname or ""
            assert host.endswith(".example.com"), f"{name}: example hosts only, got {host}"
    text = ALERTMANAGER_CONFIG.read_text()
    for secret_field in ("routing_key:", "service_key:", "api_key:", "auth_password:", "token:"):
        assert secret_field not in text


def test_alerts_are_grouped_and_a_warning_is_inhibited_by_its_critical_twin() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    assert {"alertname", "namespace"} <= set(config["route"]["group_by"])
    twin = [
        rule
        for rule in config["inhibit_rules"]
        if rule.get("source_matchers") == ['severity="critical"']
        and rule.get("target_matchers") == ['severity="warning"']
    ]
    assert len(twin) == 1
    assert {"alertname", "namespace", "job"} <= set(twin[0]["equal"])
    receivers = {route["receiver"] for route in _walk_routes(config["route"])}
    assert receivers == {r["name"] for r in config["receivers"]}


# --- a real exposition ---------------------------------------------------------------------------


def test_promtool_check_metrics_accepts_the_real_exposition(client) -> None:
    """In-process /metrics (single process); the gunicorn multiprocess exposition is checked by
    tests/e2e/test_observability_stack.py."""
    promtool = require_tool("promtool")
    client.get("/api/v1/users/me")
    client.post("/api/v1/auth/login", json={"email": "nobody@example.com", "password": "x" * 12})
    body = client.get("/metrics").get_data(as_text=True)
    assert "flask_http_request_duration_seconds_bucket" in body
    done = run([promtool, "check", "metrics"], input=body)
    assert done.returncode == 0, output(done)
