"""The processes and servers of the observability stack (tests/support/observability_stack.py),
and its Prometheus rules and Alertmanager configuration derived from the project's files.

The alerting rules are loaded from a test copy generated from alertmanager/rules/*.yml by
substitution: every `for:` shortened to 1s and the group `interval:`s removed (so that every group
runs at the 1 s evaluation interval). Nothing else differs; the expressions are the real ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from scripts.build_k8s_generated import with_runbook_links
from tests.support.rules import ALERTMANAGER_CONFIG, RULE_FILES
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
# Upper bounds of the waits (each returns as soon as its condition holds): generous, because
# `make test` runs the stack beside other tests on a 2-core machine, where booting the app or one
# Argon2 hash can take many seconds.
STARTUP, SETTLE, REQUEST = 120.0, 90.0, 60.0


# --- processes and servers -----------------------------------------------------------------------


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(self.text().splitlines()[-lines:])

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                for pid in [*self.children(), self.popen.pid]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.popen.wait(timeout=REQUEST)


def start(name: str, command: list[str], env: dict[str, str], logs: Path) -> Process:
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Process(name, popen, log)


def wait_for(
    condition: Callable[[], Any], what: str, timeout: float, processes: list[Process] = ()
) -> Any:
    """Poll `condition` until it returns something truthy (a request that fails counts as not
    yet); fail with the logs after `timeout`, or at once when one of `processes` exited."""

    def attempt() -> Any:
        with contextlib.suppress(requests.RequestException, OSError):
            result = condition()
            if result:
                return result
        dead = [p for p in processes if not p.alive()]
        if dead:
            logs = "\n".join(p.tail() for p in processes)
            names = ", ".join(p.name for p in dead)
            pytest.fail(f"waiting for {what}: {names} exited\n{logs}", pytrace=False)
        return None

    def timed_out() -> str:
        logs = "\n".join(p.tail() for p in processes)
        return f"waiting for {what}: timed out\n{logs}"

    return wait_until(attempt, timeout=timeout, interval=0.2, message=timed_out)


@dataclass
class Webhook:
    """Alertmanager's webhook receivers: every POST body, by path (/pager, /ticket)."""

    server: ThreadingHTTPServer
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def alerts(self, receiver: str) -> list[dict[str, Any]]:
        with self.changed:
            return [
                a for path, body in self.received if path == f"/{receiver}" for a in body["alerts"]
            ]

    def wait_for_alert(self, receiver: str, timeout: float, **labels: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for alert in self.alerts(receiver):
                if alert["status"] == "firing" and all(
                    alert["labels"].get(k) == v for k, v in labels.items()
                ):
                    return alert
            return None

        with self.changed:
            arrived = self.changed.wait_for(lambda: find() is not None, timeout)
        assert arrived, f"no firing {labels} reached the {receiver} webhook: {self.received}"
        found = find()
        assert found is not None
        return found


def start_webhook() -> Webhook:
    hook: Webhook

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with hook.changed:
                hook.received.append((self.path, body))
                hook.changed.notify_all()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook = Webhook(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return hook


# --- configuration derived from the project's files ---------------------------------------------


def shortened_rules(target: Path) -> list[Path]:
    """alertmanager/rules/*.yml, every `for:` shortened to 1s and the group intervals removed,
    with the runbook links made absolute as the generated PrometheusRules carry them."""
    target.mkdir()
    copies = []
    for path in RULE_FILES:
        text = path.read_text()
        shortened = re.sub(r"(?m)^(\s+)for: \S+$", r"\1for: 1s", text)
        shortened = re.sub(r"(?m)^\s+interval: \S+\n", "", shortened)
        original, copy_rules = yaml.safe_load(text), yaml.safe_load(shortened)
        for group, copied in zip(original["groups"], copy_rules["groups"], strict=True):
            assert [r["expr"] for r in group["rules"]] == [r["expr"] for r in copied["rules"]]
        copy = target / path.name
        copy_rules["groups"] = with_runbook_links(copy_rules["groups"])
        copy.write_text(yaml.safe_dump(copy_rules, sort_keys=False))
        copies.append(copy)
    return copies


def alertmanager_config(webhook: Webhook) -> dict[str, Any]:
    """alertmanager.yml with its webhooks pointed at `webhook` and the waits shortened."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{webhook.base}/{receiver['name']}"

    def shorten(route: dict[str, Any], root: bool) -> None:
        for key, value in (
            ("group_wait", "1s"),
            ("group_interval", "1s"),
            ("repeat_interval", "1h"),
        ):
            if root or key in route:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child, root=False)

    shorten(config["route"], root=True)
    return config
