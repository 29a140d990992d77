"""/api/v1/oauth/clients: updates (checked as a whole, If-Match), secret rotation with an overlap,
deletion — each audited. Time is moved by rewriting stored timestamps, never by sleeping."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from tests.support.accounts import log_in
from tests.support.oauth import (
    CLIENTS,
    MACHINE,
    WEB_APP,
    register,
    row,
    secret_works,
)
from tests.support.problems import assert_problem
from tests.support.rows import audit_events
from webapp.db import utcnow
from webapp.extensions import db
from webapp.oauth import codes
from webapp.oauth.models import OAuthAuthorizationCode, OAuthClient


def test_patch_changes_metadata_and_is_audited_with_the_changed_fields(app, client, admin):
    created = register(client, admin, **WEB_APP)
    url = f"{CLIENTS}{created['id']}"
    created_etag = client.get(url, headers=admin.headers).headers["ETag"]

    response = client.patch(
        url,
        json={"client_name": "Team wiki", "redirect_uris": ["https://wiki.example.com/cb2"]},
        headers=admin.headers,
    )

    assert response.status_code == 200, response.json
    assert response.json["client_name"] == "Team wiki"
    assert response.json["redirect_uris"] == ["https://wiki.example.com/cb2"]
    assert response.json["scope"] == created["scope"]  # untouched
    assert response.headers["ETag"] != created_etag
    (event,) = audit_events(app, "oauth_client.updated")
    assert event.details["changed"] == ["client_name", "redirect_uris"]
    assert event.target_id == uuid.UUID(created["id"])
    stored = row(app, created)
    assert stored.check_redirect_uri("https://wiki.example.com/cb2")
    assert not stored.check_redirect_uri("https://wiki.example.com/oauth/callback")


def test_a_patch_that_changes_nothing_records_nothing(app, client, admin):
    created = register(client, admin, **WEB_APP)

    response = client.patch(
        f"{CLIENTS}{created['id']}", json={"client_name": "Wiki"}, headers=admin.headers
    )

    assert response.status_code == 200
    assert audit_events(app, "oauth_client.updated") == []


def test_patch_checks_the_merged_client(client, admin):
    machine = register(client, admin, **MACHINE)
    web = register(client, admin, **WEB_APP)

    # A machine client given authorization_code still lacks a redirect URI.
    problem = assert_problem(
        client.patch(
            f"{CLIENTS}{machine['id']}",
            json={"grant_types": ["authorization_code"]},
            headers=admin.headers,
        ),
        422,
        "invalid-client-metadata",
    )
    assert "redirect_uris" in problem["errors"]
    # Dropping authorization_code from a web client keeps its redirect URIs: refused as a whole.
    assert_problem(
        client.patch(
            f"{CLIENTS}{web['id']}",
            json={"grant_types": ["client_credentials"]},
            headers=admin.headers,
        ),
        422,
        "invalid-client-metadata",
    )
    # Removing the redirect URIs at the same time is fine, and response_types follow the grants.
    changed = client.patch(
        f"{CLIENTS}{web['id']}",
        json={
            "grant_types": ["client_credentials"],
            "redirect_uris": [],
            "post_logout_redirect_uris": [],
        },
        headers=admin.headers,
    )
    assert changed.status_code == 200, changed.json
    assert changed.json["response_types"] == []


def test_a_client_cannot_turn_public_or_confidential(client, admin):
    web = register(client, admin, **WEB_APP)

    problem = assert_problem(
        client.patch(
            f"{CLIENTS}{web['id']}",
            json={"token_endpoint_auth_method": "none"},
            headers=admin.headers,
        ),
        422,
        "invalid-client-metadata",
    )
    assert "token_endpoint_auth_method" in problem["errors"]
    # Between the two confidential methods is fine.
    switched = client.patch(
        f"{CLIENTS}{web['id']}",
        json={"token_endpoint_auth_method": "client_secret_post"},
        headers=admin.headers,
    )
    assert switched.json["token_endpoint_auth_method"] == "client_secret_post"


def test_if_match_guards_patch_rotation_and_delete(client, admin):
    created = register(client, admin, **WEB_APP)
    url = f"{CLIENTS}{created['id']}"
    etag = client.get(url, headers=admin.headers).headers["ETag"]
    client.patch(url, json={"client_name": "Changed"}, headers=admin.headers)
    stale = {**admin.headers, "If-Match": etag}

    assert_problem(
        client.patch(url, json={"client_name": "Mine"}, headers=stale), 412, "precondition-failed"
    )
    assert_problem(client.post(f"{url}/rotate-secret", headers=stale), 412, "precondition-failed")
    assert_problem(client.delete(url, headers=stale), 412, "precondition-failed")
    fresh = client.get(url, headers=admin.headers)
    assert fresh.json["client_name"] == "Changed"
    not_modified = client.get(
        url, headers={**admin.headers, "If-None-Match": fresh.headers["ETag"]}
    )
    assert not_modified.status_code == 304


def test_rotation_keeps_the_old_secret_valid_until_the_overlap_ends(app, client, admin):
    created = register(client, admin, **MACHINE)
    old = created["client_secret"]

    rotated = client.post(f"{CLIENTS}{created['id']}/rotate-secret", headers=admin.headers)

    assert rotated.status_code == 200, rotated.json
    new = rotated.json["client_secret"]
    assert new
    assert new != old
    assert rotated.json["secret_rotated_at"]
    deadline = rotated.json["previous_secret_expires_at"]
    assert deadline  # OAUTH_CLIENT_SECRET_ROTATION_GRACE: a day by default
    assert secret_works(app, created, new)
    assert secret_works(app, created, old)
    deadline_at = row(app, created).previous_secret_expires_at
    assert not secret_works(app, created, old, now=deadline_at)
    (event,) = audit_events(app, "oauth_client.secret_rotated")
    assert event.details["old_secret_valid_until"] is not None
    assert new not in str(event.details)
    assert old not in str(event.details)

    # The overlap ends: only the new secret works, and the representation says so.
    with app.app_context():
        db.session.execute(
            update(OAuthClient)
            .where(OAuthClient.id == uuid.UUID(created["id"]))
            .values(previous_secret_expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
        db.session.remove()
    assert not secret_works(app, created, old)
    assert secret_works(app, created, new)
    shown = client.get(f"{CLIENTS}{created['id']}", headers=admin.headers)
    assert shown.json["previous_secret_expires_at"] is None


def test_a_second_rotation_ends_the_first_old_secret_at_once(app, client, admin):
    created = register(client, admin, **MACHINE)
    url = f"{CLIENTS}{created['id']}/rotate-secret"
    second = client.post(url, headers=admin.headers).json["client_secret"]

    third = client.post(url, headers=admin.headers).json["client_secret"]

    assert not secret_works(app, created, created["client_secret"])
    assert secret_works(app, created, second)
    assert secret_works(app, created, third)


def test_without_a_grace_period_the_old_secret_stops_at_once(make_app, make_user):
    strict = make_app(oauth_client_secret_rotation_grace=0)
    http = strict.test_client()
    admin = make_user("admin", login=False)
    log_in(http, admin)
    created = register(http, admin, **MACHINE)

    rotated = http.post(f"{CLIENTS}{created['id']}/rotate-secret", headers=admin.headers)

    assert rotated.json["previous_secret_expires_at"] is None
    assert not secret_works(strict, created, created["client_secret"])
    assert secret_works(strict, created, rotated.json["client_secret"])


def test_delete_removes_the_client_and_its_codes_and_is_audited(app, client, admin):
    created = register(client, admin, **WEB_APP)
    with app.app_context():
        stored = db.session.get(OAuthClient, uuid.UUID(created["id"]))
        assert stored is not None
        codes.issue_code(
            db.session,
            stored,
            user_id=admin.id,
            redirect_uri=WEB_APP["redirect_uris"][0],
            scope="openid",
            code_challenge="x" * 43,
            nonce=None,
            auth_time=utcnow(),
            amr=["pwd"],
        )
        db.session.commit()
        db.session.remove()

    response = client.delete(f"{CLIENTS}{created['id']}", headers=admin.headers)

    assert response.status_code == 204
    assert_problem(client.get(f"{CLIENTS}{created['id']}", headers=admin.headers), 404, "not-found")
    with app.app_context():
        left = db.session.scalar(select(func.count()).select_from(OAuthAuthorizationCode))
        db.session.remove()
    assert left == 0
    (event,) = audit_events(app, "oauth_client.deleted")
    assert event.details["client_id"] == created["client_id"]


def test_the_audit_names_only_what_really_changed(app, client, admin):
    web = register(client, admin, **WEB_APP)

    response = client.patch(
        f"{CLIENTS}{web['id']}", json={"grant_types": ["authorization_code"]}, headers=admin.headers
    )

    assert response.json["response_types"] == ["code"]
    (event,) = audit_events(app, "oauth_client.updated")
    assert event.details["changed"] == ["grant_types"]
