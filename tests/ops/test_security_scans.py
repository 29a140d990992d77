"""The local part of CI's Trivy stage: the secret and misconfiguration scanners over the repository
(the vulnerability database cannot be downloaded here: that scan runs in the hosted CI stage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.ops import ROOT, output, run, tool

# Local environments and caches are not part of the repository.
SKIP_DIRS = (
    ".git",
    ".venv",
    ".venv-tools",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "instance",
    "htmlcov",
)


def trivy_fs(target: Path, report: Path, cache: Path) -> Any:
    command = [
        tool("trivy"),
        "fs",
        "--quiet",
        "--scanners",
        "secret,misconfig",
        "--skip-check-update",
        "--skip-db-update",
        "--cache-dir",
        str(cache),
        "--severity",
        "HIGH,CRITICAL",
        "--format",
        "json",
        "--output",
        str(report),
    ]
    for directory in SKIP_DIRS:
        command += ["--skip-dirs", str(target / directory)]
    done = run([*command, str(target)])
    assert done.returncode == 0, f"trivy fs failed to run:\n{output(done)}"
    return json.loads(report.read_text())


def findings(report: Any) -> list[str]:
    found = []
    for result in report.get("Results") or []:
        for secret in result.get("Secrets") or []:
            found.append(f"{result['Target']}:{secret['StartLine']} secret {secret['RuleID']}")
        for misconf in result.get("Misconfigurations") or []:
            if misconf.get("Status") == "FAIL":
                found.append(f"{result['Target']}: {misconf['ID']} {misconf['Title']}")
    return found


@pytest.fixture(scope="module")
def repository_report(tmp_path_factory: pytest.TempPathFactory) -> Any:
    report = tmp_path_factory.mktemp("trivy-fs") / "report.json"
    return trivy_fs(ROOT, report, tmp_path_factory.mktemp("trivy-cache"))


def test_trivy_finds_no_secret_or_misconfiguration_in_the_repository(
    repository_report: Any,
) -> None:
    problems = findings(repository_report)
    assert not problems, "\n".join(problems)
    targets = {r["Target"] for r in repository_report.get("Results") or []}
    assert "Dockerfile" in targets  # the misconfiguration scanner did look at the Dockerfile


def test_trivy_config_finds_nothing_in_the_repository(tmp_path: Path) -> None:
    report = tmp_path / "config.json"
    command = [
        tool("trivy"),
        "config",
        "--quiet",
        "--skip-check-update",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    command += [
        "--severity",
        "HIGH,CRITICAL",
        "--exit-code",
        "1",
        "--format",
        "json",
        "--output",
        str(report),
    ]
    for directory in SKIP_DIRS:
        command += ["--skip-dirs", str(ROOT / directory)]
    done = run([*command, str(ROOT)])
    assert done.returncode == 0, (
        output(done) + "\n" + "\n".join(findings(json.loads(report.read_text())))
    )
    scanned = {r["Target"] for r in json.loads(report.read_text()).get("Results") or []}
    assert "Dockerfile" in scanned
    assert any(t.startswith("k8s/base/") for t in scanned), scanned


def test_the_secret_scanner_does_find_a_planted_secret(tmp_path: Path) -> None:
    """The clean verdict above means something: a credential-shaped string is caught."""
    planted = tmp_path / "repo"
    planted.mkdir()
    token = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"  # built here, not in the source
    (planted / "settings.py").write_text(f'GITHUB_TOKEN = "{token}"\n')
    report = trivy_fs(planted, tmp_path / "report.json", tmp_path / "cache")
    assert any("github-pat" in f for f in findings(report)), findings(report)
