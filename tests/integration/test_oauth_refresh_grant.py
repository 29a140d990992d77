"""POST /oauth/token with `refresh_token`: rotation through the API's own machinery, reuse
revoking the family, the scope only narrowing, new ID tokens without nonce, and refresh tokens
that work for their own client only (never the API's, never another client's)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from tests.support.oauth import WEB_APP, register
from tests.support.oidc import (
    INTROSPECT,
    USERINFO,
    basic,
    grants_counted,
    issue_code,
    redeem,
    refresh,
    tokens_for,
    verify_jwt,
)
from tests.support.rows import audit_events
from webapp.extensions import db
from webapp.users.models import User


def assert_invalid(response: Any, error: str = "invalid_grant") -> None:
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json["error"] == error


def active(client, owner: dict[str, Any], token: str) -> bool:
    answer = client.post(
        INTROSPECT,
        data={"token": token},
        headers=basic(owner["client_id"], owner["client_secret"]),
    )
    assert answer.status_code == 200
    return bool(answer.json["active"])


def test_a_refresh_rotates_and_repeats_who_and_when_without_the_nonce(app, client, web_app, member):
    first = tokens_for(app, client, web_app, member, amr=["pwd", "otp"])
    first_id = verify_jwt(client, first["id_token"], audience=web_app["client_id"], typ="JWT")

    response = refresh(client, web_app, first["refresh_token"])

    assert response.status_code == 200, response.json
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert body["refresh_token"] != first["refresh_token"]
    assert body["access_token"] != first["access_token"]
    assert body["scope"] == "openid profile email"
    claims = verify_jwt(client, body["id_token"], audience=web_app["client_id"], typ="JWT")
    assert claims["sub"] == first_id["sub"] == str(member.id)
    assert claims["auth_time"] == first_id["auth_time"]
    assert claims["amr"] == ["pwd", "otp"]
    assert "nonce" in first_id
    assert "nonce" not in claims
    access = verify_jwt(client, body["access_token"], audience="gatehouse", typ="at+jwt")
    assert (
        access["sid"]
        == verify_jwt(client, first["access_token"], audience="gatehouse", typ="at+jwt")["sid"]
    )
    # The used refresh token is no longer active; its successor is.
    assert active(client, web_app, first["refresh_token"]) is False
    assert active(client, web_app, body["refresh_token"]) is True


def test_a_reused_refresh_token_revokes_the_whole_family(app, client, web_app, member):
    first = tokens_for(app, client, web_app, member)
    second = refresh(client, web_app, first["refresh_token"]).json
    before = grants_counted(client, grant="refresh_token", result="refresh_reused")

    reused = refresh(client, web_app, first["refresh_token"])

    assert_invalid(reused)
    assert grants_counted(client, grant="refresh_token", result="refresh_reused") == before + 1
    assert_invalid(refresh(client, web_app, second["refresh_token"]))
    assert active(client, web_app, second["access_token"]) is False
    bearer = {"Authorization": f"Bearer {second['access_token']}"}
    assert client.get(USERINFO, headers=bearer).status_code == 401
    (event,) = audit_events(app, "auth.refresh_reuse_detected")
    assert event.actor_id == member.id


def test_the_scope_may_narrow_for_one_refresh_but_never_widen(app, client, web_app, member):
    first = tokens_for(app, client, web_app, member, scope="openid email")

    widened = refresh(client, web_app, first["refresh_token"], scope="openid profile")
    assert_invalid(widened, "invalid_scope")

    narrowed = refresh(client, web_app, first["refresh_token"], scope="openid")
    assert narrowed.status_code == 200, narrowed.json
    assert narrowed.json["scope"] == "openid"
    assert narrowed.json["id_token"]
    bearer = {"Authorization": f"Bearer {narrowed.json['access_token']}"}
    assert "email" not in client.get(USERINFO, headers=bearer).json

    # The refresh token keeps what the user granted.
    again = refresh(client, web_app, narrowed.json["refresh_token"])
    assert again.json["scope"] == "openid email"

    without_openid = refresh(client, web_app, again.json["refresh_token"], scope="email")
    assert without_openid.status_code == 200
    assert "id_token" not in without_openid.json


def test_a_refresh_token_works_for_its_own_client_only(app, client, admin, web_app, member):
    other = register(client, admin, **WEB_APP)
    mine = tokens_for(app, client, web_app, member)

    assert_invalid(refresh(client, other, mine["refresh_token"]))
    # Refused, not reused: the rightful client's token still works.
    assert refresh(client, web_app, mine["refresh_token"]).status_code == 200


def test_api_and_provider_refresh_tokens_do_not_cross(app, client, web_app, member):
    provider = tokens_for(app, client, web_app, member)

    assert_invalid(refresh(client, web_app, member.refresh_token))
    api = client.post("/api/v1/auth/refresh", json={"refresh_token": provider["refresh_token"]})
    assert api.status_code == 401
    # Neither attempt consumed anything.
    assert refresh(client, web_app, provider["refresh_token"]).status_code == 200
    api = client.post("/api/v1/auth/refresh", json={"refresh_token": member.refresh_token})
    assert api.status_code == 200


def test_a_deactivated_or_deleted_user_cannot_refresh(app, client, web_app, member, make_user):
    tokens = tokens_for(app, client, web_app, member)
    with app.app_context():
        db.session.execute(update(User).where(User.id == member.id).values(active=False))
        db.session.commit()
        db.session.remove()
    assert_invalid(refresh(client, web_app, tokens["refresh_token"]))

    doomed = make_user("user")
    theirs = tokens_for(app, client, web_app, doomed)
    with app.app_context():
        db.session.delete(db.session.get(User, doomed.id))
        db.session.commit()
        db.session.remove()
    assert_invalid(refresh(client, web_app, theirs["refresh_token"]))


def test_refresh_refusals_name_the_oauth_error(app, client, admin, web_app, member):
    assert_invalid(refresh(client, web_app, ""), "invalid_request")
    assert_invalid(refresh(client, web_app, "not-a-token"))
    code_only = register(client, admin, **{**WEB_APP, "grant_types": ["authorization_code"]})
    answer = redeem(client, code_only, issue_code(app, code_only, member.id))
    assert "refresh_token" not in answer.json
    assert_invalid(refresh(client, code_only, "anything"), "unauthorized_client")
    wrong = refresh(client, {**web_app, "client_secret": "nope"}, "anything")
    assert wrong.status_code == 401
    assert wrong.json["error"] == "invalid_client"
