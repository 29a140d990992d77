"""The /api/v1 routes as the access checks see them: each method with the permission its view
declares, what the grants of rbac.py promise each caller, and a URL to call it with."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Flask
from werkzeug.routing import Rule
from werkzeug.routing.converters import IntegerConverter, UUIDConverter

from webapp.security import rbac

API_PREFIX = "/api/v1"
IGNORED_METHODS = {"HEAD", "OPTIONS"}
OK, UNAUTHORIZED, FORBIDDEN = "ok", "401", "403"
ANONYMOUS, USER, ADMIN = "anonymous", "user", "admin"
OWN, OTHER = "own", "other"


@dataclass(frozen=True)
class Route:
    method: str
    rule: Rule
    handler: Callable[..., Any]

    @property
    def path(self) -> str:
        return self.rule.rule

    @property
    def permission(self) -> str | None:
        return self.handler.required_permission  # type: ignore[attr-defined]

    @property
    def has_owner(self) -> bool:
        return "user_id" in self.rule.arguments


def api_routes(app: Flask) -> Iterator[Route]:
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith(API_PREFIX):
            continue
        view = app.view_functions[rule.endpoint]
        view_class = getattr(view, "view_class", None)
        for method in sorted((rule.methods or set()) - IGNORED_METHODS):
            handler = getattr(view_class, method.lower()) if view_class is not None else view
            yield Route(method, rule, handler)


def expected_outcome(route: Route, caller: str, target: str | None) -> str:
    """What the declared permission and the grants of rbac.py promise."""
    permission = route.permission
    if permission is None:
        return OK
    if caller == ANONYMOUS:
        return UNAUTHORIZED
    if permission == "authenticated":
        return OK
    grants = rbac.GRANTS[caller]
    if f"{permission}:any" in grants:
        return OK
    if f"{permission}:own" in grants and route.has_owner and target == OWN:
        return OK
    return FORBIDDEN


def classify(status: int) -> str:
    """The outcome a status stands for: refused unauthenticated, forbidden, or let through."""
    if status == 401:
        return UNAUTHORIZED
    if status == 403:
        return FORBIDDEN
    return OK


def route_url(app: Flask, route: Route, user_id: uuid.UUID | None) -> str:
    values: dict[str, Any] = {}
    for name in route.rule.arguments:
        converter = route.rule._converters[name]
        if name == "user_id":
            values[name] = user_id
        elif isinstance(converter, UUIDConverter):
            values[name] = uuid.uuid4()
        elif isinstance(converter, IntegerConverter):
            values[name] = 1
        else:
            values[name] = "x"
    return app.url_map.bind("localhost").build(route.rule.endpoint, values, method=route.method)
