"""API keys can neither mint administrators nor take over accounts.

The attacks: a key with `users:create` creating a verified administrator (`POST /users` with
`role`), a key with `users:replace` changing a victim's role or email through `PUT /users/{id}`,
then asking for a password reset to the new email. Role, email, password and reactivation are
human-only (`webapp.security.rbac.HUMAN_ONLY`, one `require_human` check the
user services call): an API key, whatever its scopes, gets 403 `insufficient-scope`. Every audit
event a key causes records the key's id beside its owner as actor, and the audit list filters by it.

OWASP ASVS 4.0.3: V4.1.3 (least privilege), V4.1.5 (access controls fail securely), V4.2.1
(protection against privilege escalation / IDOR on sensitive data and functions), V4.3.1
(administrative interfaces need the administrator's own authentication, not a machine key),
V2.5.4 / V3.7.1 (no credential or account-recovery change without the owner's re-authentication),
V7.2.2 (security events name the credential that caused them).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.support.accounts import STRONG_PASSWORD, Account
from tests.support.rbac import api_routes
from webapp.apikeys import service as apikeys
from webapp.auth.state import Principal
from webapp.context import SYSTEM, Origin
from webapp.errors import Forbidden
from webapp.extensions import db
from webapp.security import rbac
from webapp.users import service as users
from webapp.users.models import User

USERS = "/api/v1/users/"
EVENTS = "/api/v1/audit-events/"
ATTACKER_MAILBOX = "attacker@evil.example"


def _issue(app: Flask, owner: Account, scopes: list[str] | None = None) -> tuple[uuid.UUID, str]:
    """A key of `owner` with every scope its role can hold (unless told otherwise)."""
    if scopes is None:
        scopes = sorted(p for p in rbac.API_KEY_PERMISSIONS if rbac.holdable(owner.role, p))
    with app.app_context():
        principal = Principal(user_id=owner.id, role=owner.role, session_id=None, user={})
        issued = apikeys.create_key(db.session, SYSTEM, principal, name="attack", scopes=scopes)
        db.session.remove()
    return issued.key.id, issued.plaintext


@pytest.fixture
def admin_key(app: Flask, admin: Account) -> dict[str, str]:
    _key_id, plaintext = _issue(app, admin)
    return {"X-API-Key": plaintext}


def _user(app: Flask, user_id: uuid.UUID) -> User | None:
    with app.app_context():
        user = db.session.get(User, user_id)
        db.session.expunge_all()
        db.session.remove()
        return user


def _user_count(app: Flask) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(User)) or 0
        db.session.remove()
        return count


def _refused(response: Any) -> None:
    assert response.status_code == 403, (response.status_code, response.get_json())
    assert response.json["type"].endswith("/insufficient-scope")


def _put_body(account: Account, **changes: Any) -> dict[str, Any]:
    body = {"email": account.email, "name": "Test User", "role": account.role, "active": True}
    body.update(changes)
    return body


# --- POST /users -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"role": "admin"},
        {"role": "user"},  # a key sends no role at all: the default is the only one it gets
        {"password": STRONG_PASSWORD},
        {"role": "admin", "password": STRONG_PASSWORD},
    ],
)
def test_a_key_with_every_scope_cannot_create_a_user_with_a_role_or_a_password(
    client: FlaskClient, app: Flask, admin_key: dict[str, str], extra: dict[str, str]
):
    before = _user_count(app)
    body = {"email": "minted@example.com", "name": "Minted", **extra}

    response = client.post(USERS, json=body, headers=admin_key)

    _refused(response)
    assert _user_count(app) == before


def test_a_key_can_only_invite_an_unverified_user_without_a_password(
    client: FlaskClient, app: Flask, admin_key: dict[str, str], outbox
):
    response = client.post(
        USERS, json={"email": ATTACKER_MAILBOX, "name": "Invitee"}, headers=admin_key
    )

    assert response.status_code == 201, response.json
    assert response.json["role"] == "user"
    assert response.json["email_verified"] is False
    user = _user(app, uuid.UUID(response.json["id"]))
    assert user is not None
    assert user.password_hash is None
    # Nobody signs in until the mailbox owner has set a password and confirmed the address.
    login = client.post(
        "/api/v1/auth/login", json={"email": ATTACKER_MAILBOX, "password": STRONG_PASSWORD}
    )
    assert login.status_code == 401
    assert len(outbox("password_reset", ATTACKER_MAILBOX)) == 1


# --- PUT /users/{id} ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"role": "admin"},
        {"email": ATTACKER_MAILBOX},
        {"email": ATTACKER_MAILBOX, "role": "admin"},
    ],
)
def test_a_key_with_every_scope_cannot_put_a_role_or_an_email(
    client: FlaskClient, app: Flask, make_user, admin_key: dict[str, str], changes
):
    victim = make_user(login=False)

    response = client.put(
        f"{USERS}{victim.id}", json=_put_body(victim, **changes), headers=admin_key
    )

    _refused(response)
    after = _user(app, victim.id)
    assert after is not None
    assert (after.email, after.role) == (victim.email, "user")


def test_a_key_cannot_demote_an_administrator_through_put(
    client: FlaskClient, app: Flask, make_user, admin_key: dict[str, str]
):
    other_admin = make_user("admin", login=False)

    response = client.put(
        f"{USERS}{other_admin.id}", json=_put_body(other_admin, role="user"), headers=admin_key
    )

    _refused(response)
    after = _user(app, other_admin.id)
    assert after is not None
    assert after.role == "admin"


def test_a_key_may_still_put_the_unprivileged_fields(
    client: FlaskClient, app: Flask, make_user, admin_key: dict[str, str]
):
    member = make_user(login=False)

    response = client.put(
        f"{USERS}{member.id}", json=_put_body(member, name="Renamed"), headers=admin_key
    )

    assert response.status_code == 200, response.json
    assert response.json["name"] == "Renamed"


# --- PATCH /users/{id} and the role endpoint ---------------------------------------------------


def test_a_key_cannot_reactivate_a_disabled_account(
    client: FlaskClient, app: Flask, make_user, admin, admin_key: dict[str, str]
):
    member = make_user(login=False)
    disabled = client.patch(f"{USERS}{member.id}", json={"active": False}, headers=admin.headers)
    assert disabled.status_code == 200

    through_patch = client.patch(f"{USERS}{member.id}", json={"active": True}, headers=admin_key)
    through_put = client.put(f"{USERS}{member.id}", json=_put_body(member), headers=admin_key)

    _refused(through_patch)
    _refused(through_put)
    after = _user(app, member.id)
    assert after is not None
    assert after.active is False


def test_a_key_cannot_change_a_role_through_the_role_endpoint(
    client: FlaskClient, app: Flask, make_user, admin_key: dict[str, str]
):
    member = make_user(login=False)

    response = client.put(f"{USERS}{member.id}/role", json={"role": "admin"}, headers=admin_key)

    assert response.status_code == 403
    assert response.json["type"].endswith("/api-key-not-allowed")
    after = _user(app, member.id)
    assert after is not None
    assert after.role == "user"


def test_the_policy_refuses_keys_even_where_a_route_forgot_to_ask(app: Flask, make_user):
    """A path that reaches the service with a key's Origin (a future route, a job) is refused."""
    member = make_user(login=False)
    through_key = Origin(actor_id=uuid.uuid4(), api_key_id=uuid.uuid4())
    with app.app_context():
        with pytest.raises(Forbidden) as refused:
            users.change_role(db.session, through_key, member.id, "admin")
        assert refused.value.slug == "insufficient-scope"
        db.session.rollback()
        # The CLI and jobs act as a human administrator (no key): they pass.
        changed = users.change_role(db.session, SYSTEM, member.id, "admin")
        assert changed.role == "admin"
        db.session.remove()


