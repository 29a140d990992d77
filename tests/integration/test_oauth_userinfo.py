"""GET|POST /oauth/userinfo: the claims of the user behind a provider access token with
`openid`, by scope, as the user is now; RFC 6750 challenges for everything else."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from tests.support.oauth import MACHINE, register
from tests.support.oidc import REVOKE, TOKEN, USERINFO, basic, tokens_for
from webapp.extensions import db
from webapp.users.models import User


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_challenge(response: Any, status: int, error: str | None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    expected = f'Bearer error="{error}"' if error else "Bearer"
    assert response.headers["WWW-Authenticate"] == expected
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("method", ["get", "post"])
def test_userinfo_answers_sub_profile_and_email(app, client, web_app, make_user, method):
    user = make_user("user", name="Ada Lovelace")
    tokens = tokens_for(app, client, web_app, user)

    response = getattr(client, method)(USERINFO, headers=bearer(tokens["access_token"]))

    assert response.status_code == 200, response.json
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert body["sub"] == str(user.id)
    assert body["name"] == "Ada Lovelace"
    assert isinstance(body["updated_at"], int)
    assert body["email"] == user.email
    assert body["email_verified"] is True


@pytest.mark.parametrize(
    ("scope", "claims"),
    [
        ("openid", {"sub"}),
        ("openid email", {"sub", "email", "email_verified"}),
        ("openid profile", {"sub", "name", "updated_at"}),
    ],
)
def test_userinfo_holds_only_what_the_scope_granted(app, client, web_app, member, scope, claims):
    tokens = tokens_for(app, client, web_app, member, scope=scope)

    response = client.get(USERINFO, headers=bearer(tokens["access_token"]))

    assert set(response.json) == claims


def test_userinfo_refuses_whatever_is_not_a_live_users_openid_token(
    app, client, admin, web_app, member
):
    assert_challenge(client.get(USERINFO), 401, None)
    assert_challenge(client.get(USERINFO, headers=bearer("not.a.jwt")), 401, "invalid_token")
    # Gatehouse's own access token is not the provider's.
    assert_challenge(
        client.get(USERINFO, headers=bearer(member.access_token)), 401, "invalid_token"
    )
    machine = register(client, admin, **MACHINE)
    machine_token = client.post(
        TOKEN,
        data={
            "grant_type": "client_credentials",
            "client_id": machine["client_id"],
            "client_secret": machine["client_secret"],
        },
    ).json["access_token"]
    assert_challenge(client.get(USERINFO, headers=bearer(machine_token)), 401, "invalid_token")
    no_openid = tokens_for(app, client, web_app, member, scope="email")["access_token"]
    assert_challenge(client.get(USERINFO, headers=bearer(no_openid)), 403, "insufficient_scope")


def test_userinfo_refuses_a_token_whose_session_was_revoked(app, client, web_app, member):
    tokens = tokens_for(app, client, web_app, member)
    assert client.get(USERINFO, headers=bearer(tokens["access_token"])).status_code == 200

    revoked = client.post(
        REVOKE,
        data={"token": tokens["refresh_token"]},
        headers=basic(web_app["client_id"], web_app["client_secret"]),
    )

    assert revoked.status_code == 200
    assert_challenge(
        client.get(USERINFO, headers=bearer(tokens["access_token"])), 401, "invalid_token"
    )


def test_userinfo_refuses_a_deactivated_users_token(app, client, web_app, member):
    tokens = tokens_for(app, client, web_app, member)
    with app.app_context():
        db.session.execute(update(User).where(User.id == member.id).values(active=False))
        db.session.commit()
        db.session.remove()

    assert_challenge(
        client.get(USERINFO, headers=bearer(tokens["access_token"])), 401, "invalid_token"
    )


def test_signing_out_everywhere_ends_the_users_provider_sessions_too(app, client, web_app, member):
    tokens = tokens_for(app, client, web_app, member)

    answer = client.delete("/api/v1/auth/sessions", headers=member.headers)

    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.json["revoked"] == 1
    assert_challenge(
        client.get(USERINFO, headers=bearer(tokens["access_token"])), 401, "invalid_token"
    )


def test_deleting_the_client_ends_its_users_sessions(app, client, admin, web_app, member):
    tokens = tokens_for(app, client, web_app, member)

    deleted = client.delete(f"/api/v1/oauth/clients/{web_app['id']}", headers=admin.headers)

    assert deleted.status_code == 204
    assert_challenge(
        client.get(USERINFO, headers=bearer(tokens["access_token"])), 401, "invalid_token"
    )
    listed = client.get("/api/v1/auth/sessions", headers=member.headers).json["items"]
    assert [s["current"] for s in listed] == [True]  # only the API sign-in is left
