"""The provider's discovery document, the issuer setting, and the CLI that registers a client."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from webapp.config import ConfigError, Settings
from webapp.extensions import db
from webapp.oauth.models import OAuthClient

DISCOVERY = "/.well-known/openid-configuration"


def test_discovery_names_the_issuer_and_the_existing_jwks(client):
    response = client.get(DISCOVERY)

    assert response.status_code == 200
    document = response.json
    # The tests' PUBLIC_BASE_URL, as OIDC_ISSUER is unset.
    assert document["issuer"] == "https://gatehouse.test"
    assert document["jwks_uri"] == "https://gatehouse.test/.well-known/jwks.json"
    assert response.headers["Cache-Control"].startswith("public, max-age=")
    # The JWKS it points to is the one the service signs with.
    jwks = client.get("/.well-known/jwks.json").json
    assert jwks["keys"]


def test_discovery_lists_the_endpoints_and_flows_that_exist(client):
    document = client.get(DISCOVERY).json

    base = "https://gatehouse.test"
    assert document["token_endpoint"] == f"{base}/oauth/token"
    assert document["userinfo_endpoint"] == f"{base}/oauth/userinfo"
    assert document["revocation_endpoint"] == f"{base}/oauth/revoke"
    assert document["introspection_endpoint"] == f"{base}/oauth/introspect"
    assert document["grant_types_supported"] == [
        "authorization_code",
        "refresh_token",
        "client_credentials",
    ]
    assert document["response_types_supported"] == ["code"]
    assert document["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
        "none",
    ]
    for endpoint in ("revocation", "introspection"):
        assert document[f"{endpoint}_endpoint_auth_methods_supported"] == [
            "client_secret_basic",
            "client_secret_post",
        ]
    assert document["subject_types_supported"] == ["public"]
    # The algorithm of the key that signs, as published in the JWKS.
    jwks = client.get("/.well-known/jwks.json").json["keys"]
    assert document["id_token_signing_alg_values_supported"][0] in {k["alg"] for k in jwks}
    assert {"sub", "nonce", "at_hash", "email", "email_verified", "name"} <= set(
        document["claims_supported"]
    )

    assert document["authorization_endpoint"] == f"{base}/oauth/authorize"
    assert document["end_session_endpoint"] == f"{base}/oauth/logout"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["prompt_values_supported"] == ["none", "login", "consent"]
    assert document["authorization_response_iss_parameter_supported"] is True
    # Not offered: the implicit and hybrid flows, and pairwise subjects.
    for absent in ("registration_endpoint", "request_parameter_supported"):
        assert absent not in document
    # Every endpoint it does list answers.
    for key, url in document.items():
        if key.endswith(("_endpoint", "_uri")):
            path = url.removeprefix(document["issuer"])
            answer = client.post(path) if key == "token_endpoint" else client.get(path)
            assert answer.status_code != 404, key


def test_oidc_issuer_overrides_the_public_base_url(make_app):
    app = make_app(oidc_issuer="https://login.example.com/")

    document = app.test_client().get(DISCOVERY).json

    assert document["issuer"] == "https://login.example.com"  # no trailing slash
    assert document["jwks_uri"] == "https://login.example.com/.well-known/jwks.json"


@pytest.mark.parametrize(
    "issuer",
    ["login.example.com", "ftp://login.example.com", "https://x.example/?a=1", "https://x/#f"],
)
def test_an_issuer_with_a_query_fragment_or_no_scheme_is_refused(issuer):
    with pytest.raises((ValueError, ConfigError)):
        Settings().with_overrides(oidc_issuer=issuer)


def test_production_refuses_an_http_issuer(base_settings):
    production = {"env": "production", "ratelimit_enabled": True}
    base_settings.with_overrides(**production, oidc_issuer="https://login.example.com")

    with pytest.raises(ConfigError, match="OIDC_ISSUER"):
        base_settings.with_overrides(**production, oidc_issuer="http://login.example.com")


def test_the_cli_registers_a_client_and_prints_its_secret_once(app):
    result = app.test_cli_runner().invoke(
        args=[
            "oauth",
            "create-client",
            "--name",
            "Grafana",
            "--redirect-uri",
            "https://grafana.example.com/login/generic_oauth",
            "--grant-type",
            "authorization_code",
            "--grant-type",
            "refresh_token",
            "--scope",
            "openid email",
        ]
    )

    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.output.splitlines() if ": " in line)
    with app.app_context():
        stored = db.session.scalar(
            select(OAuthClient).where(OAuthClient.client_id == lines["client_id"])
        )
        assert stored is not None
        assert stored.client_name == "Grafana"
        assert stored.grant_types == ["authorization_code", "refresh_token"]
        assert stored.check_client_secret(lines["client_secret"])
        assert lines["client_secret"] not in (stored.secret_hash or "")
        db.session.remove()


def test_the_cli_registers_a_public_client_without_a_secret(app):
    result = app.test_cli_runner().invoke(
        args=[
            "oauth",
            "create-client",
            "--name",
            "Desktop",
            "--redirect-uri",
            "http://127.0.0.1:9000/cb",
            "--auth-method",
            "none",
        ]
    )

    assert result.exit_code == 0, result.output
    assert "client_secret" not in result.output


def test_the_cli_refuses_metadata_that_breaks_a_rule(app):
    result = app.test_cli_runner().invoke(
        args=["oauth", "create-client", "--name", "Bad", "--redirect-uri", "https://*.x.com/cb"]
    )

    assert result.exit_code != 0
    assert "wildcards are not allowed" in result.output
    with app.app_context():
        assert db.session.scalar(select(OAuthClient)) is None
        db.session.remove()