# --- The takeover chain ------------------------------------------------------------------------


def test_a_key_cannot_take_over_an_account_by_email_change_and_password_reset(
    client: FlaskClient, app: Flask, make_user, admin_key: dict[str, str], outbox
):
    victim = make_user(login=False)

    moved = client.put(
        f"{USERS}{victim.id}", json=_put_body(victim, email=ATTACKER_MAILBOX), headers=admin_key
    )
    reset = client.post("/api/v1/auth/password-reset", json={"email": ATTACKER_MAILBOX})

    _refused(moved)
    assert reset.status_code == 202
    assert outbox(recipient=ATTACKER_MAILBOX) == []
    login = client.post(
        "/api/v1/auth/login", json={"email": victim.email, "password": STRONG_PASSWORD}
    )
    assert login.status_code == 200, login.json


# --- No key-usable write route exposes a privileged field unguarded ----------------------------

# Every body field of a key-usable write that is privilege- or takeover-relevant, and the
# human-only permission its service asks for (None: reviewed, harmless). A new route or field that
# a key can send fails here until it is guarded (and tested above).
GUARDED_FIELDS: dict[tuple[str, str], dict[str, str | None]] = {
    ("POST", "/api/v1/users/"): {
        "role": "users:role",
        "password": "users:password",
        "email": None,  # a new account's address: must be free, and starts unconfirmed
    },
    ("PUT", "/api/v1/users/<uuid:user_id>"): {
        "role": "users:role",
        "email": "users:email",
        "active": "users:reactivate",
    },
    ("PATCH", "/api/v1/users/<uuid:user_id>"): {"active": "users:reactivate"},
}
PRIVILEGED = {"role", "email", "password", "active", "scopes", "mfa"}


