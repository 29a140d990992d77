"""The layout of the test suite: what tests share lives in tests/support, so a test module never
imports another test module or a conftest (which would run or register that module's tests and
fixtures a second time, and tie unrelated tests together), and there is one free port helper."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
# What a module of tests/ may import from the `tests` package: the shared helpers, and the k6
# load runner (tooling kept beside its k6 scripts, which tests/ops checks).
ALLOWED = ("tests.support", "tests.load")


def python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in `path`, `from a import b` giving both `a` and
    `a.b` (b may be a module)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


def forbidden(module: str) -> str | None:
    """Why importing `module` from a test module is not allowed, or None."""
    if module.startswith("."):
        return "a relative import (name tests.support explicitly)"
    parts = module.split(".")
    if parts[0] != "tests":
        return None
    if any(part == "conftest" for part in parts):
        return "a conftest"
    if any(part.startswith("test_") for part in parts):
        return "a test module"
    if module == "tests" or not module.startswith(ALLOWED):
        return f"outside {' and '.join(ALLOWED)}"
    return None


def layout_violations(path: Path) -> list[str]:
    violations = []
    for line, module in imported_modules(path):
        reason = forbidden(module)
        if reason:
            violations.append(f"{path.relative_to(ROOT)}:{line} imports {module}: {reason}")
    return violations


@pytest.mark.parametrize(
    ("module", "reason"),
    [
        ("tests.conftest", "a conftest"),
        ("tests.ops.conftest", "a conftest"),
        ("tests.integration.test_problems", "a test module"),
        ("tests.integration.test_problems.assert_problem", "a test module"),
        ("tests.helpers", "outside tests.support and tests.load"),
        ("tests", "outside tests.support and tests.load"),
        (".support", "a relative import (name tests.support explicitly)"),
        ("tests.support.accounts", None),
        ("tests.load.runner", None),
        ("webapp.extensions", None),
    ],
)
def test_the_rule_tells_allowed_imports_from_forbidden_ones(module: str, reason: str | None):
    assert forbidden(module) == reason


def test_the_scan_sees_every_form_of_import(tmp_path: Path):
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import tests.conftest\n"
        "from tests import conftest\n"
        "from tests.e2e.test_jobs_faults import start_worker\n"
        "def f():\n"
        "    from tests.helpers import stored_row\n"
    )
    modules = [module for _, module in imported_modules(sample)]
    assert "tests.conftest" in modules
    assert "tests.e2e.test_jobs_faults" in modules
    assert "tests.helpers" in modules  # inside a function, too
    assert [forbidden(m) for m in ("tests.conftest", "tests.e2e.test_jobs_faults")] == [
        "a conftest",
        "a test module",
    ]


def test_no_module_of_the_suite_imports_a_test_module_or_a_conftest():
    violations = [v for path in python_files() for v in layout_violations(path)]
    assert violations == []


def test_the_suite_has_modules_and_the_scan_reads_them():
    names = {module_name(path) for path in python_files()}
    assert "tests.support.waiting" in names
    assert "tests.unit.test_test_layout" in names
    assert any(name.startswith("tests.integration.test_") for name in names)


def test_free_port_is_defined_once_in_tests_support_waiting():
    definitions = []
    for path in [*python_files(), *sorted((ROOT / "bench").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.lstrip(
                "_"
            ).startswith("free_port"):
                definitions.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert definitions == [f"tests/support/waiting.py:{waiting_free_port_line()}"]


def waiting_free_port_line() -> int:
    tree = ast.parse((TESTS / "support" / "waiting.py").read_text())
    [line] = [
        n.lineno for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "free_port"
    ]
    return line
