"""The CI workflows: valid against the GitHub workflow schema, every third-party action pinned by a
full commit SHA with its release in a comment, the stages README's "CI" paragraph lists (lint,
test, contract, trivy, k6), the caches (pip, image layers), Trivy's SARIF reports, the weekly
Trivy scan, PostgreSQL at production's version and a concurrency group that never cancels main."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ops import ROOT, output, run, tool

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
WEEKLY = ROOT / ".github" / "workflows" / "trivy-weekly.yml"
USES = re.compile(r"^\s*(?:-\s*)?uses:\s*(?P<ref>\S+)(?P<comment>\s+#.*)?$")
BUILD_ACTION = "docker/build-push-action"
TRIVY_ACTION = "aquasecurity/trivy-action"
SARIF_UPLOAD = "github/codeql-action/upload-sarif"


def load(path: Path) -> dict[str, Any]:
    workflow: dict[str, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return load(ROOT / ".github" / "workflows" / "ci.yml")


@pytest.fixture(scope="module")
def weekly() -> dict[str, Any]:
    assert WEEKLY.is_file(), "the weekly Trivy scan that ci.yml refers to is missing"
    return load(WEEKLY)


def using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in steps(job) if s.get("uses", "").startswith(f"{action}@")]


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
    (build,) = using(ci["jobs"]["trivy"], BUILD_ACTION)
    assert scans["image"]["image-ref"] == build["with"]["tags"]
    names = [s.get("uses", "") for s in steps(ci["jobs"]["trivy"])]
    assert names.index(build["uses"]) < names.index(next(s["uses"] for s in trivy))
    assert any("kubectl kustomize" in s.get("run", "") for s in steps(ci["jobs"]["trivy"]))


def test_tests_run_against_postgres_and_redis_services(ci: dict[str, Any]) -> None:
    job = ci["jobs"]["test"]
    assert {"postgres", "redis"} <= set(job["services"])
    assert job["env"]["TEST_DATABASE_URL"].startswith("postgresql://")
    assert job["env"]["TEST_REDIS_URL"].startswith("redis://")
    assert any(s.get("run") == "make test" for s in steps(job))
    assert any(s.get("run") == "make lint" for s in steps(ci["jobs"]["lint"]))


def test_contract_stage_runs_the_consumer_tests_then_the_provider_verification(
    ci: dict[str, Any],
) -> None:
    job = ci["jobs"]["contract"]
    assert job["services"]["postgres"] == ci["jobs"]["test"]["services"]["postgres"]
    assert job["services"]["redis"] == ci["jobs"]["test"]["services"]["redis"]
    assert job["env"] == ci["jobs"]["test"]["env"]
    runs = [s.get("run") for s in steps(job) if "run" in s]
    assert runs == ["make contract-consumer", "make contract-provider"]
    makefile = (ROOT / "Makefile").read_text()
    for target, folder in (
        ("consumer", "tests/contract/consumer"),
        ("provider", "tests/contract/provider"),
    ):
        (recipe,) = re.findall(rf"^contract-{target}:.*\n\t(.+)$", makefile, re.M)
        assert folder in recipe


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


def test_trivy_results_are_uploaded_as_sarif(ci: dict[str, Any]) -> None:
    job = ci["jobs"]["trivy"]
    assert job["permissions"]["security-events"] == "write"
    runs = " ".join(s.get("run", "") for s in steps(job))
    uploaded = {s["with"]["sarif_file"]: s for s in using(job, SARIF_UPLOAD)}
    for scan in using(job, TRIVY_ACTION):
        options = scan["with"]
        assert options["format"] == "sarif"
        # Without it the action drops `severity` for SARIF, and exit-code fails on LOW findings.
        assert options["limit-severities-for-sarif"] == "true"
        assert f"mkdir -p {Path(options['output']).parent}" in runs  # trivy does not create it
        upload = uploaded[options["output"]]
        assert upload["if"].startswith("always()")
    assert len({u["with"]["category"] for u in uploaded.values()}) == len(uploaded) == 3
    # A failed scan does not skip the others: every report is written and uploaded.
    for scan in using(job, TRIVY_ACTION)[1:]:
        assert scan["if"] == "${{ !cancelled() }}"


def test_weekly_trivy_scan_reports_unfixed_and_fails_on_fixable(weekly: dict[str, Any]) -> None:
    assert "trivy-weekly.yml" in (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    (cron,) = [entry["cron"] for entry in weekly["on"]["schedule"]]
    _minute, _hour, day, month, weekday = cron.split()
    assert (day, month) == ("*", "*"), f"not weekly: {cron}"
    assert weekday.isdigit(), f"not weekly: {cron}"
    assert "workflow_dispatch" in weekly["on"]
    (job,) = weekly["jobs"].values()
    assert job["permissions"]["security-events"] == "write"
    (build,) = using(job, BUILD_ACTION)
    scans = using(job, TRIVY_ACTION)
    reports = [s["with"] for s in scans if s["with"].get("format") == "sarif"]
    assert {r["scan-type"] for r in reports} == {"fs", "image"}
    for report in reports:
        assert report.get("ignore-unfixed", False) is False  # unfixed ones are reported
        assert report["exit-code"] == "0"
        assert "HIGH" in report["severity"]
    images = {s["with"]["image-ref"] for s in scans if s["with"]["scan-type"] == "image"}
    assert images == {build["with"]["tags"]}
    uploads = {s["with"]["sarif_file"] for s in using(job, SARIF_UPLOAD)}
    assert uploads == {r["output"] for r in reports}
    gates = [s["with"] for s in scans if s["with"]["exit-code"] == "1"]
    assert {g["scan-type"] for g in gates} == {"fs", "image"}
    assert all(g["ignore-unfixed"] is True for g in gates)


def test_pip_and_image_layers_are_cached(ci: dict[str, Any]) -> None:
    setups = [s for job in ci["jobs"].values() for s in using(job, "actions/setup-python")]
    assert len(setups) == 4
    for setup in setups:
        assert setup["with"]["cache"] == "pip"
        for name in setup["with"]["cache-dependency-path"].split():
            assert (ROOT / name).is_file(), name
    builds = {name: using(job, BUILD_ACTION) for name, job in ci["jobs"].items()}
    assert {name for name, found in builds.items() if found} == {"trivy", "k6"}
    scopes = set()
    for (build,) in (found for found in builds.values() if found):
        assert build["with"]["load"] is True
        assert build["with"]["cache-from"].startswith("type=gha,")
        assert build["with"]["cache-to"].startswith("type=gha,")
        assert "mode=max" in build["with"]["cache-to"]
        scopes.add(build["with"]["cache-from"])
    assert len(scopes) == 1, "the trivy and k6 builds share one cache"
    for job in ci["jobs"].values():
        for step in steps(job):
            assert "docker build" not in step.get("run", ""), "an uncached build"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    (k6_build,) = builds["k6"]
    assert compose["x-gatehouse"]["image"] == k6_build["with"]["tags"]
    up = next(s["run"] for s in steps(ci["jobs"]["k6"]) if "docker compose up" in s.get("run", ""))
    assert "--no-build" in up  # compose runs the image built from the cache


def test_ci_postgres_is_the_version_production_runs(ci: dict[str, Any]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    kustomization = yaml.safe_load((ROOT / "k8s" / "base" / "kustomization.yaml").read_text())
    (k8s,) = [i for i in kustomization["images"] if i["name"] == "postgres"]
    production = compose["services"]["postgres"]["image"]
    assert production == f"postgres:{k8s['newTag']}"
    assert ci["jobs"]["test"]["services"]["postgres"]["image"] == production


@pytest.mark.parametrize(
    ("ref", "cancels"),
    [("refs/heads/main", False), ("refs/pull/7/merge", True), ("refs/heads/feature", True)],
)
def test_concurrency_cancels_superseded_runs_but_never_main(
    ci: dict[str, Any], ref: str, cancels: bool
) -> None:
    """Two runs on `ref` (different SHAs): same group and cancel-in-progress means cancelled."""
    concurrency = ci["concurrency"]
    groups = {evaluate(concurrency["group"], ref, sha) for sha in ("a" * 40, "b" * 40)}
    cancel = concurrency["cancel-in-progress"]
    cancel = cancel if isinstance(cancel, bool) else evaluate(cancel, ref, "a" * 40) == "true"
    assert (len(groups) == 1 and cancel) is cancels


def evaluate(expression: str, ref: str, sha: str) -> str:
    """The workflow's own expressions, for the few forms this file uses (`a == b && x || y`)."""
    context = {"github.ref": ref, "github.sha": sha}

    def value(term: str) -> str:
        term = term.strip()
        return term.strip("'") if term.startswith("'") else context[term]

    def inner(match: re.Match[str]) -> str:
        body = match.group(1).strip()
        conditional = re.fullmatch(r"(.+?)\s*==\s*(.+?)\s*&&\s*(.+?)\s*\|\|\s*(.+)", body)
        if conditional:
            left, right, then, otherwise = conditional.groups()
            return value(then) if value(left) == value(right) else value(otherwise)
        comparison = re.fullmatch(r"(.+?)\s*(==|!=)\s*(.+)", body)
        if comparison:
            left, operator, right = comparison.groups()
            return str((value(left) == value(right)) == (operator == "==")).lower()
        return value(body)

    return re.sub(r"\$\{\{(.*?)\}\}", inner, expression)
