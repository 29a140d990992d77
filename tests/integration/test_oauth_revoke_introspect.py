"""POST /oauth/revoke (RFC 7009) and /oauth/introspect (RFC 7662): confidential clients only,
each about its own tokens only; revoking any token of a user's session ends the session."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.oauth import MACHINE, WEB_APP, register
from tests.support.oidc import INTROSPECT, REVOKE, TOKEN, basic, refresh, tokens_for
from tests.support.rows import audit_events


def as_client(body: dict[str, Any]) -> dict[str, str]:
    return basic(body["client_id"], body["client_secret"])


def introspect(client, owner: dict[str, Any], token: str, **extra: str) -> dict[str, Any]:
    answer = client.post(INTROSPECT, data={"token": token, **extra}, headers=as_client(owner))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.headers["Cache-Control"] == "no-store"
    return dict(answer.json)


def revoke(client, owner: dict[str, Any], token: str, **extra: str) -> Any:
    return client.post(REVOKE, data={"token": token, **extra}, headers=as_client(owner))


def test_introspection_describes_the_clients_own_access_and_refresh_tokens(
    app, client, web_app, member
):
    tokens = tokens_for(app, client, web_app, member)

    access = introspect(client, web_app, tokens["access_token"])
    assert access["active"] is True
    assert access["token_type"] == "Bearer"
    assert access["client_id"] == web_app["client_id"]
    assert access["sub"] == str(member.id)
    assert access["scope"] == "openid profile email"
    assert access["iss"] == "https://gatehouse.test"
    assert access["aud"] == "gatehouse"
    assert access["exp"] > access["iat"]

    hinted = introspect(client, web_app, tokens["refresh_token"], token_type_hint="refresh_token")
    unhinted = introspect(client, web_app, tokens["refresh_token"])
    misleading = introspect(
        client, web_app, tokens["refresh_token"], token_type_hint="access_token"
    )
    unknown_hint = introspect(client, web_app, tokens["refresh_token"], token_type_hint="id_token")
    assert hinted == unhinted == misleading == unknown_hint
    assert hinted["active"] is True
    assert hinted["token_type"] == "refresh_token"
    assert hinted["client_id"] == web_app["client_id"]
    assert hinted["sub"] == str(member.id)
    assert hinted["scope"] == "openid profile email"


def test_another_clients_tokens_are_inactive_to_it_and_cannot_be_revoked_by_it(
    app, client, admin, web_app, member
):
    other = register(client, admin, **WEB_APP)
    tokens = tokens_for(app, client, web_app, member)

    for token in (tokens["access_token"], tokens["refresh_token"]):
        assert introspect(client, other, token) == {"active": False}
        answer = revoke(client, other, token)
        assert answer.status_code == 200
        assert answer.json == {}
        assert introspect(client, web_app, token)["active"] is True
    assert audit_events(app, "oauth.token_revoked") == []


@pytest.mark.parametrize("which", ["refresh_token", "access_token"])
def test_revoking_either_token_ends_the_whole_session(app, client, web_app, member, which):
    tokens = tokens_for(app, client, web_app, member)

    answer = revoke(client, web_app, tokens[which], token_type_hint=which)

    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"
    assert introspect(client, web_app, tokens["access_token"]) == {"active": False}
    assert introspect(client, web_app, tokens["refresh_token"]) == {"active": False}
    refused = refresh(client, web_app, tokens["refresh_token"])
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_grant"
    (event,) = audit_events(app, "oauth.token_revoked")
    assert event.actor_id == member.id
    assert event.details == {"client_id": web_app["client_id"], "token_type": which}
    # Revoking again, or an unknown token, is the same empty success (RFC 7009 §2.2).
    assert revoke(client, web_app, tokens[which]).status_code == 200
    assert revoke(client, web_app, "no-such-token").status_code == 200
    assert len(audit_events(app, "oauth.token_revoked")) == 1


def test_unknown_api_and_used_tokens_are_inactive(app, client, web_app, member):
    tokens = tokens_for(app, client, web_app, member)
    refresh(client, web_app, tokens["refresh_token"])

    assert introspect(client, web_app, "no-such-token") == {"active": False}
    assert introspect(client, web_app, member.access_token) == {"active": False}
    assert introspect(client, web_app, member.refresh_token) == {"active": False}
    assert introspect(client, web_app, tokens["refresh_token"]) == {"active": False}  # used


def test_a_client_credentials_token_is_introspected_but_cannot_be_revoked(client, admin):
    machine = register(
        client, admin, **{**MACHINE, "token_endpoint_auth_method": "client_secret_basic"}
    )
    token = client.post(
        TOKEN, data={"grant_type": "client_credentials"}, headers=as_client(machine)
    ).json["access_token"]

    described = introspect(client, machine, token)
    assert described["active"] is True
    assert described["sub"] == machine["client_id"]

    answer = revoke(client, machine, token)
    assert answer.status_code == 400
    assert answer.json["error"] == "unsupported_token_type"


def test_only_a_confidential_client_by_its_registered_method_may_call_either(
    app, client, admin, web_app, public_app, member
):
    tokens = tokens_for(app, client, public_app, member)
    for endpoint in (INTROSPECT, REVOKE):
        token = {"token": tokens["access_token"]}
        no_auth = client.post(endpoint, data=token)
        assert no_auth.status_code == 401
        assert no_auth.json["error"] == "invalid_client"
        public = client.post(endpoint, data={**token, "client_id": public_app["client_id"]})
        assert public.status_code == 401
        assert public.json["error"] == "invalid_client"
        by_post = client.post(
            endpoint,
            data={
                **token,
                "client_id": web_app["client_id"],
                "client_secret": web_app["client_secret"],
            },
        )
        assert by_post.status_code == 401  # web_app registered client_secret_basic
        missing = client.post(endpoint, data={}, headers=as_client(web_app))
        assert missing.status_code == 400
        assert missing.json["error"] == "invalid_request"
    # The public client's session was not touched by any of it.
    assert refresh(client, public_app, tokens["refresh_token"]).status_code == 200
