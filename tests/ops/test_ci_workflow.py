"""The CI workflow: valid against the GitHub workflow schema, every third-party action pinned by a
full commit SHA with its release in a comment, and the stages README's "CI" paragraph lists
(lint, test, trivy, k6)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ops import ROOT, output, run, tool

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
USES = re.compile(r"^\s*(?:-\s*)?uses:\s*(?P<ref>\S+)(?P<comment>\s+#.*)?$")


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    workflow: dict[str, Any] = yaml.safe_load(
        (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    )
    return workflow


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = job["steps"]
    return found


def test_workflows_validate_against_the_github_schema() -> None:
    assert WORKFLOWS, "no workflow in .github/workflows"
    done = run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, WORKFLOWS),
        ]
    )
    assert done.returncode == 0, output(done)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha(workflow: Path) -> None:
    pinned = 0
    for number, line in enumerate(workflow.read_text().splitlines(), 1):
        match = USES.match(line)
        if not match:
            continue
        ref = match.group("ref")
        if ref.startswith(("./", "docker://")):
            continue
        _, _, version = ref.partition("@")
        assert re.fullmatch(r"[0-9a-f]{40}", version), (
            f"{workflow.name}:{number}: {ref} is not a SHA"
        )
        comment = match.group("comment") or ""
        assert re.search(r"#\s*v?\d+\.\d+", comment), (
            f"{workflow.name}:{number}: no version comment"
        )
        pinned += 1
    assert pinned > 0


def test_trivy_stage_scans_filesystem_config_and_image(ci: dict[str, Any]) -> None:
    trivy = [
        s for s in steps(ci["jobs"]["trivy"]) if "aquasecurity/trivy-action" in s.get("uses", "")
    ]
    scans = {s["with"]["scan-type"]: s["with"] for s in trivy}
    assert set(scans) == {"fs", "config", "image"}
    assert set(scans["fs"]["scanners"].split(",")) == {"vuln", "secret"}
    for options in scans.values():
        assert options["severity"] == "HIGH,CRITICAL"
        assert options["exit-code"] == "1"
    build = [s for s in steps(ci["jobs"]["trivy"]) if "docker build" in s.get("run", "")]
    assert build, "the image is built before it is scanned"
    assert scans["image"]["image-ref"] in build[0]["run"]
    assert any("kubectl kustomize" in s.get("run", "") for s in steps(ci["jobs"]["trivy"]))


def test_tests_run_against_postgres_and_redis_services(ci: dict[str, Any]) -> None:
    job = ci["jobs"]["test"]
    assert {"postgres", "redis"} <= set(job["services"])
    assert job["env"]["TEST_DATABASE_URL"].startswith("postgresql://")
    assert job["env"]["TEST_REDIS_URL"].startswith("redis://")
    assert any(s.get("run") == "make test" for s in steps(job))
    assert any(s.get("run") == "make lint" for s in steps(ci["jobs"]["lint"]))


def test_k6_stage_starts_the_stack_and_runs_smoke_and_load(ci: dict[str, Any]) -> None:
    job = ci["jobs"]["k6"]
    runs = [s.get("run", "") for s in steps(job)]
    assert any("docker compose up" in r and "--wait" in r for r in runs)
    assert any("users create-admin" in r for r in runs)
    for scenario in ("smoke", "load"):
        (command,) = [r for r in runs if f"python -m tests.load {scenario} " in r]
        assert "--thresholds errors" not in command  # CI gates on the SLO thresholds
    assert job["env"]["RATELIMIT_ENABLED"] == "false"
    # Production settings accept limits off only with the explicit opt-out.
    assert job["env"]["UNSAFE_PRODUCTION_WITHOUT_RATELIMIT"] == "true"
    # compose ships no secret: they are generated before the stack starts.
    generate = next(i for i, r in enumerate(runs) if "scripts/gen_env.py" in r)
    assert generate < next(i for i, r in enumerate(runs) if "docker compose up" in r)
    assert any("docker compose down" in r for r in runs)
