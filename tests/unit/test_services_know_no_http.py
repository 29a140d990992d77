"""Services take plain arguments: none of the modules the `services-know-no-http` contract of
setup.cfg names reads request state. import-linter forbids `webapp.http` there; what it cannot
express (Flask's request-level names, since `flask.current_app` stays allowed) is checked here on
the same list of modules, so the two cannot drift apart."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = "importlinter:contract:services-know-no-http"

# Names that read or write the current request (flask-jwt-extended's read its Authorization).
REQUEST_NAMES = {
    "flask": {
        "request",
        "g",
        "session",
        "has_request_context",
        "make_response",
        "after_this_request",
    },
    "flask_jwt_extended": {
        "get_jwt",
        "get_jwt_identity",
        "get_jwt_header",
        "verify_jwt_in_request",
        "jwt_required",
        "current_user",
    },
}


def contract_modules() -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser[CONTRACT]["source_modules"].split()


def module_files(module: str) -> list[Path]:
    path = ROOT.joinpath(*module.split("."))
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    return [path.with_suffix(".py")]


def request_level_uses(source: str) -> list[str]:
    """`from flask import request`, `flask.g`-style attribute reads and the like, by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in REQUEST_NAMES:
            for alias in node.names:
                if alias.name in REQUEST_NAMES[node.module]:
                    found.append(f"l.{node.lineno}: from {node.module} import {alias.name}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.attr in REQUEST_NAMES.get(node.value.id, ())
        ):
            found.append(f"l.{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_the_contract_names_the_services():
    modules = contract_modules()

    assert {"webapp.auth.service", "webapp.auth.tokens", "webapp.users.service"} <= set(modules)
    assert all(module_files(m) and all(f.is_file() for f in module_files(m)) for m in modules)


def test_no_service_reads_the_request():
    offenders = {
        str(path.relative_to(ROOT)): uses
        for module in contract_modules()
        for path in module_files(module)
        if (uses := request_level_uses(path.read_text()))
    }

    assert offenders == {}


def test_the_check_sees_request_level_names():
    source = (
        "import flask\nfrom flask import current_app, g\n\ndef f():\n    return flask.request\n"
    )

    assert request_level_uses(source) == ["l.2: from flask import g", "l.5: flask.request"]
