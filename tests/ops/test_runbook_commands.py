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
- a URL's path is a route of the app's url_map (no redirect: `/audit-events` is `/audit-events/`),
  a URL on a public host is routed by that host's Ingress, and `/ready` and `/metrics` are never
  requested through it; `127.0.0.1` URLs use the local port of a port-forward of the runbook, or a
  container port inside `kubectl exec`;
- PromQL's `namespace` and `job` matchers name a rendered namespace and a Service.

The checker's own tests feed it known-bad commands, so a checker that stopped seeing a problem
fails too.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
from flask import Flask
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, RequestRedirect

from tests.support.ops import ROOT, pod_specs

RUNBOOKS = sorted((ROOT / "docs" / "runbooks").glob("*.md"))
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`((?:kubectl|flask|curl) [^`]+)`")
PLACEHOLDER = re.compile(r"<[a-z][a-z0-9_.-]*>")
URL = re.compile(r"https?://[^\s'\"`)]+")
OPERATORS = set("|&;()<>")
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
NEVER_PUBLIC = ("/ready", "/metrics")
# kubectl's resource types (and short names) whose names the renders must contain.
KINDS = {
    **dict.fromkeys(("deploy", "deployment", "deployments"), "Deployment"),
    **dict.fromkeys(("svc", "service", "services", "ep", "endpoints"), "Service"),
    **dict.fromkeys(("cm", "configmap", "configmaps"), "ConfigMap"),
    **dict.fromkeys(("secret", "secrets"), "Secret"),
    **dict.fromkeys(("job", "jobs"), "Job"),
    **dict.fromkeys(("cj", "cronjob", "cronjobs"), "CronJob"),
    **dict.fromkeys(("hpa", "horizontalpodautoscaler"), "HorizontalPodAutoscaler"),
    **dict.fromkeys(("pvc", "persistentvolumeclaim"), "PersistentVolumeClaim"),
    **dict.fromkeys(("ing", "ingress"), "Ingress"),
}
VALUE_FLAGS = {"-n", "--namespace", "-l", "--selector", "-c", "--container", "-o", "--output"}
VALUE_FLAGS |= {"--since", "--tail", "--replicas", "--timeout", "--for", "-f", "--filename"}


@dataclass
class Shipped:
    """What the runbooks may name: the renders by namespace, the Ingress routes, the app."""

    objects: dict[str, list[dict[str, Any]]]  # namespace -> rendered objects
    routes: dict[str, list[str]]  # public host -> path prefixes its Ingress routes
    cli: click.Group
    url_map: Map

    def names(self, namespace: str, kind: str) -> set[str]:
        objects = self.objects[namespace]
        found = {o["metadata"]["name"] for o in objects if o["kind"] == kind}
        if kind == "Secret":  # created outside kustomize (secret.example.yaml): the referenced ones
            for _, spec in pod_specs(objects):
                found |= secret_references(spec)
        return found

    def pod_labels(self, namespace: str) -> list[dict[str, str]]:
        labels = []
        for obj in self.objects[namespace]:
            if obj["kind"] in ("Deployment", "Job"):
                labels.append(obj["spec"]["template"]["metadata"]["labels"])
            elif obj["kind"] == "CronJob":
                labels.append(obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])
        return labels

    def ports(self, namespace: str, kind: str, name: str | None) -> set[str]:
        """Port numbers and names of a Service, or the containers of a workload (all if None)."""
        found: set[str] = set()
        for obj in self.objects[namespace]:
            if name is not None and (obj["kind"], obj["metadata"]["name"]) != (kind, name):
                continue
            if obj["kind"] == "Service" and kind == "Service":
                found |= {str(p.get(k)) for p in obj["spec"]["ports"] for k in ("port", "name")}
        for obj, spec in pod_specs(self.objects[namespace]):
            if kind != "Service" and (name is None or obj["metadata"]["name"] == name):
                for container in spec["containers"]:
                    for port in container.get("ports", []):
                        found |= {str(port["containerPort"]), str(port.get("name"))}
        return found


