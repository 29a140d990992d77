"""Write README.md's configuration tables from the settings' declarations (webapp and jobs).

    python -m scripts.settings_table          # (re)write the tables in README.md
    python -m scripts.settings_table --check  # exit 1 if README.md differs (tests, CI)

Three tables, each between marker comments in README.md: every field of `Settings` (variable,
what it accepts, default, meaning: its help text), every field of `JobsSettings` (the same
columns), and `PROCESS_VARIABLES`, what is read around the application (gunicorn.conf.py, the job
worker's metrics endpoint, CLI commands, the OpenTelemetry SDK). Edit the declarations, not the
tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Literal, get_args, get_origin

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python scripts/settings_table.py` as well as `-m`
    sys.path.insert(0, str(ROOT))

from jobs.settings import JobsSettings  # noqa: E402
from webapp.config import PROCESS_VARIABLES, DeclaredSettings, Settings, env_name  # noqa: E402

README = ROOT / "README.md"
SETTINGS_MARKERS = ("<!-- settings-table:start -->", "<!-- settings-table:end -->")
JOBS_MARKERS = ("<!-- jobs-settings-table:start -->", "<!-- jobs-settings-table:end -->")
# Every settings class, in the order of README's tables; each variable is declared by one of them.
DECLARATIONS: tuple[type[DeclaredSettings], ...] = (Settings, JobsSettings)
PROCESS_MARKERS = ("<!-- process-variables:start -->", "<!-- process-variables:end -->")
HEADER = ["| variable | default | meaning |", "| --- | --- | --- |"]
SETTINGS_HEADER = [
    "| variable | accepts | default | meaning |",
    "| --- | --- | --- | --- |",
]
_KINDS = {int: "integer", float: "number", bool: "`true` / `false`", str: "text"}


def declared_variables() -> set[str]:
    """The variable of every field of every settings class."""
    return {env_name(field, cls) for cls in DECLARATIONS for field in cls.model_fields}


def shown_default(field: str, declared_in: type[DeclaredSettings] = Settings) -> str:
    """How a default reads in the table: a declared wording, else the value in backticks."""
    info = declared_in.model_fields[field]
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("shown_default"), str):
        return str(extra["shown_default"])
    value = info.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if value == ():
        return "empty"
    return f"`{value}`"


def accepts(field: str, declared_in: type[DeclaredSettings] = Settings) -> str:
    """The type and the bounds a value must meet, read from the declaration."""
    info = declared_in.model_fields[field]
    kind = info.annotation
    args = [a for a in get_args(kind) if a is not type(None)]
    if get_origin(kind) is Literal:
        return ", ".join(f"`{choice}`" for choice in args)
    if get_origin(kind) is tuple:
        return "comma-separated list"
    if args and get_origin(kind) is not Literal:  # `X | None`
        kind = args[0]
    text = _KINDS.get(kind, str(kind)) if isinstance(kind, type) else str(kind)
    bounds = {type(m).__name__: m for m in info.metadata}
    if "Gt" in bounds:
        text += f" > {bounds['Gt'].gt}"
    if "Ge" in bounds and "Le" in bounds:
        return f"{text} from {bounds['Ge'].ge} to {bounds['Le'].le}"
    if "Ge" in bounds:
        text += f" ≥ {bounds['Ge'].ge}"
    if "Le" in bounds:
        text += f", ≤ {bounds['Le'].le}"
    return text


def settings_rows(declared_in: type[DeclaredSettings] = Settings) -> list[str]:
    rows = []
    for field, info in declared_in.model_fields.items():
        meaning = (info.description or "").replace("|", "\\|")
        variable = env_name(field, declared_in)
        kind, default = accepts(field, declared_in), shown_default(field, declared_in)
        rows.append(f"| `{variable}` | {kind} | {default} | {meaning} |")
    return SETTINGS_HEADER + rows


def process_rows() -> list[str]:
    rows = [
        f"| `{v.name}` | {v.default} | "
        + (f"read by {v.reader}: {v.meaning}" if v.reader else v.meaning)
        + " |"
        for v in PROCESS_VARIABLES
    ]
    return HEADER + rows


def replace_between(text: str, markers: tuple[str, str], lines: list[str]) -> str:
    start, end = markers
    head, found, rest = text.partition(start)
    if not found or end not in rest:
        raise SystemExit(f"README.md lacks the markers {start} … {end}")
    _, _, tail = rest.partition(end)
    return head + start + "\n" + "\n".join(lines) + "\n" + end + tail


def render(readme: str) -> str:
    """README.md's text with all three tables as the declarations say."""
    text = replace_between(readme, SETTINGS_MARKERS, settings_rows(Settings))
    text = replace_between(text, JOBS_MARKERS, settings_rows(JobsSettings))
    return replace_between(text, PROCESS_MARKERS, process_rows())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is stale")
    args = parser.parse_args(argv)
    current = README.read_text(encoding="utf-8")
    wanted = render(current)
    if args.check:
        if wanted != current:
            print("README.md's configuration tables are stale: python -m scripts.settings_table")
            return 1
        return 0
    if wanted != current:
        README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
