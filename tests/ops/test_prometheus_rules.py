"""Prometheus rules, Alertmanager configuration and runbooks, checked with the real tools.

`promtool check rules` and `promtool test rules` (alertmanager/tests/*.yml: every alert at every
severity fires when it should, and stays silent when it should; a Redis outage with every API pod
NotReady pages within 5 minutes), the SLOs recorded once and read by every SLO alert,
`amtool check-config` and `amtool config routes test` (critical -> pager, warning -> ticket, info
nowhere, Watchdog -> the dead man's switch, no severity -> ticket), the labels and annotations
every alert must carry, runbook links built from one setting, one runbook per alert and no
runbook without an alert, and `promtool check metrics` on a real /metrics exposition. A missing
tool fails with the command that installs it (`make ops-deps`): these checks are never skipped.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.rules import (
    ALERTMANAGER_CONFIG,
    EDGE_SERIES,
    JOB_SERIES,
    PROMETHEUS_SERIES,
    ROOT,
    RULE_FILES,
    RULE_TESTS,
    RULES_DIR,
    RUNBOOKS,
    SEVERITIES,
    WATCHDOG,
    WATCHDOG_SEVERITY,
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


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_k8s_generated", ROOT / "scripts" / "build_k8s_generated.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        "edge_test",
        "webhooks_test",
        "oidc_test",
        "housekeeping_test",
    }


def test_unit_tests_load_the_real_rule_files() -> None:
    for path in RULE_TESTS:
        spec = yaml.safe_load(path.read_text())
        loaded = {p.resolve() for name in spec["rule_files"] for p in path.parent.glob(name)}
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
                    assert check["alertname"] != WATCHDOG, "the Watchdog never falls silent"
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
    always_firing = {WATCHDOG}
    assert alert_names() - silent - always_firing == set(), "alerts never checked silent"
    assert firing - rules == set(), "tests expect alerts that do not exist"


# --- what every alert carries --------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    alert_rules(),
    ids=lambda rule: f"{rule['alert']}-{rule['labels'].get('severity')}",
)
def test_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    if name == WATCHDOG:
        assert rule["labels"].get("severity") == WATCHDOG_SEVERITY
    else:
        assert re.fullmatch(r"Gatehouse[A-Z][A-Za-z0-9]+", name), name
        assert rule["labels"].get("severity") in SEVERITIES
    annotations = rule["annotations"]
    assert annotations.get("summary", "").strip()
    assert len(annotations.get("description", "").strip()) > 40
    # Relative to the repository root: the generated PrometheusRules add the one base URL.
    assert annotations.get("runbook_url") == f"docs/runbooks/{name}.md"
    assert (ROOT / annotations["runbook_url"]).is_file(), f"docs/runbooks/{name}.md is missing"


def test_runbook_links_come_from_one_setting() -> None:
    """Every PrometheusRule the cluster gets links each alert to its runbook under
    RUNBOOK_BASE_URL, a real https address (no placeholder host); changing that one value
    changes every link."""
    generator = _generator()
    base = generator.RUNBOOK_BASE_URL
    parts = urlsplit(base)
    assert parts.scheme == "https"
    assert parts.hostname
    assert not parts.hostname.endswith(("example.com", "example.org"))
    assert base.endswith("/")
    files = generator.expected_files(ROOT)
    rules = [
        yaml.safe_load(text)
        for path, text in files.items()
        if path.startswith(generator.MONITORING_DIR) and "/prometheusrule-" in path
    ]
    links = {
        rule["alert"]: rule["annotations"]["runbook_url"]
        for document in rules
        for group in document["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert set(links) == alert_names()
    for name, url in links.items():
        assert url == f"{base}docs/runbooks/{name}.md", url
    other = generator.with_runbook_links(load_rule_groups(), "https://git.internal/gh/")
    moved = {
        rule["annotations"]["runbook_url"] for g in other for rule in g["rules"] if "alert" in rule
    }
    assert moved == {f"https://git.internal/gh/docs/runbooks/{name}.md" for name in alert_names()}


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


# The SLOs, recorded once in recording.yml: slo label -> objective.
OBJECTIVES = {"availability": 0.999, "latency": 0.99, "hashing_latency": 0.99}
# Alert -> (SLI recording prefix, the slo whose error budget it burns).
SLO_ALERTS = {
    "GatehouseAvailabilityBudgetBurn": (
        "gatehouse:sli_availability:error_ratio_rate",
        "availability",
    ),
    "GatehouseLatencyBudgetBurn": ("gatehouse:sli_latency:slow_ratio_rate", "latency"),
    "GatehousePasswordHashingLatencyBudgetBurn": (
        "gatehouse:sli_hashing_latency:slow_ratio_rate",
        "hashing_latency",
    ),
    "GatehouseEdgeAvailabilityBudgetBurn": (
        "gatehouse:sli_edge_availability:error_ratio_rate",
        "availability",
    ),
}


def test_slo_objectives_and_error_budgets_are_recorded_once() -> None:
    objectives = {}
    budgets = []
    for group in load_rule_groups():
        for rule in group["rules"]:
            if rule.get("record") == "gatehouse:slo_objective:ratio":
                match = re.fullmatch(r"vector\(([0-9.]+)\)", rule["expr"].strip())
                assert match, rule["expr"]
                slo = rule["labels"]["slo"]
                assert slo not in objectives, f"objective {slo} recorded twice"
                objectives[slo] = float(match.group(1))
            elif rule.get("record") == "gatehouse:slo_error_budget:ratio":
                budgets.append(" ".join(rule["expr"].split()))
    assert objectives == OBJECTIVES
    assert budgets == ["1 - gatehouse:slo_objective:ratio"]


def test_slo_alerts_use_the_sre_workbook_burn_rates_against_the_recorded_budgets() -> None:
    """Page: 14.4x over 1h and 5m, 6x over 6h and 30m. Ticket: 3x over 1d and 2h, 1x over 3d
    and 6h. Each window compares the SLI with a multiple of the recorded error budget."""
    tiers = {
        "critical": (("1h", "5m", "14.4 * "), ("6h", "30m", "6 * ")),
        "warning": (("1d", "2h", "3 * "), ("3d", "6h", "")),
    }
    seen = set()
    for rule in alert_rules():
        if rule["alert"] not in SLO_ALERTS:
            continue
        sli, slo = SLO_ALERTS[rule["alert"]]
        expr = " ".join(rule["expr"].split())
        severity = rule["labels"]["severity"]
        for long, short, factor in tiers[severity]:
            for window in (long, short):
                budget = f'({factor}gatehouse:slo_error_budget:ratio{{slo="{slo}"}})'
                assert f"{sli}{window} > on () group_left () {budget}" in expr, (rule, expr)
        assert expr.count(" > ") == 4, expr
        seen.add((rule["alert"], severity))
    assert seen == {(alert, sev) for alert in SLO_ALERTS for sev in tiers}
    recording = (RULES_DIR / "recording.yml").read_text()
    assert 'le="0.1"' in recording
    assert 'le="0.5"' in recording


def test_no_rule_repeats_an_slo_number() -> None:
    """0.999, 0.99 and their budgets 0.001, 0.01 appear in the objective recordings only (the
    1 % of GatehouseHigh5xxRatio's ticket is a symptom threshold, no SLO)."""
    for group in load_rule_groups():
        for rule in group["rules"]:
            if rule.get("record") == "gatehouse:slo_objective:ratio":
                continue
            if rule.get("alert") == "GatehouseHigh5xxRatio":
                continue
            numbers = set(re.findall(r"(?<![\w.])0\.(?:999?|00?1)(?![\d])", rule["expr"]))
            assert not numbers, (rule.get("alert") or rule.get("record"), numbers)
            text = " ".join(rule.get("annotations", {}).values())
            assert not re.search(r"\b99(?:\.9)? ?%", text), (rule["alert"], text)


def test_the_30_day_window_averages_the_5_minute_ratios() -> None:
    period = {
        rule["record"]: " ".join(rule["expr"].split())
        for group in load_rule_groups()
        for rule in group["rules"]
        if rule.get("record", "").endswith("_rate30d")
    }
    assert set(period) == {
        "gatehouse:sli_availability:error_ratio_rate30d",
        "gatehouse:sli_latency:slow_ratio_rate30d",
        "gatehouse:sli_hashing_latency:slow_ratio_rate30d",
    }
    for name, expr in period.items():
        assert expr == f"avg_over_time({name.removesuffix('30d')}5m[30d])", expr
    for group in load_rule_groups():
        for rule in group["rules"]:
            assert "[30d]" not in rule["expr"] or rule.get("record") in period, rule


def test_edge_sli_is_recorded_for_every_burn_rate_window() -> None:
    names = recording_rule_names()
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        assert f"gatehouse:sli_edge_availability:error_ratio_rate{window}" in names
        assert f"gatehouse:sli_availability:error_ratio_rate{window}" in names


def test_redis_outage_scenario_pages_within_5_minutes() -> None:
    """The promtool scenario of issue 13: Redis down, every API pod NotReady, Flask's counters
    flat. Silent at the outage's start, a critical alert at most 5 minutes later."""
    (case,) = [
        case
        for path in RULE_TESTS
        for case in yaml.safe_load(path.read_text())["tests"]
        if case["name"].startswith("Redis outage with every API pod NotReady")
    ]
    series = {s["series"].split("{")[0] for s in case["input_series"]}
    assert {"gatehouse_redis_up", "kube_deployment_status_replicas_available"} <= series
    checks = case["alert_rule_test"]

    def minutes(value: str) -> int:
        return int(value.removesuffix("m"))

    start = min(minutes(c["eval_time"]) for c in checks)
    pages = [
        c
        for c in checks
        if any(a["exp_labels"]["severity"] == "critical" for a in c.get("exp_alerts") or [])
    ]
    assert pages
    assert min(minutes(c["eval_time"]) for c in pages) - start <= 5
    silent_at_start = {c["alertname"] for c in checks if minutes(c["eval_time"]) == start}
    assert {c["alertname"] for c in pages} <= silent_at_start


def test_rules_read_only_metrics_that_gatehouse_exposes() -> None:
    known = exposed_series_names() | recording_rule_names() | PROMETHEUS_SERIES | EDGE_SERIES
    known |= JOB_SERIES
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
    ("labels", "receiver"),
    [
        (["alertname=GatehouseHigh5xxRatio", "severity=critical"], "pager"),
        (["alertname=GatehouseHigh5xxRatio", "severity=warning"], "ticket"),
        (["alertname=GatehouseHigh5xxRatio", "severity=info"], "null"),
        (["alertname=Watchdog", f"severity={WATCHDOG_SEVERITY}"], "watchdog"),
        # Without a severity, or with an unknown one: the default receiver, never dropped.
        (["alertname=SomeoneElsesAlert"], "ticket"),
        (["alertname=GatehouseHigh5xxRatio", "severity=page"], "ticket"),
    ],
    ids=["critical", "warning", "info", "watchdog", "no-severity", "unknown-severity"],
)
def test_alerts_are_routed_by_severity(labels: list[str], receiver: str) -> None:
    amtool = require_tool("amtool")
    done = run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_CONFIG}",
            *labels,
            "namespace=gatehouse-prod",
            "job=gatehouse-api",
        ]
    )
    assert done.returncode == 0, output(done)
    assert done.stdout.split() == [receiver], output(done)


