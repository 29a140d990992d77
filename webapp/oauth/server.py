"""Authlib's authorization server, wired to Gatehouse: clients come from the database, access
tokens are JWTs signed by the JWKS key (`webapp.oauth.tokens`), and only the grants Gatehouse
implements are registered (now: `client_credentials`, for confidential clients).

Authlib reads the request itself and answers in RFC 6749's format (`{"error": ...}`, not
problem+json), as OAuth clients expect: `invalid_client` (401 with `WWW-Authenticate: Basic`),
`unauthorized_client`, `unsupported_grant_type`, `invalid_scope`, `invalid_request`.
"""

from __future__ import annotations

import logging
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidScopeError

from webapp.extensions import db
from webapp.oauth import service, tokens
from webapp.oauth.metadata import SCOPES
from webapp.oauth.models import OAuthClient

CONFIDENTIAL_METHODS = ["client_secret_basic", "client_secret_post"]

# Authlib logs every issued token at DEBUG ("Issue token {...}"): with LOG_LEVEL=DEBUG the access
# tokens would land in the logs. Its INFO and above carry no credential.
logging.getLogger("authlib").setLevel(logging.INFO)


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """RFC 6749 §4.4 for confidential clients, authenticated by the method they registered
    (`OAuthClient.check_endpoint_auth_method`); a public client cannot authenticate here."""

    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_METHODS

    def validate_requested_scope(self) -> None:
        """A requested scope must lie within the client's registered scope (RFC 6749 §3.3:
        refused rather than silently narrowed); none requested means the registered one."""
        client: OAuthClient = self.request.client
        requested = (self.request.payload.scope or "").split()
        if not set(requested) <= set(client.scopes):
            raise InvalidScopeError(description="The scope exceeds the client's registered scope.")


def _query_client(client_id: str) -> OAuthClient | None:
    return service.find_by_client_id(db.session, client_id)


def _save_token(_token: dict[str, Any], _request: Any) -> None:
    """Nothing to store: the access token is a self-contained JWT."""


def _generate_token(
    grant_type: str,
    client: OAuthClient,
    user: Any = None,
    scope: str | None = None,
    expires_in: int | None = None,
    include_refresh_token: bool = True,
) -> dict[str, Any]:
    granted = scope if scope else client.scope
    return tokens.client_access_token(client, " ".join(dict.fromkeys(granted.split())))


def build() -> AuthorizationServer:
    server = AuthorizationServer(query_client=_query_client, save_token=_save_token)
    server.scopes_supported = list(SCOPES)
    server.register_token_generator("default", _generate_token)
    server.register_grant(ClientCredentialsGrant)
    return server


authorization_server = build()
