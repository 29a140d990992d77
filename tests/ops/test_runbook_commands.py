"""Every command of docs/runbooks/*.md works as written against what is shipped.

Each runbook (new ones are picked up by the glob) is read for commands: every line of its fenced
`sh`/`bash`/`shell` blocks and every inline `kubectl ...`, `flask ...` or `curl ...` span of its
prose. They are checked against the overlays as `kubectl kustomize k8s/overlays/<env>` renders them
and against the Flask app itself:

- `kubectl` names a namespace of a rendered overlay (`-n`); the deployments, services, config maps,
  secrets, jobs and cron jobs it names exist there; a `-l` selector matches a pod template; a
  port-forward's remote port is one the Service or container has;
- `flask --app wsgi <group> <command> [options]` parses with the app's own Click commands (also
  after `kubectl exec ... --`);
- a URL's path is a route of the app's url_map (no redirect: `/audit-events` is `/audit-events/`;
  an `<id>` segment, an id the reader looks up first, stands for a UUID),
  a URL on a public host is routed by that host's Ingress, and `/ready` and `/metrics` are never
  requested through it; `127.0.0.1` URLs use the local port of a port-forward of the runbook, or a
  container port inside `kubectl exec`;
- PromQL's `namespace` and `job` matchers name a rendered namespace and a Service;
- every `curl` read through a public host answers 200 from the app, as an administrator (but
  those of an `<id>`).

The checker lives in tests/support/runbooks.py.

The checker's own tests feed it known-bad commands, so a checker that stopped seeing a problem
fails too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.accounts import Account
from tests.support.ops import ROOT
from tests.support.runbooks import Shipped, check, commands_of, public_reads

RUNBOOKS = sorted((ROOT / "docs" / "runbooks").glob("*.md"))


@pytest.fixture(scope="module")
def shipped(rendered: dict[str, list[dict[str, Any]]], app: Flask) -> Shipped:
    objects: dict[str, list[dict[str, Any]]] = {}
    routes: dict[str, list[str]] = {}
    for renders in rendered.values():
        for obj in renders:
            namespace = obj["metadata"].get("namespace")
            if namespace:
                objects.setdefault(namespace, []).append(obj)
            if obj["kind"] == "Ingress":
                for rule in obj["spec"]["rules"]:
                    routes[rule["host"]] = [p["path"] for p in rule["http"]["paths"]]
    return Shipped(objects, routes, app.cli, app.url_map)


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.stem)
def test_runbook_commands_match_the_shipped_manifests_and_app(
    runbook: Path, shipped: Shipped
) -> None:
    text = runbook.read_text(encoding="utf-8")
    shell, promql = commands_of(text)
    assert shell or promql, f"{runbook.name}: no command found (fenced sh or promql block)"
    assert check(shipped, text) == []


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.stem)
def test_the_runbooks_public_reads_answer(
    runbook: Path, shipped: Shipped, client: FlaskClient, admin: Account
) -> None:
    """The reads run as an administrator against the app: query parameters included (an
    `action` the audit log does not know, or a `limit` over its maximum, would be a 422)."""
    for path in public_reads(shipped, runbook.read_text(encoding="utf-8")):
        response = client.get(path, headers=admin.headers)
        assert response.status_code == 200, (path, response.get_json())


def test_the_runbooks_commands_are_found(shipped: Shipped) -> None:
    """The extraction sees the runbooks' commands (a broken pattern would check nothing)."""
    assert len(RUNBOOKS) >= 14
    texts = [runbook.read_text(encoding="utf-8") for runbook in RUNBOOKS]
    found = [commands_of(text) for text in texts]
    assert sum(len(shell) for shell, _ in found) >= 40
    assert sum(len(promql) for _, promql in found) >= 30
    assert sum(len(public_reads(shipped, text)) for text in texts) >= 4


