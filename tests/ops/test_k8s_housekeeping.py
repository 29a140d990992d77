"""The housekeeping CronJob (k8s/base/housekeeping-cronjob.yaml): in every overlay, daily, in the
API's image, hardened, with the API's environment, admitted to PostgreSQL by the NetworkPolicy;
its commands are the app's own Click commands; and its script, run as shipped against the test
database, runs every purge, also when one of them fails, and fails when any fails."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from psycopg import sql

from tests.support.database import signing_keys_json
from tests.support.ops import OVERLAYS, ROOT, find, of_kind
from tests.support.runbooks import Checker, Shipped, segments
from webapp.config import Settings

Objects = list[dict[str, Any]]
NAME = "gatehouse-housekeeping"
PURGES = [["webhooks", "purge"], ["oauth", "purge"], ["idempotency", "purge"]]
WEBHOOKS_DONE = "domain event(s) and"
OAUTH_DONE = "authorization code(s) and"
IDEMPOTENCY_DONE = "idempotency record(s) older than"


def cronjob(objects: Objects) -> dict[str, Any]:
    return find(objects, "CronJob", NAME)


def pod_of(cron: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def script_of(objects: Objects) -> list[str]:
    """The container's command: `/bin/sh -c <script>`."""
    (container,) = pod_of(cronjob(objects))["containers"]
    command: list[str] = container["command"]
    assert command[:2] == ["/bin/sh", "-c"], command
    assert "args" not in container
    return command


def flask_commands(script: str) -> list[list[str]]:
    return [
        tokens
        for line in script.splitlines()
        for tokens in segments(line)
        if tokens and tokens[0] == "flask"
    ]


