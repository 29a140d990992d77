"""/api/v1/oauth/clients end to end on the real PostgreSQL: registration with RFC 7591 metadata
and its rules, the secret shown once and stored as a keyed hash, rotation with an overlap,
updates, deletion, audit, administrators only. Time is moved by rewriting stored timestamps."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask import Flask

from tests.support.accounts import age_sessions
from tests.support.oauth import CLIENTS, MACHINE, WEB_APP, register, row, secret_works
from tests.support.problems import assert_problem
from tests.support.rows import audit_events
from webapp.oauth import credentials

# --- registration ----------------------------------------------------------------------------


def test_a_confidential_client_gets_its_secret_once_and_only_a_keyed_hash_is_stored(
    app, client, admin
):
    created = register(client, admin, **WEB_APP)

    assert created["client_name"] == "Wiki"
    assert created["client_id"]
    assert created["client_secret"]
    assert created["token_endpoint_auth_method"] == "client_secret_basic"  # the default
    assert created["response_types"] == ["code"]  # follows authorization_code
    assert created["grant_types"] == ["authorization_code", "refresh_token"]
    assert created["scope"] == "openid profile email"
    assert created["first_party"] is False
    stored = row(app, created)
    assert stored.secret_hash == credentials_hash(app, created)
    assert created["client_secret"] not in str(vars(stored))
    assert secret_works(app, created, created["client_secret"])
    assert not secret_works(app, created, created["client_secret"] + "x")

    fetched = client.get(f"{CLIENTS}{created['id']}", headers=admin.headers)
    listed = client.get(CLIENTS, headers=admin.headers)
    assert fetched.status_code == 200
    assert "client_secret" not in fetched.json
    assert fetched.headers["ETag"]
    assert [item["client_id"] for item in listed.json["items"]] == [created["client_id"]]
    assert "client_secret" not in listed.json["items"][0]
    assert created["client_secret"] not in listed.get_data(as_text=True)
    assert (
        client.post(CLIENTS, json=WEB_APP, headers=admin.headers).json["client_id"]
        != (created["client_id"])
    )


def credentials_hash(app: Flask, body: dict[str, Any]) -> str:
    with app.app_context():
        return credentials.hash_secret(body["client_id"], body["client_secret"])


def test_a_public_client_has_no_secret_and_cannot_authenticate_with_one(app, client, admin):
    created = register(
        client,
        admin,
        client_name="CLI",
        redirect_uris=["http://127.0.0.1:8765/callback"],
        token_endpoint_auth_method="none",
        first_party=True,
    )

    assert created["client_secret"] is None
    assert created["first_party"] is True
    assert row(app, created).secret_hash is None
    assert not secret_works(app, created, "")
    rotate = client.post(f"{CLIENTS}{created['id']}/rotate-secret", headers=admin.headers)
    assert_problem(rotate, 409, "oauth-client-public")


def test_registration_is_audited_without_the_secret(app, client, admin):
    created = register(client, admin, **MACHINE)

    (event,) = audit_events(app, "oauth_client.created")
    assert event.actor_id == admin.id
    assert event.target_id == uuid.UUID(created["id"])
    assert event.details["client_id"] == created["client_id"]
    assert event.details["grant_types"] == ["client_credentials"]
    assert created["client_secret"] not in str(event.details)


def test_a_location_header_names_the_new_client(client, admin):
    response = client.post(CLIENTS, json=MACHINE, headers=admin.headers)

    assert response.headers["Location"].endswith(f"/api/v1/oauth/clients/{response.json['id']}")


# --- the metadata rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("https://*.example.com/cb", "wildcard"),
        ("https://app.example.com/cb*", "wildcard"),
        ("https://app.example.com/cb#frag", "fragment"),
        ("https://app.example.com/cb#", "fragment"),
        ("http://app.example.com/cb", "https"),
        ("/relative/callback", "absolute"),
        ("app.example.com/cb", "absolute"),
        ("javascript:alert(1)", "absolute"),
        ("com.example.app:/callback", "absolute"),
        ("https://user:pw@app.example.com/cb", "user information"),
        ("https://app.example.com/c b", "whitespace"),
        ("https://app.example.com:99999/cb", "valid URL"),
    ],
)
def test_a_redirect_uri_must_be_an_exact_absolute_https_url(client, admin, uri, why):
    body = {**WEB_APP, "redirect_uris": [uri]}

    response = client.post(CLIENTS, json=body, headers=admin.headers)

    problem = assert_problem(response, 422, "invalid-client-metadata")
    assert why in " ".join(problem["errors"]["redirect_uris"])


@pytest.mark.parametrize(
    "uri",
    [
        "http://localhost:3000/callback",
        "http://127.0.0.1/callback",
        "http://[::1]:8080/cb",
        "https://app.example.com/cb?tenant=1",
    ],
)
def test_loopback_http_and_https_with_a_query_are_accepted(client, admin, uri):
    created = register(client, admin, **{**WEB_APP, "redirect_uris": [uri]})

    assert created["redirect_uris"] == [uri]


def test_post_logout_redirect_uris_follow_the_same_rules(client, admin):
    body = {**WEB_APP, "post_logout_redirect_uris": ["https://wiki.example.com/#bye"]}

    problem = assert_problem(
        client.post(CLIENTS, json=body, headers=admin.headers), 422, "invalid-client-metadata"
    )
    assert "fragment" in problem["errors"]["post_logout_redirect_uris"][0]


@pytest.mark.parametrize(
    ("changes", "field", "why"),
    [
        (
            {"token_endpoint_auth_method": "none", "grant_types": ["client_credentials"]},
            "grant_types",
            "public client",
        ),
        (
            {
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "client_credentials"],
            },
            "grant_types",
            "cannot use client_credentials",
        ),
        ({"grant_types": ["refresh_token"]}, "grant_types", "only with authorization_code"),
        ({"redirect_uris": []}, "redirect_uris", "needs at least one"),
        ({"response_types": []}, "response_types", "must be ['code']"),
        ({"scope": "openid admin"}, "scope", "'admin'"),
        (
            {"redirect_uris": ["https://a.example/cb", "https://a.example/cb"]},
            "redirect_uris",
            "dup",
        ),
    ],
)
def test_metadata_breaking_a_rule_is_refused_with_the_field_named(
    client, admin, changes, field, why
):
    response = client.post(CLIENTS, json={**WEB_APP, **changes}, headers=admin.headers)

    problem = assert_problem(response, 422, "invalid-client-metadata")
    assert why in " ".join(problem["errors"][field]), problem["errors"]


def test_a_machine_client_may_not_register_redirect_uris(client, admin):
    body = {**MACHINE, "redirect_uris": ["https://billing.example.com/cb"]}

    problem = assert_problem(
        client.post(CLIENTS, json=body, headers=admin.headers), 422, "invalid-client-metadata"
    )
    assert "only clients of authorization_code" in problem["errors"]["redirect_uris"][0]


@pytest.mark.parametrize(
    "body",
    [
        {**WEB_APP, "grant_types": ["implicit"]},
        {**WEB_APP, "grant_types": ["password"]},
        {**WEB_APP, "response_types": ["token"]},
        {**WEB_APP, "token_endpoint_auth_method": "private_key_jwt"},
        {**WEB_APP, "client_secret": "chosen-by-me"},
        {**WEB_APP, "client_name": ""},
        {k: v for k, v in WEB_APP.items() if k != "client_name"},
    ],
)
def test_unsupported_values_and_unknown_fields_are_refused(client, admin, body):
    response = client.post(CLIENTS, json=body, headers=admin.headers)

    assert_problem(response, 422, "validation-failed")


# --- access -------------------------------------------------------------------------------------


def test_only_administrators_manage_clients(client, admin, member):
    created = register(client, admin, **MACHINE)
    one = f"{CLIENTS}{created['id']}"

    for method, url in [
        ("get", CLIENTS),
        ("post", CLIENTS),
        ("get", one),
        ("patch", one),
        ("delete", one),
        ("post", f"{one}/rotate-secret"),
    ]:
        kwargs = {"json": {}} if method in ("post", "patch") else {}
        anonymous = getattr(client, method)(url, **kwargs)
        assert_problem(anonymous, 401, "unauthorized")
        forbidden = getattr(client, method)(url, headers=member.headers, **kwargs)
        assert_problem(forbidden, 403, "forbidden")


def test_an_api_key_cannot_manage_clients_whatever_its_scopes(client, admin):
    key = client.post(
        "/api/v1/api-keys/",
        json={"name": "ops", "scopes": ["users:list"]},
        headers=admin.headers,
    ).json["key"]

    response = client.get(CLIENTS, headers={"X-API-Key": key})

    assert_problem(response, 403, "api-key-not-allowed")


def test_registering_and_rotating_need_a_recent_authentication(app, client, admin):
    created = register(client, admin, **MACHINE)
    age_sessions(app, admin.id)

    assert_problem(
        client.post(CLIENTS, json=MACHINE, headers=admin.headers), 403, "reauthentication-required"
    )
    assert_problem(
        client.post(f"{CLIENTS}{created['id']}/rotate-secret", headers=admin.headers),
        403,
        "reauthentication-required",
    )
    # Reading and changing metadata hand out no credential: no fresh sign-in needed.
    assert client.get(f"{CLIENTS}{created['id']}", headers=admin.headers).status_code == 200


def test_an_unknown_client_is_404(client, admin):
    missing = f"{CLIENTS}{uuid.uuid4()}"

    assert_problem(client.get(missing, headers=admin.headers), 404, "not-found")
    assert_problem(client.patch(missing, json={}, headers=admin.headers), 404, "not-found")
    assert_problem(client.delete(missing, headers=admin.headers), 404, "not-found")
    assert_problem(client.post(f"{missing}/rotate-secret", headers=admin.headers), 404, "not-found")


def test_a_retried_registration_with_an_idempotency_key_creates_one_client(app, client, admin):
    headers = {**admin.headers, "Idempotency-Key": "register-wiki-1"}

    first = client.post(CLIENTS, json=WEB_APP, headers=headers)
    again = client.post(CLIENTS, json=WEB_APP, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.json["client_id"] == first.json["client_id"]
    assert again.json["client_secret"] == first.json["client_secret"]
    assert len(client.get(CLIENTS, headers=admin.headers).json["items"]) == 1
    assert len(audit_events(app, "oauth_client.created")) == 1


def test_the_list_pages_and_sorts_by_name(client, admin):
    for name in ("Charlie", "Alpha", "Bravo"):
        register(client, admin, **{**MACHINE, "client_name": name})

    first = client.get(f"{CLIENTS}?sort=client_name&limit=2", headers=admin.headers)
    rest = client.get(
        f"{CLIENTS}?sort=client_name&limit=2&cursor={first.json['next_cursor']}",
        headers=admin.headers,
    )

    assert [c["client_name"] for c in first.json["items"]] == ["Alpha", "Bravo"]
    assert 'rel="next"' in first.headers["Link"]
    assert [c["client_name"] for c in rest.json["items"]] == ["Charlie"]
    assert_problem(
        client.get(f"{CLIENTS}?sort=client_secret", headers=admin.headers), 422, "validation-failed"
    )
