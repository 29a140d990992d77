"""The Prometheus rules and the Alertmanager configuration of the repository, the series names
Gatehouse exposes and an expression reads, and running the Prometheus tools (a missing one fails
with the command that installs it: these checks are never skipped)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "alertmanager" / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
RULE_TESTS = sorted((ROOT / "alertmanager" / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = ROOT / "alertmanager" / "alertmanager.yml"
RUNBOOKS = ROOT / "docs" / "runbooks"
SEVERITIES = ("critical", "warning", "info")
# The always-firing alert that proves the pipeline alive, and its severity (routed to the dead
# man's switch, never to people).
WATCHDOG = "Watchdog"
WATCHDOG_SEVERITY = "none"
INSTALL_HINT = (
    "run `make ops-deps` (Debian/Ubuntu: apt-get install prometheus prometheus-alertmanager)"
)
# Metric names Prometheus itself produces for every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Series of the Kubernetes monitoring stack that rules/edge.yml reads (measured in front of
# Flask): ingress-nginx's controller metrics and kube-state-metrics.
EDGE_SERIES = {
    "nginx_ingress_controller_requests",
    "kube_deployment_spec_replicas",
    "kube_deployment_status_replicas_available",
}
# kube-state-metrics' series of the housekeeping CronJob and its Jobs (rules/housekeeping.yml).
JOB_SERIES = {
    "kube_job_failed",
    "kube_job_status_start_time",
    "kube_cronjob_status_last_successful_time",
}


def require_tool(*names: str) -> str:
    """The path of the first of `names` on PATH; fails (never skips) when none is installed."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"{' or '.join(names)} not found on PATH: {INSTALL_HINT}", pytrace=False)


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, **kwargs)


def output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def load_rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in RULE_FILES:
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_rule_groups() for rule in group["rules"] if "alert" in rule]


def recording_rule_names() -> set[str]:
    return {
        rule["record"]
        for group in load_rule_groups()
        for rule in group["rules"]
        if "record" in rule
    }


def alert_names() -> set[str]:
    return {rule["alert"] for rule in alert_rules()}


def metric_names(expr: str) -> set[str]:
    """Series names an expression reads: gatehouse_* and flask_* (prometheus-flask-exporter)
    metrics, gatehouse:* recording rules, nginx_* / kube_* / probe_* series of the monitoring
    stack, up ..."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    names = set(
        re.findall(r"\b(?:gatehouse[_:]|flask_|nginx_|kube_|probe_)[A-Za-z0-9_:]*", without_strings)
    )
    names |= {n for n in PROMETHEUS_SERIES if re.search(rf"\b{n}\b(?=\s*[{{\[)])", without_strings)}
    return names


def exposed_series_names() -> set[str]:
    """Every series name Gatehouse can expose: the metric objects of observability.metrics and
    prometheus-flask-exporter's (with their sample suffixes), and the scrape-time gauges of
    webapp.ops.metrics' and webapp.webhooks.metrics' StateCollector."""
    from flask import Flask
    from prometheus_client import REGISTRY

    import observability.metrics as metrics

    http = metrics.init_http_metrics(Flask("series-names")).registry
    names = {
        "gatehouse_queue_depth",
        "gatehouse_dead_letter_jobs",
        "gatehouse_redis_up",
        "gatehouse_outbox_messages",
        "gatehouse_outbox_oldest_unsent_age_seconds",
        "gatehouse_database_up",
        "gatehouse_backup_last_success_timestamp_seconds",
        "gatehouse_backup_last_size_bytes",
        "gatehouse_webhook_endpoints_failing",
        "gatehouse_webhook_endpoints_disabled",
        "gatehouse_webhook_oldest_undelivered_age_seconds",
        "gatehouse_webhook_oldest_overdue_age_seconds",
        "gatehouse_webhook_dead_messages",
    }
    assert metrics.LOGINS is not None  # the module's metrics are registered on import
    for family in [*REGISTRY.collect(), *http.collect()]:
        if not family.name.startswith(("gatehouse_", "flask_")):
            continue
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum")}
        else:
            names.add(family.name)
    return names
