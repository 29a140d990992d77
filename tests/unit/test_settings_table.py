"""The configuration is declared once: README's tables are generated from `Settings`,
`JobsSettings` and `PROCESS_VARIABLES`, every declaration explains itself, and every variable the
code or the shipped manifests set is one of them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from scripts import settings_table
from webapp.config import PROCESS_VARIABLES

ROOT = Path(__file__).resolve().parents[2]
DECLARED = settings_table.declared_variables()
AROUND = {variable.name for variable in PROCESS_VARIABLES}
# Where the deployed processes read the environment themselves. scripts/testenv.py is left out:
# it is the test suite's harness (TESTENV_NO_SYSTEM), not something a deployment sets.
READERS = [
    *sorted((ROOT / "webapp").rglob("*.py")),
    *sorted((ROOT / "jobs").rglob("*.py")),
    *sorted((ROOT / "observability").rglob("*.py")),
    ROOT / "gunicorn.conf.py",
    ROOT / "wsgi.py",
    *[p for p in sorted((ROOT / "scripts").glob("*.py")) if p.name != "testenv.py"],
]
# os.environ.get("X"), os.environ["X"], os.getenv("X") (a WSGI `environ` is not the process's).
READ = re.compile(r"""os\.(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']""")


def test_the_readme_tables_are_generated_from_the_declarations():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    assert settings_table.render(readme) == readme, "run: python -m scripts.settings_table"


def test_the_check_mode_notices_a_stale_table(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stale = tmp_path / "README.md"
    stale.write_text(readme.replace("| `ACCESS_TOKEN_TTL` |", "| `ACCESS_TOKEN_TIME` |"))
    monkeypatch.setattr(settings_table, "README", stale)

    assert settings_table.main(["--check"]) == 1
    assert settings_table.main([]) == 0
    assert stale.read_text(encoding="utf-8") == readme


def test_every_setting_has_help_text():
    missing = [
        name
        for declared_in in settings_table.DECLARATIONS
        for name, info in declared_in.model_fields.items()
        if not info.description
    ]
    assert missing == []
    assert "SMTP_URL" in DECLARED  # the jobs package's settings are among them
    assert all(variable.meaning and variable.default for variable in PROCESS_VARIABLES)


def test_every_setting_appears_once_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([A-Z_0-9]+)` \|", readme, flags=re.MULTILINE)

    assert sorted(rows) == sorted(DECLARED | AROUND)
    assert not DECLARED & AROUND


def test_every_variable_the_code_reads_is_declared():
    read: dict[str, str] = {}
    for path in READERS:
        for name in READ.findall(path.read_text(encoding="utf-8")):
            read.setdefault(name, str(path.relative_to(ROOT)))

    assert "GUNICORN_THREADS" in read  # the pattern finds what it is meant to
    undeclared = {name: where for name, where in read.items() if name not in DECLARED | AROUND}
    assert undeclared == {}
    ours = {variable.name for variable in PROCESS_VARIABLES if variable.reader is None}
    unread = ours - set(read)
    assert unread == set(), "documented but read nowhere"
    read_by_a_library = AROUND - ours
    assert read_by_a_library & set(read) == set(), "read by the code: drop its `reader`"


def test_the_variables_left_to_the_opentelemetry_sdk_are_the_sdks():
    from opentelemetry.sdk import environment_variables

    left = {v.name for v in PROCESS_VARIABLES if v.reader == "the OpenTelemetry SDK"}

    assert left == {"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"}
    assert all(getattr(environment_variables, name, None) == name for name in left)


def test_the_shipped_configmap_sets_only_declared_variables():
    configmap = yaml.safe_load((ROOT / "k8s" / "base" / "configmap.yaml").read_text())

    assert set(configmap["data"]) - (DECLARED | AROUND) == set()
