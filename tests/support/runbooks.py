"""Reading docs/runbooks: the commands of a runbook and the checker that compares them with what
is shipped (the rendered overlays, the Flask app's Click commands and url_map, the Ingress routes).
Used by tests/ops/test_runbook_commands.py, whose docstring lists the rules."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import click
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, RequestRedirect

from tests.support.ops import pod_specs

SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`((?:kubectl|flask|curl) [^`]+)`")
PLACEHOLDER = re.compile(r"<[a-z][a-z0-9_.-]*>")
SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")
URL = re.compile(r"https?://[^\s'\"`)]+")
OPERATORS = set("|&;()<>")
ID_SEGMENT = re.compile(r"(?<=/)PLACEHOLDER(?=/|$)")
NIL_UUID = "00000000-0000-0000-0000-000000000000"
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
        # `$(...)`: the inner command is checked on its own, its output is a name like `<pod>`.
        for inner in SUBSTITUTION.findall(line):
            self.command(inner)
        for tokens in segments(SUBSTITUTION.sub("PLACEHOLDER", line)):
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
        # `<id>` in a path (`/api/v1/webhooks/<id>/deliveries`) stands for an id the reader
        # looked up: matched as a UUID, the kind of every id of the API.
        path = ID_SEGMENT.sub(NIL_UUID, path)
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


def check(shipped: Shipped, text: str) -> list[str]:
    checker = Checker(shipped)
    shell, promql = commands_of(text)
    for line in sorted(shell, key=lambda c: "port-forward" not in c):  # port-forwards first
        checker.command(line)
    for query in promql:
        checker.promql(query)
    return checker.problems


def public_reads(shipped: Shipped, text: str) -> list[str]:
    """Path and query of every `curl` GET of a runbook through a public host (not those of an
    id to look up first, `<id>`: no such row exists where they are read)."""
    reads = []
    for line in commands_of(text)[0]:
        for tokens in segments(line):
            if tokens[0] != "curl" or {"-X", "-d", "--data", "--json"} & set(tokens):
                continue
            for url in (urlsplit(u) for token in tokens for u in URL.findall(token)):
                if url.hostname in shipped.routes and not ID_SEGMENT.search(url.path):
                    reads.append(url.path + (f"?{url.query}" if url.query else ""))
    return reads
