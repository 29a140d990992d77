"""Every /api/v1 route and method called with an API key, by route, owner role and key scopes.

A key acts as its owner, so what it may do is the owner's grants (webapp.security.rbac) narrowed to
the key's scopes, and only on routes whose permission is usable by keys. The derived expectation is
checked against the running app, and a hand-written table pins the routes that matter most.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.support.accounts import Account
from tests.support.rbac import (
    ADMIN,
    FORBIDDEN,
    OK,
    OTHER,
    OWN,
    UNAUTHORIZED,
    USER,
    Route,
    api_routes,
    classify,
    expected_outcome,
    route_url,
)
from webapp.apikeys import service as apikeys
from webapp.auth.state import Principal
from webapp.context import SYSTEM
from webapp.extensions import db
from webapp.security import rbac

ALL, WITHOUT = "all scopes", "all but the route's"

# (method, rule) → outcome per "role/scopes[@target]", written out by hand.
CRITICAL: dict[tuple[str, str], dict[str, str]] = {
    ("GET", "/api/v1/users/"): {f"admin/{ALL}": OK, f"admin/{WITHOUT}": FORBIDDEN},
    ("POST", "/api/v1/users/"): {f"admin/{ALL}": OK, f"admin/{WITHOUT}": FORBIDDEN},
    ("GET", "/api/v1/users/<uuid:user_id>"): {
        f"user/{ALL}@own": OK,
        f"user/{ALL}@other": FORBIDDEN,
        f"user/{WITHOUT}@own": FORBIDDEN,
        f"admin/{ALL}@other": OK,
    },
    ("DELETE", "/api/v1/users/<uuid:user_id>"): {
        f"user/{ALL}@own": FORBIDDEN,
        f"admin/{ALL}@other": OK,
    },
    ("PUT", "/api/v1/users/<uuid:user_id>/role"): {f"admin/{ALL}@other": FORBIDDEN},
    ("DELETE", "/api/v1/users/<uuid:user_id>/mfa"): {f"admin/{ALL}@other": FORBIDDEN},
    ("GET", "/api/v1/audit-events/"): {f"admin/{ALL}": OK, f"user/{ALL}": FORBIDDEN},
    ("POST", "/api/v1/api-keys/"): {f"admin/{ALL}": FORBIDDEN, f"user/{ALL}": FORBIDDEN},
    ("POST", "/api/v1/api-keys/<uuid:key_id>/rotate"): {f"admin/{ALL}": FORBIDDEN},
    ("GET", "/api/v1/users/me"): {f"admin/{ALL}": FORBIDDEN},
    ("POST", "/api/v1/auth/mfa/totp"): {f"user/{ALL}": FORBIDDEN},
    ("POST", "/api/v1/auth/login"): {f"user/{ALL}": OK},
}


def holdable_scopes(role: str) -> list[str]:
    return sorted(p for p in rbac.API_KEY_PERMISSIONS if rbac.holdable(role, p))


def expected_for_key(route: Route, role: str, target: str | None, scopes: set[str]) -> str:
    permission = route.permission
    if permission is None:
        return OK
    if permission == "authenticated" or permission not in rbac.API_KEY_PERMISSIONS:
        return FORBIDDEN
    if permission not in scopes:
        return FORBIDDEN
    return expected_outcome(route, role, target)


def expected_slug(route: Route, scopes: set[str]) -> str:
    if route.permission == "authenticated" or route.permission not in rbac.API_KEY_PERMISSIONS:
        return "api-key-not-allowed"
    return "insufficient-scope" if route.permission not in scopes else "forbidden"


def issue_key(app: Flask, account: Account, scopes: list[str]) -> str:
    with app.app_context():
        owner = Principal(user_id=account.id, role=account.role, session_id=None, user={})
        issued = apikeys.create_key(db.session, SYSTEM, owner, name="matrix", scopes=scopes)
        db.session.remove()
    return issued.plaintext


def test_every_permission_usable_by_keys_is_held_by_some_role():
    assert rbac.permissions() >= rbac.API_KEY_PERMISSIONS
    assert "users:role" not in rbac.API_KEY_PERMISSIONS
    assert "users:mfa-reset" not in rbac.API_KEY_PERMISSIONS
    # Attribute writes (role, email, password, reactivation) are refused to keys inside the
    # services: tests/security/test_api_key_privilege.py covers them per route and field.
    assert not rbac.HUMAN_ONLY & rbac.API_KEY_PERMISSIONS


def test_the_explicit_table_agrees_with_the_grants_and_key_permissions(app):
    routes = {(r.method, r.path): r for r in api_routes(app)}
    disagreements = []
    for key, table in CRITICAL.items():
        assert key in routes, key
        for who, outcome in table.items():
            role_scopes, _, target = who.partition("@")
            role, _, variant = role_scopes.partition("/")
            scopes = set(holdable_scopes(role))
            if variant == WITHOUT:
                scopes.discard(routes[key].permission or "")
            derived = expected_for_key(routes[key], role, target or None, scopes)
            if derived != outcome:
                disagreements.append(f"{key} {who}: table {outcome}, derived {derived}")

    assert disagreements == []


@pytest.mark.parametrize("role", [USER, ADMIN])
def test_every_route_answers_each_api_key_as_declared(app, client, make_user, role):
    mismatches: list[str] = []
    observed: dict[tuple[str, str, str], str] = {}
    for route in api_routes(app):
        variants = [ALL]
        if route.permission in rbac.API_KEY_PERMISSIONS:
            variants.append(WITHOUT)
        for variant in variants:
            scopes = set(holdable_scopes(role))
            if variant == WITHOUT:
                scopes.discard(route.permission or "")
            for target in [OWN, OTHER] if route.has_owner else [None]:
                # A fresh owner and key for every call: earlier calls may delete or disable.
                owner = make_user(role, login=False)
                other = make_user(login=False)
                key = issue_key(app, owner, sorted(scopes))
                url = route_url(app, route, owner.id if target == OWN else other.id)
                kwargs: dict[str, Any] = {"headers": {"X-API-Key": key}}
                if route.method in ("POST", "PUT", "PATCH"):
                    kwargs["json"] = {}
                response = client.open(url, method=route.method, **kwargs)

                got = classify(response.status_code)
                want = expected_for_key(route, role, target, scopes)
                who = f"{role}/{variant}" + (f"@{target}" if target else "")
                observed[(route.method, route.path, who)] = got
                where = f"{route.method} {route.path} as {who} ({route.permission})"
                if got != want:
                    mismatches.append(f"{where}: expected {want}, got {response.status_code}")
                if response.status_code >= 500:
                    mismatches.append(f"{where}: server error {response.status_code}")
                if got == UNAUTHORIZED:
                    mismatches.append(f"{where}: a valid key was refused as unauthenticated")
                if got == FORBIDDEN:
                    slug = response.json["type"].rsplit("/", 1)[1]
                    if slug != expected_slug(route, scopes):
                        mismatches.append(f"{where}: 403 {slug}")

    for (method, path), table in CRITICAL.items():
        for who, outcome in table.items():
            if not who.startswith(f"{role}/"):
                continue
            assert (method, path, who) in observed, (method, path, who)
            if observed[(method, path, who)] != outcome:
                mismatches.append(f"critical {method} {path} {who}: expected {outcome}")

    assert mismatches == []
