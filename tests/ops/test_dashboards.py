"""Grafana dashboards and provisioning: valid JSON, the datasource/job/namespace variables, a
query, a unit and thresholds on every panel, PromQL that promtool parses, metric names that
Gatehouse exposes. That every query returns data against a real Prometheus scraping the running
service is proved by tests/e2e/test_observability_stack.py (both use tests/support/dashboards.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from scripts import dashboard_runbooks
from scripts.build_k8s_generated import RUNBOOK_BASE_URL
from tests.support.dashboards import (
    BUILTIN_VARIABLES,
    DASHBOARDS,
    DASHBOARDS_DIR,
    DATASOURCE_REF,
    EXPECTED_UIDS,
    PROVISIONING,
    QUERYLESS_PANELS,
    all_expressions,
    expressions,
    load,
    panels,
    selectors,
    substitute,
    variable_query,
    variables,
)
from tests.support.kube_metrics import KUBERNETES_SERIES, deployment_limits
from tests.support.rules import (
    PROMETHEUS_SERIES,
    ROOT,
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

# --- the files -----------------------------------------------------------------------------------


def test_the_dashboards_exist_with_unique_uids() -> None:
    uids = [load(path)["uid"] for path in DASHBOARDS]
    assert sorted(uids) == sorted(EXPECTED_UIDS)
    titles = [load(path)["title"] for path in DASHBOARDS]
    assert len(set(titles)) == len(titles)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_valid_json_with_the_datasource_job_and_namespace_variables(
    path: Path,
) -> None:
    dashboard = load(path)
    assert dashboard["id"] is None, "provisioned dashboards carry no database id"
    assert dashboard["schemaVersion"] >= 36
    assert "gatehouse" in dashboard["tags"]
    found = variables(dashboard)
    assert {"datasource", "namespace", "job"} <= set(found)
    datasource = found["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for name in ("namespace", "job"):
        variable = found[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE_REF
        assert variable["includeAll"]
        assert variable["multi"]
        assert variable_query(variable).startswith("label_values(")
        assert variable["current"]["value"] == ["$__all"]
    # Without a namespace label (docker compose) "All" must still match: the regex .*.
    assert found["namespace"]["allValue"] == ".*"
    assert "$namespace" in variable_query(found["job"])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_has_a_query_a_unit_and_thresholds(path: Path) -> None:
    dashboard = load(path)
    ids = [p["id"] for p in dashboard["panels"]] + [
        p["id"] for row in dashboard["panels"] for p in row.get("panels", [])
    ]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    found = [p for p in panels(dashboard) if p["type"] not in QUERYLESS_PANELS]
    assert found
    for panel in found:
        where = f"{path.name}: {panel.get('title')!r}"
        assert panel.get("title"), where
        assert panel.get("description"), where
        assert panel["datasource"] == DATASOURCE_REF, where
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), where
        targets = panel.get("targets") or []
        assert targets, f"{where}: no query"
        for target in targets:
            assert target.get("expr", "").strip(), f"{where}: empty query"
            assert target["datasource"] == DATASOURCE_REF, where
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), f"{where}: no unit"
        steps = defaults["thresholds"]["steps"]
        assert steps, f"{where}: no thresholds"
        assert steps[0]["value"] is None, f"{where}: thresholds need a base step"
        values = [s["value"] for s in steps[1:]]
        assert values == sorted(values), f"{where}: thresholds out of order"


# The SLO objectives and budgets (alertmanager/rules/recording.yml), recorded once for everyone.
SLO_DATA = {"gatehouse:slo_objective:ratio", "gatehouse:slo_error_budget:ratio"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_selector_honours_the_job_and_namespace_variables(path: Path) -> None:
    for title, ref, expr in expressions(load(path)):
        found = selectors(expr)
        # Or the cluster's series or the alerts (their own test below).
        others = selectors(expr, "|".join([*KUBERNETES_SERIES, "ALERTS"]))
        assert found or others, (title, ref, "reads no Gatehouse series")
        for metric, matchers in found:
            if metric in SLO_DATA:  # the objectives are global: no job, no namespace
                continue
            assert 'job=~"$job"' in matchers, (title, ref, metric)
            assert 'namespace=~"$namespace"' in matchers, (title, ref, metric)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_cluster_series_are_read_for_the_gatehouse_containers_only(path: Path) -> None:
    """cAdvisor's and kube-state-metrics' series carry no Gatehouse job: they are narrowed by
    namespace, pod and the Deployments' container names (not "" or "POD", the pod's own cgroup
    and its pause container, which would count a pod twice)."""
    containers = sorted(
        deployment_limits(name)[0] for name in ("api-deployment", "worker-deployment")
    )
    for title, ref, expr in expressions(load(path)):
        for metric, matchers in selectors(expr, "|".join(KUBERNETES_SERIES)):
            assert 'namespace=~"$namespace"' in matchers, (title, ref, metric)
            assert 'pod=~"$pod"' in matchers, (title, ref, metric)
            assert f'container=~"{"|".join(containers)}"' in matchers, (title, ref, metric)
        for metric, matchers in selectors(expr, "ALERTS"):
            assert 'namespace=~"$namespace"' in matchers, (title, ref, metric)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every query (as a recording rule), with the variables substituted."""
    promtool = require_tool("promtool")
    values = {
        "job": "gatehouse-api|gatehouse-worker",
        "namespace": ".*",
        "pod": ".*",
        "instance": ".*",
        **BUILTIN_VARIABLES,
    }
    rules = [
        {"record": f"dashboard:query:{index}", "expr": substitute(expr, values)}
        for index, (_, _, _, expr) in enumerate(all_expressions())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = run([promtool, "check", "rules", str(path)])
    assert done.returncode == 0, output(done)
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout, output(done)


def test_dashboards_read_only_series_that_exist() -> None:
    # Cluster series are known when the e2e's stand-in exporters serve them (checked below too).
    known = exposed_series_names() | recording_rule_names() | PROMETHEUS_SERIES
    known |= set(KUBERNETES_SERIES)
    for name, title, ref, expr in all_expressions():
        unknown = metric_names(expr) - known
        assert not unknown, (name, title, ref, unknown)
        # The cluster's series: only those the e2e's stand-in exporters serve.
        cluster = set(re.findall(r"\b(?:container|kube)_[a-z_]+", expr)) - set(KUBERNETES_SERIES)
        assert not cluster, (name, title, ref, cluster)


def test_dashboards_show_red_per_route_and_the_slo_numbers() -> None:
    service = load(DASHBOARDS_DIR / "gatehouse-service-overview.json")
    exprs = [expr for _, _, expr in expressions(service)]
    text = "\n".join(exprs)
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le, url_rule)" in text
    assert "sum by (url_rule) (rate(flask_http_request_duration_seconds_count" in text
    assert 'status=~"5.."' in text
    for record in (
        "gatehouse:slo_availability:error_budget_remaining",
        "gatehouse:slo_latency:error_budget_remaining",
        "gatehouse:slo_hashing_latency:error_budget_remaining",
    ):
        assert record in text
    # Burn rates against the same budgets as the alerts, with the same thresholds.
    assert "gatehouse:sli_availability:error_ratio_rate1h" in text
    # The budgets are the recorded SLO data, never numbers repeated in a query.
    for slo in ("availability", "latency", "hashing_latency"):
        assert f'/ on () group_left () gatehouse:slo_error_budget:ratio{{slo="{slo}"}}' in text
    assert not re.search(r"/ 0\.0*1\b", text), "a budget spelled as a number"
    burn = [p for p in panels(service) if "burn rate" in p["title"].lower()]
    assert len(burn) == 3
    for panel in burn:
        steps = [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]
        assert steps[1:] == [1, 6, 14.4]
    titles = {load(p)["uid"]: {panel["title"] for panel in panels(load(p))} for p in DASHBOARDS}
    assert {"Queue depth", "Dead-letter jobs", "Oldest unsent outbox message"} <= titles[
        "gatehouse-jobs"
    ]
    assert {
        "Webhook deliveries by result",
        "Webhook delivery latency p95",
        "Failing webhook endpoints",
        "Oldest undelivered webhook",
        "Most overdue webhook",
        "Dead webhook deliveries",
    } <= titles["gatehouse-jobs"]
    assert {"Logins by result", "Rate-limited requests by route"} <= titles["gatehouse-security"]
    assert {"Pool utilisation", "Cache hit ratio by cache", "Redis"} <= titles[
        "gatehouse-dependencies"
    ]