BAD = [
    ("kubectl -n prod get pods", "namespace 'prod'"),
    ("kubectl get pods", "namespace None"),
    ("kubectl -n gatehouse-prod logs deploy/gatehouse-web", "no Deployment 'gatehouse-web'"),
    ("kubectl -n gatehouse-prod get endpoints gatehouse-jobs", "no Service 'gatehouse-jobs'"),
    ("kubectl -n gatehouse-prod create job x --from=cronjob/backup", "no CronJob 'backup'"),
    ("kubectl -n gatehouse-prod get pods -l app.kubernetes.io/component=web", "matches no pod"),
    ("kubectl -n gatehouse-prod port-forward svc/gatehouse-api 8000:8000", "has no port 8000"),
    (
        "kubectl -n gatehouse-prod exec deploy/gatehouse-api -- flask --app wsgi jobs flush",
        "jobs flush",
    ),
    (
        "kubectl -n gatehouse-prod exec deploy/gatehouse-worker -- "
        "flask --app wsgi jobs failed --limit 500",
        "500",
    ),
    ("flask --app wsgi jobs replay --everything", "--everything"),
    ("kubectl -n gatehouse-prod logs job/$(kubectl -n prod get jobs -o name)", "'prod'"),
    ("flask jobs worker", "without --app wsgi"),
    ("curl -s https://gatehouse.example.com/ready | jq .", "not exposed through the Ingress"),
    ("curl -s https://gatehouse.staging.example.com/health", "does not route /health"),
    ("curl -s 'https://gatehouse.example.com/api/v1/audit-events?limit=5'", "redirects to"),
    ("curl -s -X DELETE https://gatehouse.example.com/api/v1/users/me", "DELETE /api/v1/users/me"),
    ("curl -s http://127.0.0.1:8000/ready", "nothing in the runbook port-forwards 8000"),
    (
        "curl -s https://gatehouse.example.com/api/v1/webhooks/<id>/delivery",
        "GET /api/v1/webhooks/00000000-0000-0000-0000-000000000000/delivery is not a route",
    ),
    (
        "curl -s -X PUT https://gatehouse.example.com/api/v1/webhooks/<id>",
        "PUT /api/v1/webhooks/00000000-0000-0000-0000-000000000000 is not a route",
    ),
    (
        "kubectl -n gatehouse-prod exec deploy/gatehouse-api -- python -c \"urlopen('http://127.0.0.1:9200/metrics')\"",
        "no container port 9200",
    ),
]


@pytest.mark.parametrize(("command", "problem"), BAD, ids=[c for c, _ in BAD])
def test_the_checker_finds_a_wrong_command(shipped: Shipped, command: str, problem: str) -> None:
    problems = check(shipped, f"```sh\n{command}\n```\n")
    assert problems, f"{command}: no problem found"
    assert problem in problems[0], problems


def test_the_checker_passes_right_commands(shipped: Shipped) -> None:
    text = (
        "```sh\n"
        "kubectl -n gatehouse-staging port-forward svc/gatehouse-api 8000:80\n"
        "curl -s http://127.0.0.1:8000/ready | jq .checks\n"
        "kubectl -n gatehouse-dev get deploy,pods -l app.kubernetes.io/component=worker\n"
        "kubectl -n gatehouse-prod exec deploy/gatehouse-worker -- "
        "flask --app wsgi jobs replay --all\n"
        "```\n"
        "Then `kubectl -n gatehouse-prod rollout undo deploy/gatehouse-api`.\n"
        "```sh\ncurl -s https://gatehouse.example.com/api/v1/webhooks/<id>/deliveries\n```\n"
        '```promql\nup{namespace="gatehouse-prod", job=~"gatehouse-api|gatehouse-worker"}\n```\n'
    )
    assert check(shipped, text) == []
    assert public_reads(shipped, text) == [], "an id to look up first (<id>) is not read"
    bad_promql = (
        '```promql\nup{namespace="prod"}\n```\n```sh\nkubectl -n gatehouse-prod get pods\n```\n'
    )
    assert check(shipped, bad_promql) == [
        "up{namespace=\"prod\"}: no namespace 'prod' in the renders"
    ]
