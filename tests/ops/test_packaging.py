"""The package builds without setuptools warnings and carries its data: email templates, the
API docs page and its script, the typing marker."""

from __future__ import annotations

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
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert built.returncode == 0, built.stderr[-3000:]
    assert "Warning" not in built.stdout + built.stderr.replace("WARNING: Location", "")
    [wheel] = tmp_path.glob("gatehouse-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.name for p in (ROOT / "jobs" / "templates").iterdir()}
    assert {f"jobs/templates/{name}" for name in templates} <= names
    assert {"webapp/static/swagger-init.js", "webapp/templates/swagger_ui.html"} <= names
    assert "webapp/py.typed" in names
    assert not any("__pycache__" in name for name in names)