@dataclass
class Checker:
    """Checks the commands of one runbook; `problems` lists what does not match the shipped."""

    shipped: Shipped
    forwarded: set[str] = field(default_factory=set)  # local ports of the runbook's port-forwards
    problems: list[str] = field(default_factory=list)

    def command(self, line: str) -> None:
        for tokens in segments(line):
            if tokens[0] == "kubectl":  # its URLs are those of the command it execs
                self.kubectl(line, tokens[1:])
                continue
            if tokens[0] == "flask":
                self.flask(line, tokens)
            self.urls(line, tokens, inside=None)

    def promql(self, query: str) -> None:
        services = {n for ns in self.shipped.objects for n in self.shipped.names(ns, "Service")}
        for label, value in re.findall(r'\b(namespace|job)=~?"([^"]*)"', query):
            for one in value.split("|"):
                if one not in (self.shipped.objects if label == "namespace" else services):
                    self.problems.append(f"{query}: no {label} {one!r} in the renders")

    def kubectl(self, line: str, args: list[str]) -> None:
        flags, positional, rest = parse_kubectl(args)
        namespace = flags.get("-n") or flags.get("--namespace")
        if namespace not in self.shipped.objects:
            self.problems.append(f"{line}: namespace {namespace!r} is not a rendered overlay's")
            return
        verb, targets = (positional or [""])[0], positional[1:]
        if verb == "rollout":
            targets = targets[1:]
        elif verb == "create":  # `create job NEW --from=cronjob/NAME`: only --from exists
            targets = [flags["--from"]] if "--from" in flags else []
        elif verb in ("get", "describe", "delete", "top") and targets and "/" not in targets[0]:
            kind = KINDS.get(targets[0])
            targets = [f"{targets[0]}/{name}" for name in targets[1:]] if kind else []
        if verb == "port-forward" and len(targets) >= 2:
            self.port_forward(line, namespace, targets[0], targets[1:])
            targets = targets[:1]
        for target in targets:
            self.resource(line, namespace, target)
        selector = flags.get("-l") or flags.get("--selector")
        if selector:
            wanted = dict(pair.split("=", 1) for pair in selector.split(","))
            if not any(
                wanted.items() <= labels.items() for labels in self.shipped.pod_labels(namespace)
            ):
                self.problems.append(f"{line}: selector {selector} matches no pod template")
        if rest:
            kind, _, name = (targets[0] if targets else "pod/").partition("/")
            in_pod = (KINDS.get(kind, "Pod"), name if kind in KINDS else None)
            for tokens in segments(shlex.join(rest)):
                if tokens[0] == "flask":
                    self.flask(line, tokens)
                self.urls(line, tokens, inside=(namespace, *in_pod))

    def resource(self, line: str, namespace: str, target: str) -> None:
        if "/" not in target:
            return  # a pod's name (`<pod>`): pods come and go
        kind, _, name = target.partition("/")
        if kind not in KINDS:
            if kind not in ("pod", "pods", "po") and "," not in kind:
                self.problems.append(f"{line}: unknown resource type in {target!r}")
            return
        if (
            name
            and name != "PLACEHOLDER"
            and name not in self.shipped.names(namespace, KINDS[kind])
        ):
            self.problems.append(f"{line}: no {KINDS[kind]} {name!r} in {namespace}")

    def port_forward(self, line: str, namespace: str, target: str, ports: list[str]) -> None:
        kind, _, name = target.partition("/")
        known = self.shipped.ports(
            namespace, KINDS.get(kind, "Pod"), name if kind in KINDS else None
        )
        for spec in ports:
            local, _, remote = spec.rpartition(":")
            self.forwarded.add(local or remote)
            if remote not in known:
                self.problems.append(f"{line}: {target} has no port {remote} (has {sorted(known)})")

    def flask(self, line: str, tokens: list[str]) -> None:
        if tokens[1:3] != ["--app", "wsgi"]:
            self.problems.append(f"{line}: flask without --app wsgi (the image's entry point)")
            return
        command: click.Command | None = self.shipped.cli
        path = tokens[3:]
        while isinstance(command, click.Group) and path and not path[0].startswith("-"):
            command, path = command.commands.get(path[0]), path[1:]
        if command is None or isinstance(command, click.Group):
            self.problems.append(f"{line}: not a command of the app: {' '.join(tokens[3:5])}")
            return
        try:
            command.make_context(command.name or "", path)
        except click.ClickException as exc:
            self.problems.append(f"{line}: {exc.format_message()}")

    def urls(
        self, line: str, tokens: list[str], inside: tuple[str, str, str | None] | None
    ) -> None:
        method = "GET"
        if tokens[0] == "curl":
            flags = tokens[1:]
            if "-X" in flags:
                method = flags[flags.index("-X") + 1]
            elif {"-d", "--data", "--json"} & set(flags):
                method = "POST"
        for token in tokens:
            for url in URL.findall(token):
                self.url(line, urlsplit(url), method, inside)

    def url(
        self, line: str, url: Any, method: str, inside: tuple[str, str, str | None] | None
    ) -> None:
        host, path = url.hostname or "", url.path or "/"
        if host in self.shipped.routes:
            if path.startswith(NEVER_PUBLIC):
                self.problems.append(f"{line}: {path} is not exposed through the Ingress")
            elif not any(path.startswith(prefix) for prefix in self.shipped.routes[host]):
                self.problems.append(f"{line}: the Ingress of {host} does not route {path}")
        elif host in LOCAL_HOSTS:
            port = str(url.port or 80)
            if inside is not None:
                known = self.shipped.ports(inside[0], inside[1], inside[2])
                if port not in known:
                    self.problems.append(f"{line}: no container port {port} (has {sorted(known)})")
            elif port not in self.forwarded:
                self.problems.append(f"{line}: nothing in the runbook port-forwards {port}")
        else:
            return  # another system's address: not ours to check
        try:
            self.shipped.url_map.bind(host or "localhost").match(path, method=method)
        except RequestRedirect as redirect:
            self.problems.append(f"{line}: {path} redirects to {redirect.new_url}")
        except (NotFound, MethodNotAllowed):
            self.problems.append(f"{line}: {method} {path} is not a route of the app")


