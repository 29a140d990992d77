"""docker-compose.yml: a valid Compose file whose services start in order, report their health and
mount the repository's real dashboards, provisioning, rules and Alertmanager configuration."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ops import ROOT, gunicorn_graceful_timeout, output, render, run, tool

COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {
    "api",
    "worker",
    "migrate",
    "postgres",
    "redis",
    "mailpit",
    "prometheus",
    "alertmanager",
    "grafana",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


@pytest.fixture(scope="module")
def prometheus_config(compose: dict[str, Any]) -> dict[str, Any]:
    (ref,) = compose["services"]["prometheus"]["configs"]
    config: dict[str, Any] = yaml.safe_load(compose["configs"][ref["source"]]["content"])
    return config


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """source -> target of a service's bind mounts and named volumes (short syntax)."""
    result = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        result[source] = target
    return result


def parse_duration(text: str) -> int:
    match = re.fullmatch(r"(\d+)s", text)
    assert match, text
    return int(match.group(1))


def test_compose_file_validates_against_the_compose_spec() -> None:
    done = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert done.returncode == 0, output(done)


def test_services_health_checks_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        health = service.get("healthcheck", {})
        if name == "migrate":
            assert health.get("disable") is True  # a one-shot: done is its health
            assert service["restart"] == "no"
            continue
        assert health["test"][0] in ("CMD", "CMD-SHELL"), name
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), name
        assert not image.endswith(":latest"), name
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            expected = (
                "service_completed_successfully" if dependency == "migrate" else "service_healthy"
            )
            assert condition["condition"] == expected, (name, dependency)
    depends = {name: set(s.get("depends_on", {})) for name, s in services.items()}
    assert {"migrate", "postgres", "redis"} <= depends["api"]
    assert {"migrate", "redis", "mailpit"} <= depends["worker"]
    assert {"postgres", "redis"} <= depends["migrate"]
    assert "prometheus" in depends["grafana"]
    assert "alertmanager" in depends["prometheus"]


def test_api_worker_and_migrate_run_the_documented_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["api"]["command"] == ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    assert services["worker"]["command"] == ["flask", "--app", "wsgi", "jobs", "worker"]
    assert "flask --app wsgi db upgrade" in " ".join(services["migrate"]["command"])
    graceful = gunicorn_graceful_timeout()
    assert parse_duration(services["api"]["stop_grace_period"]) > graceful
    for name in ("api", "worker", "migrate"):
        service = services[name]
        assert service["build"]["context"] == "."
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert any(t.startswith("/tmp") for t in service["tmpfs"])
        env = service["environment"]
        assert env["GATEHOUSE_ENV"] == "production"
        assert env["ENCRYPTION_KEYS"]  # production refuses to start without it
        assert env["SMTP_URL"] == "smtp://mailpit:1025"
        assert env["DATABASE_URL"].startswith("postgresql://gatehouse:")
        assert env["JWT_KEYS_FILE"].startswith(mounts(service)["jwt-keys"])
    ready = services["api"]["healthcheck"]["test"]
    assert any("/ready" in part for part in ready)
    assert any(
        f":{services['worker']['environment']['METRICS_PORT']}/" in p
        for p in services["worker"]["healthcheck"]["test"]
    )


def test_monitoring_mounts_the_real_rules_dashboards_and_configs(
    compose: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    services = compose["services"]
    prometheus = mounts(services["prometheus"])
    rules_target = prometheus["./alertmanager/rules"]
    assert prometheus_config["rule_files"] == [f"{rules_target}/*.yml"]
    alertmanager = mounts(services["alertmanager"])
    config_flag = next(a for a in services["alertmanager"]["command"] if "--config.file=" in a)
    assert alertmanager["./alertmanager/alertmanager.yml"] == config_flag.split("=", 1)[1]
    grafana = mounts(services["grafana"])
    assert grafana["./grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_target = grafana["./grafana/dashboards"]
    # The repository's provisioning files must point where compose mounts things.
    for path in sorted((ROOT / "grafana" / "provisioning" / "dashboards").glob("*.y*ml")):
        for provider in yaml.safe_load(path.read_text()).get("providers", []):
            assert provider["options"]["path"] == dashboards_target, path
    for path in sorted((ROOT / "grafana" / "provisioning" / "datasources").glob("*.y*ml")):
        for source in yaml.safe_load(path.read_text()).get("datasources", []):
            if source["type"] == "prometheus":
                assert source["url"] == "http://prometheus:9090", path
    named = set(compose["volumes"])
    for name in ("postgres", "redis", "prometheus", "alertmanager", "grafana"):
        assert any(v in named for v in mounts(services[name])), f"{name} keeps no data volume"


def test_scrape_jobs_reach_the_services_and_match_kubernetes(
    compose: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    jobs = {
        j["job_name"]: j["static_configs"][0]["targets"]
        for j in prometheus_config["scrape_configs"]
    }
    worker_port = compose["services"]["worker"]["environment"]["METRICS_PORT"]
    api_port = compose["services"]["api"]["environment"]["METRICS_PORT"]
    assert jobs["gatehouse-api"] == [f"api:{api_port}"]  # /metrics is not on the API's port
    assert jobs["gatehouse-worker"] == [f"worker:{worker_port}"]
    assert prometheus_config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]
    # In Kubernetes the job label is the Service name (ServiceMonitor without jobLabel).
    services = {
        o["metadata"]["name"]
        for o in render(ROOT / "k8s" / "overlays" / "prod")
        if o["kind"] == "Service"
    }
    assert {"gatehouse-api", "gatehouse-worker"} <= services
    # Every job a rule or a dashboard names exists in both places.
    sources: list[Path] = sorted((ROOT / "alertmanager" / "rules").glob("*.yml"))
    sources += sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    named = set()
    for path in sources:
        named |= set(re.findall(r'\bjob\\?="([^"\\]+)\\?"', path.read_text()))
    assert named <= set(jobs) & (services | {"prometheus", "alertmanager"}), named