# --- the on-call dashboard ----------------------------------------------------------------------

ON_CALL = DASHBOARDS_DIR / "gatehouse-on-call.json"


def test_on_call_has_pod_and_instance_variables_that_every_gatehouse_query_honours() -> None:
    dashboard = load(ON_CALL)
    found = variables(dashboard)
    for name, reads in (("pod", ("$namespace", "$job")), ("instance", ("$pod",))):
        variable = found[name]
        assert (variable["type"], variable["datasource"]) == ("query", DATASOURCE_REF)
        assert variable["includeAll"]
        assert variable["multi"]
        # docker compose has no pod label: "All" must still match series without one.
        assert variable["allValue"] == ".*"
        query = variable_query(variable)
        assert query.startswith("label_values(up{")
        assert query.endswith(f", {name})")
        assert all(other in query for other in reads), query
    for title, ref, expr in expressions(dashboard):
        for metric, matchers in selectors(expr):
            assert 'pod=~"$pod"' in matchers, (title, ref, metric)
            assert 'instance=~"$instance"' in matchers, (title, ref, metric)


def test_on_call_shows_the_use_of_containers_and_of_the_application() -> None:
    dashboard = load(ON_CALL)
    text = "\n".join(expr for _, _, expr in expressions(dashboard))
    assert set(KUBERNETES_SERIES) <= set(re.findall(r"\b(?:container|kube)_[a-z_]+", text))
    for name in (
        "gatehouse_gunicorn_threads_busy",
        "gatehouse_gunicorn_threads",
        "gatehouse_db_pool_checkout_seconds_bucket",
        "gatehouse_db_pool_connections_in_use",
    ):
        assert name in text
    titles = {p["title"] for p in panels(dashboard)}
    assert {
        "CPU used of limit",
        "CPU throttling",
        "Memory working set of limit",
        "Container restarts in the last hour",
        "gunicorn threads busy",
        "DB pool checkout wait",
    } <= titles
    # Per pod, never one line for the whole fleet: one saturated pod must show.
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if "sum by" in target["expr"]:
                assert "pod" in target["expr"].split("sum by (")[1].split(")")[0], panel["title"]


