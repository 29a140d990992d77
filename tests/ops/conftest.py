"""Session fixtures of the ops tests: every overlay rendered once, the slow scanners run once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.ops import OVERLAYS, ROOT, is_custom, output, render, run, tool, write_yaml


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """overlay name -> the objects `kubectl kustomize k8s/overlays/<name>` renders."""
    return {name: render(ROOT / "k8s" / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def rendered_dir(
    rendered: dict[str, list[dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The renders as files: <overlay>.yaml (all objects) for the scanners."""
    directory = tmp_path_factory.mktemp("rendered")
    for name, objects in rendered.items():
        write_yaml(directory / f"{name}.yaml", objects)
    return directory


@pytest.fixture(scope="session")
def builtin_files(
    rendered: dict[str, list[dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """Per overlay, the objects of built-in Kubernetes kinds (for kubernetes-validate)."""
    directory = tmp_path_factory.mktemp("builtin")
    return [
        write_yaml(directory / f"{name}.yaml", [o for o in objects if not is_custom(o)])
        for name, objects in rendered.items()
    ]


@pytest.fixture(scope="session")
def checkov_report(rendered_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """checkov, once, over every rendered manifest, the Dockerfile and the CI workflows."""
    target = tmp_path_factory.mktemp("checkov")
    shutil.copytree(rendered_dir, target / "k8s")
    shutil.copy(ROOT / "Dockerfile", target / "Dockerfile")
    shutil.copytree(ROOT / ".github" / "workflows", target / ".github" / "workflows")
    command = [
        tool("checkov"),
        "--compact",
        "--skip-download",  # offline: no guideline links, same verdicts
        "--output",
        "json",
        "--directory",
        str(target),
        "--framework",
        "kubernetes",
        "dockerfile",
        "github_actions",
    ]
    done = run(command)
    assert done.returncode in (0, 1), f"checkov did not run:\n{output(done)}"
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return {r["check_type"]: r for r in reports}


@pytest.fixture(scope="session")
def trivy_config_report(rendered_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`trivy config` over the rendered manifests and the Dockerfile, HIGH and CRITICAL only."""
    target = tmp_path_factory.mktemp("trivy-config")
    for path in rendered_dir.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    (target / "Dockerfile").write_bytes((ROOT / "Dockerfile").read_bytes())
    report = tmp_path_factory.mktemp("trivy-report") / "report.json"
    done = run(
        [
            tool("trivy"),
            "config",
            "--quiet",
            "--skip-check-update",  # the checks embedded in the binary; no download
            "--cache-dir",
            str(tmp_path_factory.mktemp("trivy-cache")),
            "--severity",
            "HIGH,CRITICAL",
            "--format",
            "json",
            "--output",
            str(report),
            str(target),
        ]
    )
    assert done.returncode == 0, f"trivy config failed to run:\n{output(done)}"
    return json.loads(report.read_text())
