"""Every /api/v1 route and method, for each caller (anonymous, user, admin), as declared.

Two sources of truth are checked against each other: the permission each view declares
(`@requires`, `@authenticated`, `@public`) combined with `webapp.security.rbac.GRANTS`, and an
explicit table below for the routes whose protection matters most, so that a wrong grant in
rbac.py fails here even though the derived expectation would follow it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.rbac import (
    ADMIN,
    ANONYMOUS,
    FORBIDDEN,
    OK,
    OTHER,
    OWN,
    UNAUTHORIZED,
    USER,
    api_routes,
    classify,
    expected_outcome,
    route_url,
)
from webapp.security import rbac

# The routes whose protection matters most, written out by hand: (method, rule) → outcome per
# caller ("user@own" = a user acting on their own id, "user@other" = on somebody else's).
CRITICAL: dict[tuple[str, str], dict[str, str]] = {
    ("POST", "/api/v1/auth/register"): {ANONYMOUS: OK},
    ("POST", "/api/v1/auth/login"): {ANONYMOUS: OK},
    ("GET", "/api/v1/users/me"): {ANONYMOUS: UNAUTHORIZED, USER: OK, ADMIN: OK},
    ("PATCH", "/api/v1/users/me"): {ANONYMOUS: UNAUTHORIZED, USER: OK, ADMIN: OK},
    ("GET", "/api/v1/users/"): {ANONYMOUS: UNAUTHORIZED, USER: FORBIDDEN, ADMIN: OK},
    ("POST", "/api/v1/users/"): {ANONYMOUS: UNAUTHORIZED, USER: FORBIDDEN, ADMIN: OK},
    ("GET", "/api/v1/users/<uuid:user_id>"): {
        ANONYMOUS: UNAUTHORIZED,
        "user@own": OK,
        "user@other": FORBIDDEN,
        "admin@other": OK,
    },
    ("PATCH", "/api/v1/users/<uuid:user_id>"): {
        ANONYMOUS: UNAUTHORIZED,
        "user@own": OK,
        "user@other": FORBIDDEN,
        "admin@other": OK,
    },
    ("PUT", "/api/v1/users/<uuid:user_id>"): {
        ANONYMOUS: UNAUTHORIZED,
        "user@own": FORBIDDEN,
        "user@other": FORBIDDEN,
        "admin@other": OK,
    },
    ("DELETE", "/api/v1/users/<uuid:user_id>"): {
        ANONYMOUS: UNAUTHORIZED,
        "user@own": FORBIDDEN,
        "user@other": FORBIDDEN,
        "admin@other": OK,
    },
    ("PUT", "/api/v1/users/<uuid:user_id>/role"): {
        ANONYMOUS: UNAUTHORIZED,
        "user@own": FORBIDDEN,
        "user@other": FORBIDDEN,
        "admin@own": OK,
        "admin@other": OK,
    },
    ("GET", "/api/v1/audit-events/"): {ANONYMOUS: UNAUTHORIZED, USER: FORBIDDEN, ADMIN: OK},
    ("POST", "/api/v1/auth/login/mfa"): {ANONYMOUS: OK},
    ("POST", "/api/v1/api-keys/"): {ANONYMOUS: UNAUTHORIZED, USER: OK, ADMIN: OK},
    ("POST", "/api/v1/oauth/clients/"): {ANONYMOUS: UNAUTHORIZED, USER: FORBIDDEN, ADMIN: OK},
    ("POST", "/api/v1/oauth/clients/<uuid:client_pk>/rotate-secret"): {
        ANONYMOUS: UNAUTHORIZED,
        USER: FORBIDDEN,
        ADMIN: OK,
    },
    ("DELETE", "/api/v1/users/<uuid:user_id>/mfa"): {
        ANONYMOUS: UNAUTHORIZED,
        "user@own": FORBIDDEN,
        "user@other": FORBIDDEN,
        "admin@other": OK,
    },
}


# --- declarations ------------------------------------------------------------------------


def test_every_api_route_declares_its_permission(app):
    routes = list(api_routes(app))
    undeclared = [
        f"{r.method} {r.path}" for r in routes if not hasattr(r.handler, "required_permission")
    ]

    assert len(routes) >= len(CRITICAL)
    assert undeclared == []


def test_every_declared_permission_is_held_by_some_role(app):
    """A misspelt permission would lock everybody out; this names it."""
    known = rbac.permissions()
    unknown = [
        f"{r.method} {r.path}: {r.permission}"
        for r in api_routes(app)
        if r.permission not in (None, "authenticated") and r.permission not in known
    ]

    assert unknown == []


def test_grants_are_scoped_and_the_admin_holds_everything_a_user_holds():
    assert set(rbac.GRANTS) == set(rbac.ROLES) == {rbac.ADMIN, rbac.USER}
    for grants in rbac.GRANTS.values():
        assert all(g.rsplit(":", 1)[1] in ("any", "own") for g in grants)
    assert rbac.GRANTS[rbac.USER] <= rbac.GRANTS[rbac.ADMIN]
    assert not any(g.endswith(":any") for g in rbac.GRANTS[rbac.USER])


def test_the_critical_routes_exist_with_the_expected_kind_of_protection(app):
    routes = {(r.method, r.path): r for r in api_routes(app)}

    assert set(CRITICAL) <= set(routes), set(CRITICAL) - set(routes)
    assert routes[("POST", "/api/v1/auth/login")].permission is None
    assert routes[("POST", "/api/v1/auth/register")].permission is None
    assert routes[("GET", "/api/v1/users/me")].permission == "authenticated"
    for key, table in CRITICAL.items():
        if table.get(ANONYMOUS) == UNAUTHORIZED:
            assert routes[key].permission is not None, key


def test_the_explicit_table_agrees_with_the_grants_in_rbac(app):
    """A grant added to or removed from rbac.py that changes who may call a critical route."""
    routes = {(r.method, r.path): r for r in api_routes(app)}
    disagreements = []
    for key, table in CRITICAL.items():
        for who, outcome in table.items():
            caller, _, target = who.partition("@")
            derived = expected_outcome(routes[key], caller, target or None)
            if derived != outcome:
                disagreements.append(f"{key} {who}: table {outcome}, rbac.py gives {derived}")

    assert disagreements == []


# --- behaviour ---------------------------------------------------------------------------


@pytest.mark.parametrize("caller", [ANONYMOUS, USER, ADMIN])
def test_every_route_answers_each_caller_as_declared(app, client, make_user, caller):
    mismatches: list[str] = []
    observed: dict[tuple[str, str, str], str] = {}
    for route in api_routes(app):
        targets = [OWN, OTHER] if route.has_owner else [None]
        for target in targets:
            # Fresh accounts for every call: earlier calls may log out, revoke or delete.
            account = make_user(caller) if caller != ANONYMOUS else None
            other = make_user(login=False)
            own_id = account.id if account is not None else other.id
            url = route_url(app, route, own_id if target == OWN else other.id)
            headers = account.headers if account is not None else {}
            kwargs: dict[str, Any] = {"headers": headers}
            if route.method in ("POST", "PUT", "PATCH"):
                kwargs["json"] = {}
            response = client.open(url, method=route.method, **kwargs)

            got = classify(response.status_code)
            want = expected_outcome(route, caller, target)
            who = caller if target is None else f"{caller}@{target}"
            observed[(route.method, route.path, who)] = got
            where = f"{route.method} {route.path} as {who} ({route.permission})"
            if got != want:
                mismatches.append(f"{where}: expected {want}, got {response.status_code}")
            if response.status_code >= 500:
                mismatches.append(f"{where}: server error {response.status_code}")
            if got == UNAUTHORIZED and "WWW-Authenticate" not in response.headers:
                mismatches.append(f"{where}: 401 without WWW-Authenticate")
            if got != OK and response.mimetype != "application/problem+json":
                mismatches.append(f"{where}: {response.status_code} is not problem+json")

    for (method, path), table in CRITICAL.items():
        for who, outcome in table.items():
            if who.partition("@")[0] != caller:
                continue
            keys = [k for k in observed if k[:2] == (method, path) and k[2].startswith(who)]
            assert keys, (method, path, who)
            for key in keys:
                if observed[key] != outcome:
                    mismatches.append(f"critical {key}: expected {outcome}, got {observed[key]}")

    assert mismatches == []
