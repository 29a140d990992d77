"""The pre-commit hooks run the checks of `make lint` at the versions `make lint` uses."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def pinned(name: str) -> str:
    """The version of `name` pinned in setup.cfg's dev extras."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    dev = parser["options.extras_require"]["dev"]
    [version] = re.findall(rf"(?m)^{re.escape(name)}==(\S+)$", dev)
    return version


def hooks() -> dict[str, dict]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    return {
        hook["id"]: {**hook, "repo": repo["repo"], "rev": repo.get("rev")}
        for repo in config["repos"]
        for hook in repo["hooks"]
    }


def test_ruff_s_hooks_run_the_pinned_ruff():
    found = hooks()

    assert {"ruff-check", "ruff-format"} <= set(found)
    for hook_id in ("ruff-check", "ruff-format"):
        assert found[hook_id]["repo"] == "https://github.com/astral-sh/ruff-pre-commit"
        assert found[hook_id]["rev"] == f"v{pinned('ruff')}"


def test_mypy_and_the_import_rules_run_from_the_project_s_virtualenv():
    found = hooks()

    for hook_id, tool in (("mypy", "mypy"), ("lint-imports", "lint-imports")):
        assert found[hook_id]["repo"] == "local"
        assert found[hook_id]["entry"] == f".venv/bin/{tool}"
        # Whole-project runs, as in `make lint`: the file lists come from setup.cfg.
        assert found[hook_id]["pass_filenames"] is False


def test_mypy_s_hook_checks_with_setup_cfg_s_settings_and_the_pinned_stubs():
    mypy = hooks()["mypy"]
    # No arguments of its own: the settings (strict, the per-module exceptions) are setup.cfg's.
    assert "args" not in mypy
    # The third-party stubs are those of the .venv it runs from, the dev extras' pins: the hook
    # declares none of its own that could drift from them.
    assert "additional_dependencies" not in mypy
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    stubs = re.findall(r"(?m)^(types-[\w.-]+)==(\S+)$", parser["options.extras_require"]["dev"])
    assert stubs
    for name, version in stubs:
        assert metadata.version(name) == version, f"{name}: run `make install`"


def test_pre_commit_itself_is_pinned():
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned("pre-commit"))


def test_the_pinned_pre_commit_accepts_the_config():
    done = subprocess.run(
        [sys.executable, "-m", "pre_commit", "validate-config", ".pre-commit-config.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stdout + done.stderr