def test_every_privileged_field_a_key_can_send_is_guarded(app: Flask):
    found: dict[tuple[str, str], set[str]] = {}
    for route in api_routes(app):
        if route.permission not in rbac.API_KEY_PERMISSIONS:
            continue
        arguments = getattr(route.handler, "_apidoc", {}).get("arguments", {})
        for parameter in arguments.get("parameters", []):
            if parameter.get("in") != "json":
                continue
            schema = parameter["schema"]
            names = set((schema() if isinstance(schema, type) else schema).fields)
            if names & PRIVILEGED:
                found[(route.method, route.path)] = names & PRIVILEGED

    assert found == {route: set(fields) for route, fields in GUARDED_FIELDS.items()}
    guards = {p for fields in GUARDED_FIELDS.values() for p in fields.values() if p}
    assert guards <= rbac.HUMAN_ONLY


def test_no_human_only_permission_can_be_a_key_scope():
    assert not rbac.HUMAN_ONLY & rbac.API_KEY_PERMISSIONS


# --- Audit: the key behind each event ----------------------------------------------------------


def test_events_caused_by_a_key_record_it_and_the_audit_list_filters_by_it(
    client: FlaskClient, app: Flask, make_user, admin
):
    key_id, plaintext = _issue(app, admin)
    other_key_id, other_plaintext = _issue(app, admin)
    key, other_key = {"X-API-Key": plaintext}, {"X-API-Key": other_plaintext}
    member, doomed = make_user(login=False), make_user(login=False)

    created = client.post(USERS, json={"email": "new@example.com", "name": "New"}, headers=key)
    renamed = client.patch(f"{USERS}{member.id}", json={"name": "By key"}, headers=key)
    deleted = client.delete(f"{USERS}{doomed.id}", headers=key)
    by_other_key = client.patch(f"{USERS}{member.id}", json={"name": "Other"}, headers=other_key)
    by_human = client.patch(f"{USERS}{member.id}", json={"name": "By hand"}, headers=admin.headers)
    assert [r.status_code for r in (created, renamed, deleted, by_other_key, by_human)] == [
        201,
        200,
        204,
        200,
        200,
    ]

    listed = client.get(EVENTS, query_string={"api_key_id": str(key_id)}, headers=admin.headers)

    assert listed.status_code == 200, listed.json
    items = listed.json["items"]
    assert sorted(e["action"] for e in items) == ["user.created", "user.deleted", "user.updated"]
    assert {e["api_key_id"] for e in items} == {str(key_id)}
    assert {e["actor_id"] for e in items} == {str(admin.id)}
    updates = client.get(
        EVENTS,
        query_string={"action": "user.updated", "target_id": str(member.id)},
        headers=admin.headers,
    ).json["items"]
    # Newest first: the human's own edit carries no key, each key's edit its own.
    assert [e["api_key_id"] for e in updates] == [None, str(other_key_id), str(key_id)]


def test_a_refused_key_write_leaves_no_audit_event(
    client: FlaskClient, app: Flask, make_user, admin
):
    key_id, plaintext = _issue(app, admin)
    victim = make_user(login=False)

    response = client.put(
        f"{USERS}{victim.id}",
        json=_put_body(victim, role="admin"),
        headers={"X-API-Key": plaintext},
    )

    _refused(response)
    listed = client.get(EVENTS, query_string={"api_key_id": str(key_id)}, headers=admin.headers)
    assert listed.status_code == 200
    assert listed.json["items"] == []
