"""The OpenAPI document (valid OpenAPI 3, security and Idempotency-Key documented, errors described
as problem+json) and the Swagger UI page, served from local assets under a strict CSP."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

# The OpenAPI 3.0 meta-schema as schemathesis ships it (openapi-spec-validator is not a dependency).
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
ASSET_PREFIX = "/api/docs/assets/"


@pytest.fixture
def document(client) -> dict[str, Any]:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.json


def _operations(document: dict[str, Any]):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def _refs(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_the_document_is_valid_openapi_3(document):
    assert document["openapi"].startswith("3.")
    errors = [f"{e.instance_path}: {e.message}" for e in OPENAPI_30_VALIDATOR.iter_errors(document)]
    assert errors == []


def test_every_reference_in_the_document_resolves(document):
    for ref in set(_refs(document)):
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            assert part in node, f"dangling $ref {ref}"
            node = node[part]


def _api_routes(app) -> dict[tuple[str, str], Any]:
    """(OpenAPI-style path, method) → view method, for every /api/v1 route of the app."""
    routes = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        view_class = app.view_functions[rule.endpoint].view_class
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes[(path, method.lower())] = getattr(view_class, method.lower())
    return routes


def test_the_document_covers_every_api_route(app, document):
    documented = {(path, method) for path, method, _ in _operations(document)}
    assert set(_api_routes(app)) == {key for key in documented if key[0].startswith("/api/v1")}


def test_every_api_operation_documents_its_security(app, document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["apiKeyAuth"]["type"] == "apiKey"
    assert (schemes["apiKeyAuth"]["in"], schemes["apiKeyAuth"]["name"]) == ("header", "X-API-Key")
    routes = _api_routes(app)
    for path, method, operation in _operations(document):
        if not path.startswith("/api/v1"):
            continue
        assert "security" in operation, f"{method.upper()} {path} does not document security"
        view = routes[(path, method)]
        # What the document says matches what the route enforces: public (None), a bearer token,
        # or a bearer token or an API key holding the scope the operation names.
        scope = getattr(view, "api_key_scope", None)
        if view.required_permission is None:
            expected = []
        elif scope is not None:
            expected = [{"bearerAuth": []}, {"apiKeyAuth": []}]
        else:
            expected = [{"bearerAuth": []}]
        assert operation["security"] == expected, f"{method.upper()} {path}"
        assert operation.get("x-api-key-scope") == scope, f"{method.upper()} {path}"
        if scope is not None:
            assert f"API keys: scope `{scope}`" in operation["description"]


def test_public_and_protected_operations_are_both_present(document):
    securities = {
        str(operation["security"])
        for path, _, operation in _operations(document)
        if path.startswith("/api/v1")
    }
    assert securities == {"[]", "[{'bearerAuth': []}]", "[{'bearerAuth': []}, {'apiKeyAuth': []}]"}


@pytest.mark.parametrize("path", ["/api/v1/auth/register", "/api/v1/users/"])
def test_creating_posts_document_the_idempotency_key_header(document, path):
    parameters = document["paths"][path]["post"].get("parameters", [])
    [key] = [p for p in parameters if p["name"] == "Idempotency-Key"]
    assert key["in"] == "header"
    assert key["required"] is False
    assert key["schema"]["type"] == "string"


def test_error_responses_are_documented_as_problem_json(document):
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "instance", "request_id"} <= set(
        problem["required"]
    )
    assert problem["properties"]["status"]["type"] == "integer"
    for name, response in document["components"]["responses"].items():
        assert set(response["content"]) == {"application/problem+json"}, name
        assert response["content"]["application/problem+json"]["schema"] == {
            "$ref": "#/components/schemas/Problem"
        }
    for path, method, operation in _operations(document):
        assert operation["responses"]["default"] == {
            "$ref": "#/components/responses/DEFAULT_ERROR"
        }, f"{method.upper()} {path}"


def test_a_real_problem_matches_the_documented_schema(client, document):
    import jsonschema_rs

    schema = {**document["components"]["schemas"]["Problem"]}
    schema["properties"] = {**schema["properties"], "request_id": {"type": ["string", "null"]}}
    validator = jsonschema_rs.validator_for(schema)
    for response in (
        client.post("/api/v1/auth/login", json={"unknown": 1}),
        client.get("/api/v1/users/me"),
        client.get("/api/v1/nothing-here"),
    ):
        assert response.mimetype == "application/problem+json"
        assert validator.is_valid(response.json), response.json


# --- Swagger UI -------------------------------------------------------------------------------


class _PageScan(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = ""
        self.inline_handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.inline_handlers += [name for name in attributes if name.startswith("on")]
        for name in ("src", "href"):
            if attributes.get(name):
                self.urls.append(str(attributes[name]))
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_script += data.strip()


@pytest.fixture
def page(client) -> tuple[Any, _PageScan]:
    response = client.get("/api/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    scan = _PageScan()
    scan.feed(response.get_data(as_text=True))
    return response, scan


def test_the_docs_page_loads_only_local_assets(page):
    response, scan = page
    assert scan.urls, "the page references no assets"
    for url in scan.urls:
        assert url.startswith(ASSET_PREFIX), url
    text = response.get_data(as_text=True)
    assert "http://" not in text
    assert "https://" not in text
    assert "//cdn" not in text


def test_the_docs_page_has_no_inline_script(page):
    _, scan = page
    assert scan.scripts, "the page has no scripts at all"
    assert all(script.get("src") for script in scan.scripts)
    assert scan.inline_script == ""
    assert scan.inline_handlers == []


def test_the_docs_page_loads_swagger_ui_and_its_initializer(page):
    _, scan = page
    names = {url.removeprefix(ASSET_PREFIX) for url in scan.urls}
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "swagger-init.js"} <= names


def test_every_asset_the_docs_page_references_is_served(client, page):
    _, scan = page
    for url in scan.urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.get_data(), url
        assert "public" in response.headers["Cache-Control"], url
        if url.endswith(".js"):
            assert response.mimetype in ("text/javascript", "application/javascript"), url
        if url.endswith(".css"):
            assert response.mimetype == "text/css", url


def test_the_initializer_reads_the_spec_url_from_the_page(client, page):
    response, _ = page
    assert 'data-spec-url="/api/openapi.json"' in response.get_data(as_text=True)
    script = client.get(ASSET_PREFIX + "swagger-init.js").get_data(as_text=True)
    assert "SwaggerUIBundle(" in script
    assert "dataset.specUrl" in script


def test_the_asset_route_serves_nothing_outside_its_folders(client):
    for path in ("../../config.py", "..%2F..%2Fconfig.py", "../__init__.py"):
        assert client.get(ASSET_PREFIX + path).status_code == 404, path