def test_watchdog_reaches_the_dead_mans_switch_every_minute() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    (route,) = [r for r in config["route"]["routes"] if r["receiver"] == "watchdog"]
    assert route["matchers"] == [f'alertname="{WATCHDOG}"']
    assert config["route"]["routes"][0] is route, "first, before the severity routes"
    assert route["repeat_interval"] == "1m"
    assert route["group_interval"] == "1m"
    (watchdog,) = [r for r in alert_rules() if r["alert"] == WATCHDOG]
    assert watchdog["expr"].strip() == "vector(1)"
    assert "for" not in watchdog


def test_info_goes_nowhere_and_receivers_hold_no_secrets() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert set(receivers["null"]) == {"name"}, "the info receiver must notify no one"
    assert config["route"]["receiver"] == "ticket", "the default receiver must notify someone"
    for name in ("pager", "ticket", "watchdog"):
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
    outage = [
        rule
        for rule in config["inhibit_rules"]
        if rule.get("source_matchers") == ['alertname="GatehouseAPIUnavailable"']
    ]
    assert len(outage) == 1
    (target,) = outage[0]["target_matchers"]
    inhibited = set(target.removeprefix('alertname=~"').removesuffix('"').split("|"))
    assert inhibited == {"GatehouseEdgeAvailabilityBudgetBurn", "GatehouseTrafficDropped"}
    assert inhibited <= alert_names()
    assert outage[0]["equal"] == ["namespace"]
    # The service-wide 5xx page covers the provider's: one page for one outage.
    (provider,) = [
        rule
        for rule in config["inhibit_rules"]
        if rule.get("target_matchers") == ['alertname="GatehouseOAuthHigh5xxRatio"']
    ]
    assert provider["source_matchers"] == [
        'alertname="GatehouseHigh5xxRatio"',
        'severity="critical"',
    ]
    assert set(provider["equal"]) == {"namespace", "job"}
    assert {"GatehouseHigh5xxRatio", "GatehouseOAuthHigh5xxRatio"} <= alert_names()
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
