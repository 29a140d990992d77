"""The package builds (as `pip install .` does) without a setuptools warning and carries its data:
email templates, the API docs page and its script, the typing marker; and nothing else of the
repository (no tests/, no bench/)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_builds_quietly_with_every_data_file(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ beside the sources.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".venv*", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "htmlcov"
        ),
    )
    # -v: pip shows what setuptools prints (its warnings included) only when verbose. Byte
    # compiling stays on, or setuptools says it skips it, which is no defect of the package.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", str(source), "--no-deps", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )

    assert built.returncode == 0, built.stderr[-3000:]
    output = built.stdout + built.stderr
    assert "running bdist_wheel" in output  # setuptools' own lines are there to be read
    warnings = [
        line
        for line in output.splitlines()
        # pip's own notes about this machine's package index are not the package's.
        if re.search(r"(?i)warn|!!", line) and "WARNING: Location" not in line
    ]
    assert warnings == []
    [wheel] = tmp_path.glob("gatehouse-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.name for p in (ROOT / "jobs" / "templates").iterdir()}
    assert {f"jobs/templates/{name}" for name in templates} <= names
    assert {"webapp/static/swagger-init.js", "webapp/templates/swagger_ui.html"} <= names
    assert "webapp/py.typed" in names
    assert not any("__pycache__" in name for name in names)
    # The tests and the benchmark runners are tooling of the repository, not of the package.
    assert {name.split("/")[0] for name in names} == {
        "webapp",
        "jobs",
        "observability",
        *(name.split("/")[0] for name in names if ".dist-info/" in name),
    }