# --- the object --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cronjob_runs_daily_once_at_a_time_with_deadlines(
    rendered: dict[str, Objects], overlay: str
) -> None:
    cron = cronjob(rendered[overlay])
    spec = cron["spec"]
    minute, hour, *rest = spec["schedule"].split()
    assert rest == ["*", "*", "*"], "daily"
    assert minute.isdigit(), "one fixed time of day"
    assert hour.isdigit(), "one fixed time of day"
    assert 1 <= int(hour) <= 5, "a quiet hour"
    assert spec["timeZone"] == "Etc/UTC"
    backup = find(rendered[overlay], "CronJob", "gatehouse-backup")["spec"]["schedule"].split()
    # after the backup and its deadline (an hour): the night's archive holds what is purged
    assert int(hour) * 60 + int(minute) >= int(backup[1]) * 60 + int(backup[0]) + 60
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] <= 6 * 3600
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1  # the failed Job stays for the alert and its logs
    job = spec["jobTemplate"]["spec"]
    assert 0 < job["activeDeadlineSeconds"] <= 3600
    assert job["backoffLimit"] <= 3
    pod = pod_of(cron)
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    labels = spec["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "housekeeping"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cronjob_runs_the_api_image_hardened_with_limits(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    pod = pod_of(cronjob(objects))
    (container,) = pod["containers"]
    api = find(objects, "Deployment", "gatehouse-api")["spec"]["template"]["spec"]
    # the overlay's image transformer pins the same reference (tag and digest) as the API's
    assert container["image"] == api["containers"][0]["image"]
    assert "@sha256:" in container["image"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["runAsNonRoot"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])


def test_the_script_runs_each_purge_once_and_exits_with_a_failure(
    rendered: dict[str, Objects], app: Flask
) -> None:
    """The commands are the app's Click commands and parse with its CLI, in this order."""
    shipped = Shipped({}, {}, app.cli, app.url_map)
    for overlay in OVERLAYS:
        script = script_of(rendered[overlay])[2]
        commands = flask_commands(script)
        assert [tokens[3:] for tokens in commands] == PURGES, overlay
        checker = Checker(shipped)
        for tokens in commands:
            checker.flask(" ".join(tokens), tokens)
        assert checker.problems == []
        # `set -e` would stop at the first failure and skip the other purges
        assert "set -e" not in script
    wrong = Checker(shipped)
    wrong.flask(
        "flask --app wsgi oauth purge-all", ["flask", "--app", "wsgi", "oauth", "purge-all"]
    )
    assert wrong.problems, "the parser must refuse a command the app does not have"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cronjob_has_the_environment_of_the_api(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    (container,) = pod_of(cronjob(objects))["containers"]
    api_pod = find(objects, "Deployment", "gatehouse-api")["spec"]["template"]["spec"]
    api = api_pod["containers"][0]
    assert container["envFrom"] == api["envFrom"]
    assert container["env"] == api["env"]
    env = {e["name"] for e in container["env"]}
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ENCRYPTION_KEYS"} <= env
    # JWT_KEYS_FILE (the ConfigMap) names a file of the mounted Secret, as in the API's pods
    config = find(objects, "ConfigMap", "gatehouse-config")["data"]
    keys = Path(config["JWT_KEYS_FILE"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_of(cronjob(objects))["volumes"]}
    secret = volumes[mounts[str(keys.parent)]]["secret"]
    assert secret["secretName"] == "gatehouse-secrets"
    assert keys.name in {item["path"] for item in secret["items"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a pod's labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, operator = labels.get(expression["key"]), expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_network_policy_lets_the_cronjob_reach_postgresql_and_dns(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    labels = cronjob(objects)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    policies = [
        p["spec"]
        for p in of_kind(objects, "NetworkPolicy")
        if selects(p["spec"]["podSelector"], labels)
    ]
    assert any(p["podSelector"] == {} and "Egress" in p["policyTypes"] for p in policies), (
        "the default deny applies to it"
    )
    allowed = {
        (port.get("protocol", "TCP"), port["port"])
        for spec in policies
        if "Egress" in spec["policyTypes"]
        for rule in spec.get("egress", [])
        for port in rule.get("ports", [])
    }
    assert ("TCP", 5432) in allowed
    assert ("UDP", 53) in allowed
    # nothing reaches it, and it needs nothing but the datastores and DNS
    assert not [rule for spec in policies for rule in spec.get("ingress", [])]
    assert {port for _, port in allowed} <= {53, 5432, 6379}
    # the same test refuses a pod the policies do not select
    stranger = {"app.kubernetes.io/name": "something-else"}
    assert not [
        p
        for p in of_kind(objects, "NetworkPolicy")
        if selects(p["spec"]["podSelector"], stranger) and p["spec"].get("egress")
    ]


# --- the script, run -----------------------------------------------------------------------------


@pytest.fixture
def run_script(
    app: Flask, base_settings: Settings, rendered: dict[str, Objects]
) -> Callable[[], subprocess.CompletedProcess[str]]:
    """Runs the CronJob's command (prod's) as the image would: `flask` on PATH, the source tree as
    working directory, the test database and Redis in the environment."""
    command = script_of(rendered["prod"])
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "GATEHOUSE_ENV": "test",
        "SECRET_KEY": base_settings.secret_key,
        "DATABASE_URL": base_settings.database_url,
        "REDIS_URL": base_settings.redis_url or "",
        "JWT_KEYS": signing_keys_json(),
        "ENCRYPTION_KEYS": base_settings.encryption_keys or "",
    }

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
        )

    return run


def rename_table(database_url: str, old: str, new: str) -> None:
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
        )


def test_the_script_runs_every_purge(run_script: Any) -> None:
    done = run_script()
    assert done.returncode == 0, done.stdout + done.stderr
    assert WEBHOOKS_DONE in done.stdout
    assert OAUTH_DONE in done.stdout
    assert IDEMPOTENCY_DONE in done.stdout


@pytest.mark.parametrize(
    ("table", "fails", "still_runs"),
    [
        ("webhook_attempts", "webhook_attempts", OAUTH_DONE),
        ("oauth_authorization_codes", "oauth_authorization_codes", IDEMPOTENCY_DONE),
        ("idempotency_records", "idempotency_records", WEBHOOKS_DONE),
    ],
    ids=["webhooks-purge-fails", "oauth-purge-fails", "idempotency-purge-fails"],
)
def test_a_failing_purge_fails_the_job_and_the_other_still_runs(
    run_script: Any, base_settings: Settings, table: str, fails: str, still_runs: str
) -> None:
    """A real failure (the purge's table is missing): the others run and report, the
    script exits non-zero, so the pod, hence the Job, fails."""
    rename_table(base_settings.database_url, table, f"{table}_away")
    try:
        done = run_script()
    finally:
        rename_table(base_settings.database_url, f"{table}_away", table)
    assert done.returncode != 0, done.stdout + done.stderr
    assert still_runs in done.stdout, done.stdout + done.stderr
    assert fails in done.stderr
