"""The generated Kubernetes objects (scripts/build_k8s_generated.py): up to date with their sources
in the repository — whatever alertmanager/rules/*.yml and grafana/dashboards/*.json hold, zero files
included — and, on sample sources in a scratch copy, rendered and valid end to end."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.support.ops import (
    CUSTOM_KIND_SCHEMAS,
    ROOT,
    of_kind,
    output,
    render,
    run,
    tool,
    write_yaml,
)

SCRIPT = ROOT / "scripts" / "build_k8s_generated.py"
RULE_SCHEMA = CUSTOM_KIND_SCHEMAS[("monitoring.coreos.com/v1", "PrometheusRule")]

SAMPLE_RULES = """\
groups:
  - name: gatehouse-slo-recording
    interval: 30s
    rules:
      - record: gatehouse:http_requests:rate5m
        expr: sum by (job) (rate(flask_http_request_total[5m]))
  - name: gatehouse-slo-alerts
    rules:
      - alert: GatehouseErrorBudgetBurnFast
        expr: |
          gatehouse:http_errors:ratio1h > (14.4 * 0.001)
          and gatehouse:http_errors:ratio5m > (14.4 * 0.001)
        for: 2m
        labels:
          severity: critical
        annotations:
          summary: Fast error budget burn
          runbook_url: https://example.com/runbooks/GatehouseErrorBudgetBurnFast.md
"""
SAMPLE_DASHBOARD = '{\n  "title": "Gatehouse RED",\n  "panels": [],\n  "schemaVersion": 39\n}\n'


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_k8s_generated", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_up_to_date() -> None:
    done = run([sys.executable, str(SCRIPT), "--check"])
    assert done.returncode == 0, f"run `python scripts/build_k8s_generated.py`:\n{output(done)}"


@pytest.mark.parametrize("overlay", ["staging", "prod"])
def test_rendered_monitoring_objects_match_the_repository_sources(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    rule_files = sorted((ROOT / "alertmanager" / "rules").glob("*.yml"))
    rules = {
        r["metadata"]["annotations"]["gatehouse.dev/source"]: r
        for r in of_kind(objects, "PrometheusRule")
    }
    assert set(rules) == {p.relative_to(ROOT).as_posix() for p in rule_files}
    generator = load_generator()
    for path in rule_files:
        source = yaml.safe_load(path.read_text())
        expected = generator.with_runbook_links(source["groups"])  # the sources' only change
        assert rules[path.relative_to(ROOT).as_posix()]["spec"]["groups"] == expected
    dashboards = {
        c["metadata"]["annotations"]["gatehouse.dev/source"]: c
        for c in of_kind(objects, "ConfigMap")
        if c["metadata"]["labels"].get("grafana_dashboard") == "1"
    }
    dashboard_files = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert set(dashboards) == {p.relative_to(ROOT).as_posix() for p in dashboard_files}
    for path in dashboard_files:
        (text,) = dashboards[path.relative_to(ROOT).as_posix()]["data"].values()
        assert text == path.read_text()


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of the repository's k8s/ and backup scripts, with sample monitoring sources."""
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    (tmp_path / "scripts").mkdir()
    for name in ("backup.sh", "restore.sh"):
        shutil.copy(ROOT / "scripts" / name, tmp_path / "scripts" / name)
    (tmp_path / "alertmanager" / "rules").mkdir(parents=True)
    (tmp_path / "alertmanager" / "rules" / "slo_burn.yml").write_text(SAMPLE_RULES)
    (tmp_path / "grafana" / "dashboards").mkdir(parents=True)
    (tmp_path / "grafana" / "dashboards" / "service.json").write_text(SAMPLE_DASHBOARD)
    return tmp_path


def test_generator_builds_valid_objects_from_sources(scratch: Path, tmp_path: Path) -> None:
    generator = load_generator()
    assert generator.stale(scratch), "new sources must make the generated files stale"
    generator.write(scratch)
    assert generator.stale(scratch) == []
    objects = render(scratch / "k8s" / "overlays" / "prod")
    (rule,) = of_kind(objects, "PrometheusRule")
    assert rule["metadata"]["name"] == "gatehouse-slo-burn"
    assert rule["metadata"]["namespace"] == "gatehouse-prod"
    assert rule["spec"]["groups"] == yaml.safe_load(SAMPLE_RULES)["groups"]
    done = run(
        [
            tool("check-jsonschema"),
            "--schemafile",
            str(RULE_SCHEMA),
            str(write_yaml(tmp_path / "rule.yaml", [rule])),
        ]
    )
    assert done.returncode == 0, output(done)
    (dashboard,) = [
        c for c in of_kind(objects, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ]
    assert dashboard["data"] == {"service.json": SAMPLE_DASHBOARD}
    assert json.loads(dashboard["data"]["service.json"])["title"] == "Gatehouse RED"
    # dev leaves the monitoring component out
    assert not of_kind(render(scratch / "k8s" / "overlays" / "dev"), "PrometheusRule")


def test_generator_removes_objects_whose_source_is_gone(scratch: Path) -> None:
    generator = load_generator()
    generator.write(scratch)
    generated = scratch / "k8s" / "components" / "monitoring" / "generated"
    assert (generated / "dashboard-service.yaml").is_file()
    (scratch / "grafana" / "dashboards" / "service.json").unlink()
    assert generator.stale(scratch) == [
        "k8s/components/monitoring/generated/dashboard-service.yaml",
        "k8s/components/monitoring/generated/kustomization.yaml",
    ]
    generator.write(scratch)
    assert not (generated / "dashboard-service.yaml").exists()
    objects = render(scratch / "k8s" / "overlays" / "staging")
    assert not [
        c for c in of_kind(objects, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ]
    assert len(of_kind(objects, "PrometheusRule")) == 1


def test_generator_rejects_a_rule_file_without_groups(scratch: Path) -> None:
    (scratch / "alertmanager" / "rules" / "broken.yml").write_text("rules: []\n")
    generator = load_generator()
    with pytest.raises(ValueError, match="groups"):
        generator.write(scratch)
