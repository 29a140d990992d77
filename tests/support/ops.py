"""Helpers of the ops tests: where the tools are, running them, the rendered overlays.

The Python tools (checkov, kubernetes-validate, check-jsonschema, hadolint, trivy, k6) live in
`.venv-tools` (`make tools`, from requirements-tools.txt); kustomize comes from kubectl. A missing
tool fails the test with one line saying how to get it: these checks are never skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.deploy import find_kustomize

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".venv-tools" / "bin"
OVERLAYS = ("dev", "staging", "prod")
CUSTOM_KIND_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ROOT / "k8s/schemas/servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): ROOT / "k8s/schemas/prometheusrule_v1.json",
}
KUBERNETES_VERSION = "1.37.0"
POD_SPEC_KINDS = ("Deployment", "Job", "CronJob")


def tool(name: str) -> str:
    """Path of a tool installed by `make tools`; fails the test when it is missing."""
    path = TOOLS_BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{name} is not installed in .venv-tools: run `make tools` "
            "(installs requirements-tools.txt into .venv-tools)",
            pytrace=False,
        )
    return str(path)


def kustomize_command() -> list[str]:
    """`kubectl kustomize`, or a standalone `kustomize build`; fails when neither exists."""
    command = find_kustomize()
    if command is not None:
        return command
    pytest.fail(
        "neither kubectl nor kustomize is installed: see README, Deploy "
        "(https://kubernetes.io/docs/tasks/tools/ or the kustomize release binaries)",
        pytrace=False,
    )


def run(
    command: Sequence[str],
    *,
    cwd: Path = ROOT,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output (never raises on a non-zero status)."""
    return subprocess.run(
        list(command),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def output(done: subprocess.CompletedProcess[str], limit: int = 6000) -> str:
    text = (done.stdout + "\n" + done.stderr).strip()
    return text if len(text) <= limit else "...\n" + text[-limit:]


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects of a kustomization, rendered by the real kustomize."""
    done = run([*kustomize_command(), str(directory)])
    assert done.returncode == 0, f"kustomize failed for {directory}:\n{output(done)}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(object, pod spec) for every workload of a render."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            yield obj, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def is_custom(obj: dict[str, Any]) -> bool:
    return (obj["apiVersion"], obj["kind"]) in CUSTOM_KIND_SCHEMAS


def write_yaml(path: Path, objects: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False), encoding="utf-8")
    return path


def gunicorn_graceful_timeout() -> int:
    """gunicorn's graceful timeout as gunicorn.conf.py computes it without overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUNICORN_")}
    done = run(
        [
            sys.executable,
            "-c",
            "import runpy; print(runpy.run_path('gunicorn.conf.py')['graceful_timeout'])",
        ],
        env=env,
    )
    assert done.returncode == 0, output(done)
    return int(done.stdout.strip())