def secret_references(node: Any) -> set[str]:
    """Names of the Secrets a pod spec uses: envFrom, env valueFrom, volumes (also projected)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("secretRef", "secretKeyRef", "secret") and isinstance(value, dict):
                found.add(value.get("secretName") or value.get("name") or "")
            found |= secret_references(value)
    elif isinstance(node, list):
        for item in node:
            found |= secret_references(item)
    return found - {""}


def segments(line: str) -> list[list[str]]:
    """The simple commands of a shell line: split at pipes, `&&`, `;`, `&`, redirections."""
    lexer = shlex.shlex(PLACEHOLDER.sub("PLACEHOLDER", line), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    found: list[list[str]] = [[]]
    for token in lexer:
        if set(token) <= OPERATORS:
            found.append([])
        else:
            found[-1].append(token)
    return [tokens for tokens in found if tokens]


def parse_kubectl(args: list[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """kubectl's arguments -> (flags with values, positional arguments, the command after `--`)."""
    flags: dict[str, str] = {}
    positional: list[str] = []
    tokens = iter(args)
    for token in tokens:
        if token == "--":
            return flags, positional, list(tokens)
        if token.startswith("-"):
            name, equals, value = token.partition("=")
            flags[name] = value if equals else (next(tokens, "") if name in VALUE_FLAGS else "")
        else:
            positional.append(token)
    return flags, positional, []


def commands_of(text: str) -> tuple[list[str], list[str]]:
    """(shell command lines, PromQL queries) of a runbook."""
    shell: list[str] = []
    promql: list[str] = []
    for language, body in FENCE.findall(text):
        lines = body.replace("\\\n", " ").splitlines()
        if language in SHELL_LANGUAGES:
            shell += [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        elif language == "promql":
            promql += [line for line in lines if line.strip()]
    prose = FENCE.sub("", text).replace("\n", " ")
    shell += INLINE.findall(prose)
    return shell, promql


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


def check(shipped: Shipped, text: str) -> list[str]:
    checker = Checker(shipped)
    shell, promql = commands_of(text)
    for line in sorted(shell, key=lambda c: "port-forward" not in c):  # port-forwards first
        checker.command(line)
    for query in promql:
        checker.promql(query)
    return checker.problems


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.stem)
def test_runbook_commands_match_the_shipped_manifests_and_app(
    runbook: Path, shipped: Shipped
) -> None:
    text = runbook.read_text(encoding="utf-8")
    shell, promql = commands_of(text)
    assert shell or promql, f"{runbook.name}: no command found (fenced sh or promql block)"
    assert check(shipped, text) == []


def test_the_runbooks_commands_are_found() -> None:
    """The extraction sees the runbooks' commands (a broken pattern would check nothing)."""
    assert len(RUNBOOKS) >= 14
    found = [commands_of(runbook.read_text(encoding="utf-8")) for runbook in RUNBOOKS]
    assert sum(len(shell) for shell, _ in found) >= 40
    assert sum(len(promql) for _, promql in found) >= 30


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
    ("flask jobs worker", "without --app wsgi"),
    ("curl -s https://gatehouse.example.com/ready | jq .", "not exposed through the Ingress"),
    ("curl -s https://gatehouse.staging.example.com/health", "does not route /health"),
    ("curl -s 'https://gatehouse.example.com/api/v1/audit-events?limit=5'", "redirects to"),
    ("curl -s -X DELETE https://gatehouse.example.com/api/v1/users/me", "DELETE /api/v1/users/me"),
    ("curl -s http://127.0.0.1:8000/ready", "nothing in the runbook port-forwards 8000"),
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
        '```promql\nup{namespace="gatehouse-prod", job=~"gatehouse-api|gatehouse-worker"}\n```\n'
    )
    assert check(shipped, text) == []
    bad_promql = (
        '```promql\nup{namespace="prod"}\n```\n```sh\nkubectl -n gatehouse-prod get pods\n```\n'
    )
    assert check(shipped, bad_promql) == [
        "up{namespace=\"prod\"}: no namespace 'prod' in the renders"
    ]