def test_on_call_lists_alerts_and_links_every_alert_to_its_runbook() -> None:
    dashboard = load(ON_CALL)
    by_type: dict[str, list[dict[str, object]]] = {}
    for panel in panels(dashboard):
        by_type.setdefault(panel["type"], []).append(panel)
    [alertlist] = by_type["alertlist"]
    options = alertlist["options"]
    assert isinstance(options, dict)
    assert options["alertName"] == "Gatehouse"
    assert options["alertInstanceLabelFilter"] == '{namespace=~"$namespace"}'
    assert options["stateFilter"]["firing"]
    assert options["stateFilter"]["pending"]

    # The link base: the dashboard constant, the base of every rule's runbook_url as the
    # generated PrometheusRules carry it; both are derived from RUNBOOK_BASE_URL.
    base = variables(dashboard)["runbook_base"]
    assert (base["type"], base["hide"]) == ("constant", 2)
    assert base["query"] == f"{RUNBOOK_BASE_URL}docs/runbooks"
    for rule in alert_rules():
        assert rule["annotations"]["runbook_url"] == f"docs/runbooks/{rule['alert']}.md"
    assert dashboard_runbooks.main(["--check"]) == 0, "run python -m scripts.dashboard_runbooks"
    [runbooks] = by_type["text"]
    options = runbooks["options"]
    assert isinstance(options, dict)
    linked = re.findall(r"\]\(\$\{runbook_base\}/(\w+)\.md\)", options["content"])
    assert sorted(linked) == sorted(alert_names())
    for name in linked:
        assert (ROOT / "docs" / "runbooks" / f"{name}.md").is_file(), name
    [table] = by_type["table"]
    table_text = json.dumps(table)
    assert '"url": "${runbook_base}/${__value.raw}.md"' in table_text
    assert 'ALERTS{alertstate=\\"firing\\"' in table_text
    assert any(link.get("url") == "${runbook_base}" for link in dashboard["links"])


# --- provisioning --------------------------------------------------------------------------------


def test_datasource_provisioning() -> None:
    config = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert config["apiVersion"] == 1
    [source] = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["access"] == "proxy"
    assert source["url"].startswith("http")
    assert source["isDefault"] is True
    # The on-call dashboard's alert list reads Prometheus' rules through the data source.
    assert source["jsonData"]["manageAlerts"] is True


def test_dashboard_provisioning_loads_the_dashboards_folder() -> None:
    config = yaml.safe_load((PROVISIONING / "dashboards" / "gatehouse.yml").read_text())
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    compose = ROOT / "docker-compose.yml"
    if compose.exists():  # the stack of `docker compose up` mounts grafana/dashboards there
        mounts = [
            volume
            for service in yaml.safe_load(compose.read_text())["services"].values()
            for volume in service.get("volumes", [])
            if isinstance(volume, str)
        ]
        assert f"./grafana/dashboards:{path}:ro" in mounts, mounts


def test_http_queries_use_the_labels_of_prometheus_flask_exporter() -> None:
    """Its request metrics are labelled `method`, `url_rule`, `status`: a query that still says
    `route` (the label of the rate-limit counter) would match nothing."""
    rules = [rule["expr"] for group in load_rule_groups() for rule in group["rules"]]
    exprs = rules + [expr for _, _, _, expr in all_expressions()]
    http = [expr for expr in exprs if "flask_http_request" in expr]
    assert len(http) > 20
    for expr in http:
        assert not re.search(r"\broute\s*(?:=|!=|=~|!~)|by \([^)]*\broute\b", expr), expr
