"""The edge in front of the API: the Ingress's ingress-nginx annotations and the Kong declarative
configuration (gateway/kong/kong.yaml), checked against the service they protect.

No Kong validator ships on PyPI or npm (decK and Kong are Go and Lua programs), so the Kong file is
validated with `check-jsonschema` against decK's own file schema (gateway/kong/schemas/
deck-file.json, vendored unchanged) and against a schema of the two plugins' configuration
transcribed from Kong's plugin schemas (plugins.json), plus the structural assertions below;
gateway/kong/schemas/README.md says where each comes from.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import limits
import pytest
import yaml
from flask import Flask

from tests.support.accounts import Account
from tests.support.ops import OVERLAYS, ROOT, find, output, run, tool
from webapp.config import Settings

KONG = ROOT / "gateway" / "kong"
KONG_FILE = KONG / "kong.yaml"
DECK_SCHEMA = KONG / "schemas" / "deck-file.json"
PLUGIN_SCHEMA = KONG / "schemas" / "plugins.json"
NGINX = "nginx.ingress.kubernetes.io/"
PERIODS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "month": 2592000,
    "year": 31536000,
}
INTERNAL = ("/ready", "/health", "/metrics")
GUNICORN_TIMEOUT_S = 30  # gunicorn.conf.py's default GUNICORN_TIMEOUT


@pytest.fixture(scope="module")
def kong() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(KONG_FILE.read_text())
    return config


def plugins_of(config: dict[str, Any]) -> list[dict[str, Any]]:
    found = list(config.get("plugins", []))
    for service in config.get("services", []):
        found += service.get("plugins", [])
        for route in service.get("routes", []):
            found += route.get("plugins", [])
    return found


def plugin(entity: dict[str, Any], name: str) -> dict[str, Any]:
    (config,) = [p["config"] for p in entity.get("plugins", []) if p["name"] == name]
    return config


def validate(schema: Path, documents: list[Any], directory: Path) -> Any:
    files = []
    for index, document in enumerate(documents):
        files.append(directory / f"document-{index}.json")
        files[-1].write_text(json.dumps(document))
    return run([tool("check-jsonschema"), "--schemafile", str(schema), *map(str, files)])


def budget(config: dict[str, str], name: str) -> limits.RateLimitItem:
    """A rate-limit setting as deployed: the ConfigMap's value, else the setting's default."""
    value = config.get(name.upper(), Settings.model_fields[name].default)
    return limits.parse(value)


def nginx_size(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmM]?)", text).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024 * 1024}[unit.lower()]


# --- the Kong file is valid ---------------------------------------------------------------------


def test_the_schemas_are_valid_json_schemas() -> None:
    done = run(
        [tool("check-jsonschema"), "--check-metaschema", str(DECK_SCHEMA), str(PLUGIN_SCHEMA)]
    )
    assert done.returncode == 0, output(done)


def test_kong_file_validates_against_the_deck_file_schema() -> None:
    done = run([tool("check-jsonschema"), "--schemafile", str(DECK_SCHEMA), str(KONG_FILE)])
    assert done.returncode == 0, output(done)


def test_kong_plugins_validate_against_their_schemas(kong: dict[str, Any], tmp_path: Path) -> None:
    found = plugins_of(kong)
    assert {p["name"] for p in found} == {"rate-limiting", "request-size-limiting"}
    done = validate(PLUGIN_SCHEMA, found, tmp_path)
    assert done.returncode == 0, output(done)
    # Kong's own custom validator (not expressible as a JSON schema): longer periods allow more.
    for entry in found:
        if entry["name"] == "rate-limiting":
            given = [entry["config"][p] for p in PERIODS if p in entry["config"]]
            assert given == sorted(given), entry


def mutate(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    *parents, last = path.split(".")
    node: Any = changed
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return changed


@pytest.mark.parametrize(
    ("schema", "path", "value"),
    [
        (DECK_SCHEMA, "services.0.routes.0.strip_paths", False),  # misspelt
        (DECK_SCHEMA, "services.0.read_timeout", "35s"),
        (DECK_SCHEMA, "services.0.routes.0.paths", "/api/"),
        (PLUGIN_SCHEMA, "services.0.plugins.0.config.second", None),  # no period left
        (PLUGIN_SCHEMA, "services.0.plugins.0.config.limit_by", "client"),
        (PLUGIN_SCHEMA, "services.0.plugins.0.config.policy", "redis"),  # without redis.host
        (PLUGIN_SCHEMA, "services.0.plugins.0.config.sync_rate", 1),  # only with redis
        (PLUGIN_SCHEMA, "services.0.plugins.1.config.size_unit", "kb"),
        (PLUGIN_SCHEMA, "services.0.plugins.1.config.max_size", 64),
        (PLUGIN_SCHEMA, "services.0.plugins.1.name", "request-size-limit"),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else str(v),
)
def test_the_validation_refuses_a_mistake(
    kong: dict[str, Any], tmp_path: Path, schema: Path, path: str, value: Any
) -> None:
    broken = mutate(kong, path, value)
    documents = [broken] if schema == DECK_SCHEMA else plugins_of(broken)
    done = validate(schema, documents, tmp_path)
    assert done.returncode == 1, output(done)


# --- the Kong file and the Ingress match the service ---------------------------------------------


def test_kong_routes_what_the_ingress_routes_and_nothing_internal(
    kong: dict[str, Any], rendered: dict[str, list[dict[str, Any]]], app: Flask
) -> None:
    (service,) = kong["services"]
    routes = {r["name"]: r for r in service["routes"]}
    ingress = find(rendered["prod"], "Ingress", "gatehouse")
    (rule,) = ingress["spec"]["rules"]
    assert set(routes["gatehouse-api"]["paths"]) == {p["path"] for p in rule["http"]["paths"]}
    rules = [r.rule for r in app.url_map.iter_rules()]
    for route in routes.values():
        assert route["hosts"] == [rule["host"]]
        assert route["protocols"] == ["https"]
        assert route["strip_path"] is False  # the app's routes carry the full path
        for prefix in route["paths"]:
            assert any(r.startswith(prefix) for r in rules), f"{prefix} routes to nothing"
            assert not any(path.startswith(prefix) for path in INTERNAL), prefix


def test_kong_upstream_is_the_rendered_service(
    kong: dict[str, Any], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    (service,) = kong["services"]
    url = urlsplit(service["url"])
    name, namespace, svc = (url.hostname or "").split(".")
    assert svc == "svc"
    objects = [o for o in rendered["prod"] if o["metadata"].get("namespace") == namespace]
    ports = find(objects, "Service", name)["spec"]["ports"]
    assert url.port in [p["port"] for p in ports if p["name"] == "http"]
    assert url.scheme == "http"
    for timeout in ("read_timeout", "write_timeout"):
        assert service[timeout] > GUNICORN_TIMEOUT_S * 1000


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_edge_protection_matches_the_service(
    overlay: str, rendered: dict[str, list[dict[str, Any]]], app: Flask, kong: dict[str, Any]
) -> None:
    annotations = find(rendered[overlay], "Ingress", "gatehouse")["metadata"]["annotations"]
    body = app.config["MAX_CONTENT_LENGTH"]
    assert nginx_size(annotations[NGINX + "proxy-body-size"]) == body
    assert nginx_size(annotations[NGINX + "client-body-buffer-size"]) >= body
    (service,) = kong["services"]
    size = plugin(service, "request-size-limiting")
    assert size["allowed_payload_size"] * {"kilobytes": 1024}[size["size_unit"]] == body
    # One flood ceiling at both edges, above the app's per-IP default budget.
    rps = int(annotations[NGINX + "limit-rps"])
    assert plugin(service, "rate-limiting")["second"] == rps
    config = find(rendered[overlay], "ConfigMap", "gatehouse-config")["data"]
    for name in ("ratelimit_default", "ratelimit_oauth_token"):
        app_budget = budget(config, name)
        assert rps * app_budget.GRANULARITY.seconds >= app_budget.amount, name
    auth = {r["name"]: r for r in service["routes"]}["gatehouse-auth"]
    auth_budget = budget(config, "ratelimit_auth")
    per_minute = plugin(auth, "rate-limiting")["minute"]
    assert per_minute * auth_budget.GRANULARITY.seconds / 60 >= auth_budget.amount
    assert int(annotations[NGINX + "limit-burst-multiplier"]) >= 1
    assert int(annotations[NGINX + "limit-connections"]) > 0
    assert int(annotations[NGINX + "proxy-read-timeout"]) > GUNICORN_TIMEOUT_S
    # The controller replaces X-Forwarded-For with its peer's address: exactly one trusted hop.
    assert config["TRUSTED_PROXIES"] == "1"


def kong_route_for(kong: dict[str, Any], path: str) -> str | None:
    """The route Kong picks for a path among plain prefix paths: the longest matching prefix."""
    candidates = [
        (len(prefix), route["name"])
        for service in kong["services"]
        for route in service["routes"]
        for prefix in route["paths"]
        if path.startswith(prefix)
    ]
    return max(candidates)[1] if candidates else None


def test_kong_auth_route_is_exactly_the_apps_auth_limited_endpoints(
    kong: dict[str, Any], make_app: Callable[..., Flask], make_user: Callable[..., Account]
) -> None:
    """Probed on the real app with RATELIMIT_AUTH at 1 per minute: a second request from the same
    IP is refused (429) exactly on the endpoints that share the auth budget. Endpoints that want a
    signed-in caller are probed again with one (a new account each: logout revokes its session)."""
    app = make_app(ratelimit_enabled=True, ratelimit_auth="1 per minute")
    client = app.test_client()
    addresses = (f"10.0.{n // 250}.{n % 250 + 1}" for n in range(10_000))
    limited, probed = set(), set()

    def pair(path: str, method: str, headers: dict[str, str]) -> list[int]:
        environ = {"REMOTE_ADDR": next(addresses)}
        return [
            client.open(
                path, method=method, json={}, headers=headers, environ_base=environ
            ).status_code
            for _ in range(2)
        ]

    for rule in app.url_map.iter_rules():
        # The API's auth endpoints, and the provider's pages and endpoints (its sign-in pages
        # share the budget).
        if not rule.rule.startswith(("/api/v1/auth/", "/oauth/")):
            continue
        values = {arg: uuid.uuid4() for arg in rule.arguments}
        path = app.url_map.bind("gatehouse.test").build(rule.endpoint, values)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            statuses = pair(path, method, {})
            if statuses == [401, 401]:
                statuses = pair(path, method, make_user().headers)
            probed.add(path)
            if statuses[1] == 429 and statuses[0] != 429:
                limited.add(path)
    routed = {path for path in probed if kong_route_for(kong, path) == "gatehouse-auth"}
    assert limited, "no endpoint shares the auth budget: the probe is broken"
    assert {"/oauth/login", "/oauth/login/mfa"} <= limited
    assert routed == limited
