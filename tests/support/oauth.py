"""OAuth clients of the tests: registered through the admin API, read back from the database."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.support.accounts import Account
from tests.support.rows import stored_row
from webapp.oauth.models import OAuthClient

CLIENTS = "/api/v1/oauth/clients/"
WEB_APP: dict[str, Any] = {
    "client_name": "Wiki",
    "redirect_uris": ["https://wiki.example.com/oauth/callback"],
    "post_logout_redirect_uris": ["https://wiki.example.com/"],
    "grant_types": ["authorization_code", "refresh_token"],
    "scope": "openid profile email",
}
MACHINE: dict[str, Any] = {
    "client_name": "Billing sync",
    "grant_types": ["client_credentials"],
    "token_endpoint_auth_method": "client_secret_post",
}


def register(client: FlaskClient, admin: Account, **body: Any) -> dict[str, Any]:
    response = client.post(CLIENTS, json=body, headers=admin.headers)
    assert response.status_code == 201, response.get_json()
    return dict(response.json)


def row(app: Flask, body: dict[str, Any]) -> OAuthClient:
    return stored_row(app, OAuthClient, uuid.UUID(body["id"]))


def secret_works(app: Flask, body: dict[str, Any], secret: str, **kwargs: Any) -> bool:
    """The stored client accepts `secret` (the pepper is the app's: in its context)."""
    stored = row(app, body)
    with app.app_context():
        return stored.check_client_secret(secret, **kwargs)
