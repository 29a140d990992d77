"""The Kubernetes manifests: every overlay renders with the real kustomize, every object validates
strictly (built-in kinds against the Kubernetes 1.37 schemas, prometheus-operator kinds against the
CRD schemas in k8s/schemas), checkov and trivy find nothing, and the objects fit together."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ops import (
    CUSTOM_KIND_SCHEMAS,
    KUBERNETES_VERSION,
    OVERLAYS,
    ROOT,
    find,
    gunicorn_graceful_timeout,
    is_custom,
    of_kind,
    output,
    pod_specs,
    run,
    tool,
    write_yaml,
)

Objects = list[dict[str, Any]]
EXPECTED_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "Deployment",
    "Ingress",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "Job",
    "CronJob",
    "PersistentVolumeClaim",
}
MONITORING_KINDS = {"ServiceMonitor"}
# The only checkov checks skipped, each justified in an annotation of its object. CKV_K8S_43
# (images by digest) is skipped by the backup CronJob's annotation only; it holds everywhere.
ALLOWED_SKIPS = {"CKV_K8S_43", "CKV_K8S_35"}


def kubernetes_validate(*files: Path) -> Any:
    return run(
        [
            tool("kubernetes-validate"),
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSION,
            *map(str, files),
        ]
    )


def check_schema(schema: Path, *files: Path) -> Any:
    return run([tool("check-jsonschema"), "--schemafile", str(schema), *map(str, files)])


# --- rendering and schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_kind_into_its_namespace(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    kinds = {o["kind"] for o in objects}
    expected = EXPECTED_KINDS | (MONITORING_KINDS if overlay != "dev" else set())
    assert expected <= kinds, f"missing: {expected - kinds}"
    namespace = f"gatehouse-{overlay}"
    assert find(objects, "Namespace", namespace)
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "gatehouse"
    images = {c["image"] for _, spec in pod_specs(objects) for c in spec["containers"]}
    assert images
    # Tag (which release) and digest (what is pulled), for every image: Renovate keeps them.
    for image in images:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), image


def test_builtin_objects_validate_strictly(builtin_files: list[Path]) -> None:
    done = kubernetes_validate(*builtin_files)
    assert done.returncode == 0, output(done)
    text = done.stdout + done.stderr
    assert "Couldn't find schema" not in text, output(done)  # every built-in kind had its schema
    documents = sum(len(list(yaml.safe_load_all(f.read_text()))) for f in builtin_files)
    assert len(re.findall(r" passed for resource ", text)) == documents, output(done)


def test_custom_objects_validate_against_crd_schemas(
    rendered: dict[str, Objects], tmp_path: Path
) -> None:
    customs = [o for objects in rendered.values() for o in objects if is_custom(o)]
    unknown = {
        (o["apiVersion"], o["kind"])
        for objects in rendered.values()
        for o in objects
        if "." in o["apiVersion"].split("/")[0]
        and not o["apiVersion"].split("/")[0].endswith(".k8s.io")
        and not is_custom(o)
    }
    assert not unknown, f"custom kinds without a schema in k8s/schemas: {unknown}"
    assert any(o["kind"] == "ServiceMonitor" for o in customs)
    for (api_version, kind), schema in CUSTOM_KIND_SCHEMAS.items():
        objects = [o for o in customs if (o["apiVersion"], o["kind"]) == (api_version, kind)]
        if not objects:  # no PrometheusRule while alertmanager/rules/ holds no file
            continue
        files = [write_yaml(tmp_path / f"{kind}-{i}.yaml", [o]) for i, o in enumerate(objects)]
        done = check_schema(schema, *files)
        assert done.returncode == 0, output(done)


def test_crd_schemas_are_valid_json_schemas() -> None:
    done = run(
        [tool("check-jsonschema"), "--check-metaschema", *map(str, CUSTOM_KIND_SCHEMAS.values())]
    )
    assert done.returncode == 0, output(done)


def test_validators_reject_what_the_apiserver_would(
    rendered: dict[str, Objects], tmp_path: Path
) -> None:
    """Strictness is real: an unknown field or a wrong type fails both validators."""
    deployment = copy.deepcopy(find(rendered["prod"], "Deployment", "gatehouse-api"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}  # typo'd key
    done = kubernetes_validate(write_yaml(tmp_path / "typo.yaml", [deployment]))
    assert done.returncode != 0
    assert "livenessprobe" in output(done)

    hpa = copy.deepcopy(find(rendered["prod"], "HorizontalPodAutoscaler", "gatehouse-api"))
    hpa["spec"]["minReplicas"] = "three"
    done = kubernetes_validate(write_yaml(tmp_path / "type.yaml", [hpa]))
    assert done.returncode != 0

    monitor = copy.deepcopy(find(rendered["prod"], "ServiceMonitor", "gatehouse"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    schema = CUSTOM_KIND_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")]
    done = check_schema(schema, write_yaml(tmp_path / "monitor.yaml", [monitor]))
    assert done.returncode != 0
    assert "intervall" in output(done)

    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "bad", "namespace": "gatehouse-prod"},
        "spec": {
            "groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up", "for": "5 min"}]}]
        },
    }
    schema = CUSTOM_KIND_SCHEMAS[("monitoring.coreos.com/v1", "PrometheusRule")]
    done = check_schema(schema, write_yaml(tmp_path / "rule.yaml", [rule]))
    assert done.returncode != 0


# --- policy scanners ---------------------------------------------------------------------------


def test_checkov_finds_no_failed_check(checkov_report: dict[str, Any]) -> None:
    assert set(checkov_report) == {"kubernetes", "dockerfile", "github_actions"}, (
        checkov_report.keys()
    )
    for check_type, report in checkov_report.items():
        summary = report["summary"]
        failed = [
            f"{c['check_id']} {c['resource']}: {c['check_name']}"
            for c in report["results"]["failed_checks"]
        ]
        assert summary["failed"] == 0, f"{check_type}:\n" + "\n".join(failed)
        assert summary["parsing_errors"] == 0, check_type
        assert summary["passed"] > 0, check_type
    skipped = checkov_report["kubernetes"]["results"]["skipped_checks"]
    for check in skipped:
        assert check["check_id"] in ALLOWED_SKIPS, check["check_id"]
        assert len(check["check_result"].get("suppress_comment", "")) > 20, check  # justified
    passed = checkov_report["kubernetes"]["results"]["passed_checks"]
    digests = {c["resource"].rsplit(".", 1)[-1] for c in passed if c["check_id"] == "CKV_K8S_43"}
    assert {"gatehouse-api", "gatehouse-worker", "gatehouse-migrate"} <= digests, digests


def test_trivy_config_finds_no_high_or_critical(trivy_config_report: Any) -> None:
    results = trivy_config_report.get("Results") or []
    scanned = {r["Target"] for r in results}
    assert {"Dockerfile", *(f"{o}.yaml" for o in OVERLAYS)} <= scanned, scanned
    findings = [
        f"{r['Target']}: {m['ID']} {m['Severity']} {m['Title']}"
        for r in results
        for m in r.get("Misconfigurations") or []
        if m.get("Status") == "FAIL"
    ]
    assert not findings, "\n".join(findings)
    assert sum(r.get("MisconfSummary", {}).get("Successes", 0) for r in results) > 0


# --- how the objects fit together --------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_is_hardened(rendered: dict[str, Objects], overlay: str) -> None:
    workloads = list(pod_specs(rendered[overlay]))
    assert {o["metadata"]["name"] for o, _ in workloads} == {
        "gatehouse-api",
        "gatehouse-worker",
        "gatehouse-migrate",
        "gatehouse-backup",
        "gatehouse-housekeeping",
    }
    for obj, spec in workloads:
        name = obj["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["serviceAccountName"] == "gatehouse", name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] >= 10000, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in ctx["capabilities"], name
            assert ctx["seccompProfile"]["type"] == "RuntimeDefault", name
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), (name, kind)
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp is not an emptyDir"
    sa = find(rendered[overlay], "ServiceAccount", "gatehouse")
    assert sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_probes_and_graceful_termination_match_gunicorn(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    config = find(objects, "ConfigMap", "gatehouse-config")["data"]
    graceful = int(config["GUNICORN_GRACEFUL_TIMEOUT"])
    assert graceful == gunicorn_graceful_timeout() == 25
    api = find(objects, "Deployment", "gatehouse-api")
    spec = api["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    port = container["ports"][0]
    assert port["containerPort"] == 8000
    assert container["readinessProbe"]["httpGet"]["port"] == port["name"]
    # Endpoints are removed while the preStop sleep runs; gunicorn then drains within its graceful
    # timeout; the kubelet's SIGKILL must come after both.
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 5
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + graceful + 5
    # prometheus_client's multiprocess directory: writable, per pod, empty at start.
    multiproc = config["PROMETHEUS_MULTIPROC_DIR"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for workload in ("gatehouse-api", "gatehouse-worker"):
        pod = find(objects, "Deployment", workload)["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert multiproc in mounts, workload
        assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[mounts[multiproc]]
        assert pod["topologySpreadConstraints"], workload
        assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        }
    keys = config["JWT_KEYS_FILE"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts[str(Path(keys).parent)]]["secret"]["secretName"] == "gatehouse-secrets"
    worker = find(objects, "Deployment", "gatehouse-worker")["spec"]["template"]["spec"]
    assert worker["containers"][0]["args"] == ["flask", "--app", "wsgi", "jobs", "worker"]
    assert worker["containers"][0]["ports"][0]["containerPort"] == int(config["METRICS_PORT"])
    # gunicorn serves /metrics on a second listener (METRICS_PORT), never on the API's port.
    api_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert api_ports == {"http": 8000, "metrics": int(config["METRICS_PORT"])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(rendered: dict[str, Objects], overlay: str) -> None:
    objects = rendered[overlay]
    deployments = {o["metadata"]["name"]: o for o in of_kind(objects, "Deployment")}
    pods = [spec_labels(o) for o in deployments.values()]
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        assert target["name"] in deployments
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        assert any(selects(pdb["spec"]["selector"]["matchLabels"], p) for p in pods), pdb
    services = {o["metadata"]["name"]: o for o in of_kind(objects, "Service")}
    for service in services.values():
        assert any(selects(service["spec"]["selector"], p) for p in pods), service
    ingress = find(objects, "Ingress", "gatehouse")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    # /metrics and /ready stay inside the cluster
    assert {p["path"] for p in paths} == {"/api/", "/.well-known/", "/oauth/"}
    for path in paths:
        backend = path["backend"]["service"]
        ports = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
        assert backend["port"]["name"] in ports
    secret_volumes = [
        v["persistentVolumeClaim"]["claimName"]
        for _, spec in pod_specs(objects)
        for v in spec.get("volumes", [])
        if "persistentVolumeClaim" in v
    ]
    for claim in secret_volumes:
        find(objects, "PersistentVolumeClaim", claim)
    for _, spec in pod_specs(objects):
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                find(objects, "ConfigMap", volume["configMap"]["name"])
    for monitor in of_kind(objects, "ServiceMonitor"):
        ports = {p["name"] for s in services.values() for p in s["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
        # /metrics is answered on the metrics port only (observability/exposure.py).
        assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"metrics"}
        # job labels come from the Service names, as in docker-compose.yml's scrape jobs
        assert {"gatehouse-api", "gatehouse-worker"} <= set(services)


def spec_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_denies_by_default_and_opens_only_what_is_needed(
    rendered: dict[str, Objects], overlay: str
) -> None:
    policies = {
        p["metadata"]["name"]: p["spec"] for p in of_kind(rendered[overlay], "NetworkPolicy")
    }
    deny = policies["default-deny-all"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny
    ingress_ports = {
        port["port"]
        for spec in policies.values()
        for rule in spec.get("ingress", [])
        for port in rule.get("ports", [])
    }
    assert ingress_ports == {8000, 9100}
    # The ingress controller reaches the API port only; Prometheus the metrics port only.
    api_rules = {
        port["port"]: {
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for peer in rule["from"]
        }
        for rule in policies["gatehouse-api-ingress"]["ingress"]
        for port in rule["ports"]
    }
    assert api_rules == {8000: {"ingress-nginx"}, 9100: {"monitoring"}}
    egress_ports = {
        port["port"]
        for spec in policies.values()
        for rule in spec.get("egress", [])
        for port in rule.get("ports", [])
    }
    assert {53, 5432, 6379, 587} <= egress_ports
    for spec in policies.values():
        for rule in spec.get("ingress", []):
            assert rule.get("from"), "an ingress rule without `from` would admit everyone"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migration_job_and_backup_cronjob(rendered: dict[str, Objects], overlay: str) -> None:
    objects = rendered[overlay]
    job = find(objects, "Job", "gatehouse-migrate")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["flask", "--app", "wsgi", "db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    cron = find(objects, "CronJob", "gatehouse-backup")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (backup,) = pod["containers"]
    assert backup["image"].split("/")[-1].startswith("postgres:")
    mounts = {m["name"]: m["mountPath"] for m in backup["volumeMounts"]}
    script = backup["command"][-1]
    assert script == f"{mounts['scripts']}/backup.sh"
    env = {e["name"]: e for e in backup["env"]}
    assert env["BACKUP_DIR"]["value"] == mounts["backups"]
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "gatehouse-secrets"
    scripts = find(objects, "ConfigMap", "gatehouse-backup-scripts")["data"]
    for name in ("backup.sh", "restore.sh"):
        assert scripts[name] == (ROOT / "scripts" / name).read_text()


def test_secret_example_holds_every_key_and_no_value(rendered: dict[str, Objects]) -> None:
    path = ROOT / "k8s" / "base" / "secret.example.yaml"
    secret = yaml.safe_load(path.read_text())
    done = kubernetes_validate(path)
    assert done.returncode == 0, output(done)
    values = secret["stringData"]
    assert set(values.values()) <= {"REPLACE_ME", ""}, "placeholders only"
    for kustomization in (ROOT / "k8s").rglob("kustomization.yaml"):
        listed = yaml.safe_load(kustomization.read_text()).get("resources") or []
        assert not [r for r in listed if "secret.example" in r], kustomization
    for objects in rendered.values():
        assert not of_kind(objects, "Secret"), "no Secret is applied by the overlays"
        required: set[str] = set()
        optional: set[str] = set()
        for _, spec in pod_specs(objects):
            for container in spec["containers"]:
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["name"] == "gatehouse-secrets"
                        (optional if ref.get("optional") else required).add(ref["key"])
            for volume in spec.get("volumes", []):
                if "secret" in volume:
                    required |= {item["key"] for item in volume["secret"]["items"]}
        assert required | optional == set(values), (required | optional) ^ set(values)
        # what the pods cannot start without is a placeholder to replace; the rest may stay empty
        assert {k for k, v in values.items() if v == "REPLACE_ME"} == required - optional
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ENCRYPTION_KEYS"} <= set(values)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configmap_passes_the_production_checks(
    rendered: dict[str, Objects], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped settings start in production (https PUBLIC_BASE_URL, rate limits on, CORS
    exact, a short reuse grace) once the Secret holds random values."""
    import base64
    import os
    import secrets

    from jobs.settings import JobsSettings
    from webapp.config import Settings

    config = find(rendered[overlay], "ConfigMap", "gatehouse-config")["data"]
    for name in list(os.environ):
        if name not in ("PATH", "HOME"):
            monkeypatch.delenv(name)
    for name, value in config.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SECRET_KEY", secrets.token_urlsafe(48))
    monkeypatch.setenv("ENCRYPTION_KEYS", "k1:" + base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("DATABASE_URL", "postgresql://gatehouse@db:5432/gatehouse")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    settings = Settings.from_env()
    assert settings.is_production
    assert settings.ratelimit_enabled
    assert settings.public_base_url.startswith("https://")
    assert JobsSettings.from_env().smtp_url == config["SMTP_URL"]  # the jobs settings pass too
