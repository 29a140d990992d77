"""`flask --app wsgi ...` commands: create an administrator, rotate the signing key, print the
development outbox."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path

import jwt
import pytest

from tests.support.accounts import STRONG_PASSWORD
from webapp.auth.tokens import decode_access_token, issue_access_token
from webapp.outbox.models import PENDING, SENT
from webapp.security.keys import KeyRing, generate_jwk


def test_create_admin_makes_an_administrator_who_can_sign_in(app, client):
    result = app.test_cli_runner().invoke(
        args=["users", "create-admin", "--email", "Root@Example.com", "--name", "Root"],
        env={"GATEHOUSE_ADMIN_PASSWORD": STRONG_PASSWORD},
    )
    assert result.exit_code == 0, result.output
    assert "root@example.com" in result.output.lower()

    login = client.post(
        "/api/v1/auth/login", json={"email": "root@example.com", "password": STRONG_PASSWORD}
    )
    assert login.status_code == 200, login.json
    me = client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {login.json['access_token']}"}
    )
    assert me.json["role"] == "admin"
    assert me.json["email_verified"] is True
    # ...and may use administrator endpoints.
    users = client.get(
        "/api/v1/users/", headers={"Authorization": f"Bearer {login.json['access_token']}"}
    )
    assert users.status_code == 200


def test_create_admin_prompts_for_the_password_when_the_variable_is_unset(app, client, monkeypatch):
    monkeypatch.delenv("GATEHOUSE_ADMIN_PASSWORD", raising=False)
    result = app.test_cli_runner().invoke(
        args=["users", "create-admin", "--email", "prompted@example.com"],
        input=f"{STRONG_PASSWORD}\n{STRONG_PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    login = client.post(
        "/api/v1/auth/login", json={"email": "prompted@example.com", "password": STRONG_PASSWORD}
    )
    assert login.status_code == 200


@pytest.mark.parametrize(
    ("password", "reason"),
    [("short", "at least 12 characters"), ("password1234", "common")],
)
def test_create_admin_with_a_weak_password_fails_with_the_reason(app, client, password, reason):
    result = app.test_cli_runner().invoke(
        args=["users", "create-admin", "--email", "weak@example.com"],
        env={"GATEHOUSE_ADMIN_PASSWORD": password},
    )
    assert result.exit_code != 0
    assert reason in result.output.lower()
    login = client.post(
        "/api/v1/auth/login", json={"email": "weak@example.com", "password": password}
    )
    assert login.status_code == 401


def test_create_admin_refuses_an_email_that_is_taken(app, member):
    result = app.test_cli_runner().invoke(
        args=["users", "create-admin", "--email", member.email.upper()],
        env={"GATEHOUSE_ADMIN_PASSWORD": STRONG_PASSWORD},
    )
    assert result.exit_code != 0
    assert "already exists" in result.output


def test_create_admin_refuses_something_that_is_not_an_email_address(app):
    result = app.test_cli_runner().invoke(
        args=["users", "create-admin", "--email", "not an address"],
        env={"GATEHOUSE_ADMIN_PASSWORD": STRONG_PASSWORD},
    )
    assert result.exit_code != 0
    assert "email" in result.output.lower()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwt-keys.json"
    ring = KeyRing.from_jwks(
        {"keys": [generate_jwk("RS256"), {**generate_jwk("RS256"), "status": "next"}]}
    )
    path.write_text(json.dumps(ring.to_jwks()))
    path.chmod(0o600)
    return path


def test_rotate_signing_promotes_the_next_key_and_keeps_the_old_one(make_app, key_file, member):
    before = KeyRing.load(None, key_file)
    app = make_app(jwt_keys=None, jwt_keys_file=str(key_file))
    result = app.test_cli_runner().invoke(args=["keys", "rotate-signing"])
    assert result.exit_code == 0, result.output

    after = KeyRing.load(None, key_file)
    assert after.signing_key.kid == before.next_key.kid
    assert [key.kid for key in after.previous_keys] == [before.signing_key.kid]
    assert after.next_key is not None
    assert after.next_key.kid not in {before.signing_key.kid, before.next_key.kid}
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert after.signing_key.kid in result.output


def test_rotate_signing_without_a_next_key_only_publishes_one(make_app, tmp_path):
    path = tmp_path / "single.json"
    single = KeyRing.from_jwks({"keys": [generate_jwk("RS256")]})
    path.write_text(json.dumps(single.to_jwks()))
    app = make_app(jwt_keys=None, jwt_keys_file=str(path))

    result = app.test_cli_runner().invoke(args=["keys", "rotate-signing"])

    assert result.exit_code == 0, result.output
    after = KeyRing.load(None, path)
    assert after.signing_key.kid == single.signing_key.kid  # an unpublished key never signs
    assert after.next_key is not None
    assert f"published next key {after.next_key.kid}" in result.output


def test_after_rotation_tokens_signed_by_the_previous_key_still_verify(make_app, key_file):
    before = make_app(jwt_keys=None, jwt_keys_file=str(key_file))
    with before.test_request_context():
        old_token = issue_access_token(uuid.uuid4(), "user", uuid.uuid4())
    assert before.test_cli_runner().invoke(args=["keys", "rotate-signing"]).exit_code == 0

    rotated = make_app(jwt_keys=None, jwt_keys_file=str(key_file))
    jwks = rotated.test_client().get("/.well-known/jwks.json").json
    kid = jwt.get_unverified_header(old_token)["kid"]
    assert kid in {key["kid"] for key in jwks["keys"]}
    with rotated.test_request_context():
        assert decode_access_token(old_token)["role"] == "user"
        new_token = issue_access_token(uuid.uuid4(), "user", uuid.uuid4())
    assert jwt.get_unverified_header(new_token)["kid"] != kid


def test_rotate_signing_with_jwt_keys_prints_the_new_key_set(make_app):
    ring = KeyRing.from_jwks(
        {"keys": [generate_jwk("EdDSA"), {**generate_jwk("EdDSA"), "status": "next"}]}
    )
    app = make_app(jwt_keys=json.dumps(ring.to_jwks()))
    result = app.test_cli_runner().invoke(args=["keys", "rotate-signing"])
    assert result.exit_code == 0, result.output
    printed = KeyRing.from_jwks(json.loads(result.output))
    assert printed.signing_key.kid == ring.next_key.kid
    assert [key.kid for key in printed.previous_keys] == [ring.signing_key.kid]


def test_outbox_print_shows_pending_links_and_marks_them_sent(app, client, outbox):
    response = client.post(
        "/api/v1/auth/register",
        json={"email": "ada@example.com", "password": STRONG_PASSWORD, "name": "Ada"},
    )
    assert response.status_code == 201
    [message] = outbox("verify_email")
    assert message.status == PENDING

    result = app.test_cli_runner().invoke(args=["outbox", "print"])
    assert result.exit_code == 0, result.output
    assert message.payload["link"] in result.output
    assert "ada@example.com" in result.output

    [printed] = outbox("verify_email")
    assert printed.status == SENT
    assert printed.sent_at is not None
    again = app.test_cli_runner().invoke(args=["outbox", "print"])
    assert message.payload["link"] not in again.output


def test_outbox_print_refuses_to_run_in_production(make_app):
    app = make_app(env="production", ratelimit_enabled=True)  # production requires it
    result = app.test_cli_runner().invoke(args=["outbox", "print"])
    assert result.exit_code != 0
    assert "production" in result.output


def test_purge_expired_signups_deletes_only_old_never_verified_never_used_accounts(
    app, client, make_user
):
    from datetime import timedelta

    from sqlalchemy import select, update

    from webapp.db import utcnow
    from webapp.extensions import db
    from webapp.users.models import User

    for email in ("old@example.com", "young@example.com"):
        body = {"email": email, "password": STRONG_PASSWORD, "name": "N"}
        assert client.post("/api/v1/auth/register", json=body).status_code == 201
    verified = make_user(email="verified@example.com", login=False)
    with app.app_context():
        ago = utcnow() - timedelta(days=8)
        db.session.execute(
            update(User)
            .where(User.email.in_(("old@example.com", verified.email)))
            .values(created_at=ago)
        )
        db.session.commit()
        db.session.remove()

    result = app.test_cli_runner().invoke(args=["users", "purge-expired-signups"])

    assert result.exit_code == 0, result.output
    assert "deleted 1 expired sign-up" in result.output
    with app.app_context():
        left = set(db.session.scalars(select(User.email)))
        db.session.remove()
    assert left == {"young@example.com", "verified@example.com"}
