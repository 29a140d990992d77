"""The Dockerfile: hadolint-clean, multi-stage from a slim Python pinned by version and digest (the
same in both stages, kept current by Renovate), wheels built in the first stage, no build tools and
no root at run time, a HEALTHCHECK, gunicorn as the command."""

from __future__ import annotations

import fnmatch
import json
import re

from tests.support.ops import ROOT, gunicorn_graceful_timeout, output, run, tool

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def test_hadolint_reports_nothing() -> None:
    done = run(
        [tool("hadolint"), "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)]
    )
    findings = json.loads(done.stdout or "[]")
    assert findings == [], output(done)
    assert done.returncode == 0, output(done)


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\nUSER root\n")
    done = run([tool("hadolint"), "--format", "json", str(bad)])
    codes = {f["code"] for f in json.loads(done.stdout)}
    assert {"DL3007", "DL3008", "DL3009"} & codes, output(done)
    assert done.returncode != 0


def test_multi_stage_build_from_a_pinned_slim_python() -> None:
    build, final = stages()
    images = {stage[0][1].split()[0] for stage in (build, final)}
    (image,) = images  # one base for both stages
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?@sha256:[0-9a-f]{64}", image), image
    assert stage_name(build) == "build"
    build_runs = " ".join(rest for keyword, rest in build if keyword == "RUN")
    assert "pip wheel --wheel-dir /wheels" in build_runs
    final_runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert "from=build,source=/wheels" in final_runs  # wheels bind-mounted, not copied in
    assert "--no-index" in final_runs
    for tool_name in ("apt-get", "gcc", "build-essential", "git "):
        assert tool_name not in final_runs, f"{tool_name} in the final stage"


def stage_name(stage: list[tuple[str, str]]) -> str:
    words = stage[0][1].split()
    return words[2] if len(words) == 3 and words[1].upper() == "AS" else ""


def test_runs_unprivileged_with_healthcheck_and_gunicorn() -> None:
    final = stages()[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the final stage must switch to an unprivileged user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric uid: runAsNonRoot can verify it"
    assert int(uid) >= 10000
    keywords = [keyword for keyword, _ in final]
    assert keywords.index("USER") < keywords.index("CMD")
    (health,) = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    assert "/health" in health
    (cmd,) = [rest for keyword, rest in final if keyword == "CMD"]
    assert json.loads(cmd) == ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert "PROMETHEUS_MULTIPROC_DIR=/tmp/metrics" in env
    assert "GATEHOUSE_ENV=production" in env
    # The graceful timeout comes from gunicorn.conf.py; the image must not shorten it.
    assert "GUNICORN_GRACEFUL_TIMEOUT" not in env
    assert gunicorn_graceful_timeout() == 25


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "**", "deny everything first, then allow the sources"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for keyword, rest in instructions():
        if keyword == "COPY" and "--from" not in rest:
            sources = [w for w in rest.split() if not w.startswith("--")][:-1]
            copied |= {s.rstrip("/") for s in sources}
    assert copied <= allowed, copied - allowed
    for secret_or_bulky in (".git", ".venv", ".venv-tools", "instance", "tests", ".env"):
        assert not any(fnmatch.fnmatch(secret_or_bulky, a) for a in allowed), secret_or_bulky
