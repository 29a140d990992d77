"""Authlib's authorization server, wired to Gatehouse: clients come from the database, tokens
are JWTs signed by the JWKS key (`webapp.oauth.tokens`), and only the grants Gatehouse
implements are registered: `client_credentials` (confidential clients), `authorization_code`
with PKCE and `refresh_token` (`webapp.oauth.grants`); plus revocation and introspection.

Authlib reads the request itself and answers in RFC 6749's format (`{"error": ...}`, not
problem+json), as OAuth clients expect: `invalid_client` (401 with `WWW-Authenticate: Basic`),
`invalid_grant`, `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`,
`invalid_request`. Every token request is counted by grant and result
(`gatehouse_oauth_token_grants_total`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidScopeError,
    OAuth2Error,
    UnsupportedGrantTypeError,
)

from observability import metrics
from webapp.context import Origin
from webapp.extensions import db
from webapp.oauth import service, tokens
from webapp.oauth.grants import (
    AuthorizationCodeGrant,
    Introspection,
    RefreshTokenGrant,
    Revocation,
)
from webapp.oauth.metadata import CONFIDENTIAL_METHODS, GRANT_TYPES, SCOPES
from webapp.oauth.models import OAuthClient

# Authlib logs every issued token at DEBUG ("Issue token {...}"): with LOG_LEVEL=DEBUG the access
# tokens would land in the logs. Its INFO and above carry no credential.
logging.getLogger("authlib").setLevel(logging.INFO)


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """RFC 6749 §4.4 for confidential clients, authenticated by the method they registered
    (`OAuthClient.check_endpoint_auth_method`); a public client cannot authenticate here."""

    TOKEN_ENDPOINT_AUTH_METHODS = list(CONFIDENTIAL_METHODS)

    def validate_requested_scope(self) -> None:
        """A requested scope must lie within the client's registered scope (RFC 6749 §3.3:
        refused rather than silently narrowed); none requested means the registered one."""
        client: OAuthClient = self.request.client
        requested = (self.request.payload.scope or "").split()
        if not set(requested) <= set(client.scopes):
            raise InvalidScopeError(description="The scope exceeds the client's registered scope.")


class Server(AuthorizationServer):  # type: ignore[misc]
    """Authlib's Flask server, handing each OAuth request the caller's `Origin` and counting
    the token endpoint's outcomes."""

    def __init__(self, origin_of: Callable[[], Origin], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._origin_of = origin_of

    def create_oauth2_request(self, request: Any) -> Any:
        oauth_request = super().create_oauth2_request(request)
        oauth_request.origin = self._origin_of()
        return oauth_request

    def create_token_response(self, request: Any = None) -> Any:
        """Authlib's own, with the outcome counted (`result` is the error's, or the finer one
        a reuse error names)."""
        oauth_request = self.create_oauth2_request(request)
        grant_type = oauth_request.payload.grant_type
        label = grant_type if grant_type in GRANT_TYPES else "unsupported"
        try:
            grant = self.get_token_grant(oauth_request)
        except UnsupportedGrantTypeError as error:
            metrics.OAUTH_TOKEN_GRANTS.labels(grant=label, result=error.error).inc()
            return self.handle_error_response(oauth_request, error)
        try:
            grant.validate_token_request()
            args = grant.create_token_response()
        except OAuth2Error as error:
            result = getattr(error, "result", error.error)
            metrics.OAUTH_TOKEN_GRANTS.labels(grant=label, result=result).inc()
            return self.handle_error_response(oauth_request, error)
        metrics.OAUTH_TOKEN_GRANTS.labels(grant=label, result="success").inc()
        return self.handle_response(*args)


def _query_client(client_id: str) -> OAuthClient | None:
    return service.find_by_client_id(db.session, client_id)


def _save_token(_token: dict[str, Any], _request: Any) -> None:
    """Nothing to store here: access tokens are self-contained JWTs, and the user grants store
    their sessions and refresh tokens themselves."""


def _generate_token(
    grant_type: str,
    client: OAuthClient,
    user: Any = None,
    scope: str | None = None,
    expires_in: int | None = None,
    include_refresh_token: bool = True,
) -> dict[str, Any]:
    """`client_credentials` only: the user grants build their responses themselves."""
    granted = scope if scope else client.scope
    return tokens.client_access_token(client, " ".join(dict.fromkeys(granted.split())))


def build(origin_of: Callable[[], Origin]) -> Server:
    """The server; `origin_of` tells where the current request comes from (the HTTP layer's)."""
    server = Server(origin_of, query_client=_query_client, save_token=_save_token)
    server.scopes_supported = list(SCOPES)
    server.register_token_generator("default", _generate_token)
    server.register_grant(ClientCredentialsGrant)
    server.register_grant(AuthorizationCodeGrant)
    server.register_grant(RefreshTokenGrant)
    server.register_endpoint(Revocation)
    server.register_endpoint(Introspection)
    return server
