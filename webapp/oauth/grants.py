"""The token endpoint's user grants and the revocation and introspection endpoints, as Authlib
grants and endpoints: Authlib authenticates the client (its registered method only, as
`OAuthClient.check_endpoint_auth_method` says) and answers in OAuth's JSON format; the rules are
`webapp.oauth.user_tokens` and `webapp.oauth.token_state`.

Each OAuth request carries the caller's `Origin` (`request.origin`), set by the server from the
function the HTTP layer gave it (`webapp.oauth.server.build`).
"""

from __future__ import annotations

from typing import Any

from authlib.consts import default_json_headers
from authlib.oauth2.rfc6749.errors import InvalidRequestError, UnauthorizedClientError
from authlib.oauth2.rfc6749.grants import BaseGrant, TokenEndpointMixin
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from webapp.extensions import db
from webapp.oauth import token_state, user_tokens
from webapp.oauth.metadata import (
    AUTH_METHODS,
    AUTHORIZATION_CODE,
    CONFIDENTIAL_METHODS,
    REFRESH_TOKEN,
)
from webapp.oauth.models import OAuthClient

Response = tuple[int, dict[str, Any], list[tuple[str, str]]]


def _token_param(request: Any) -> str:
    """The `token` parameter. An unknown `token_type_hint` is ignored, not refused: the hint only
    orders the search (RFC 7009 §2.1, RFC 7662 §2.1), and Authlib's refusal is a 401."""
    token = request.form.get("token")
    if not token:
        raise InvalidRequestError("Missing 'token' in request.")
    return str(token)


class _UserGrant(BaseGrant, TokenEndpointMixin):  # type: ignore[misc]
    """Any client may present its credentials its registered way, a public one its client_id
    alone (`none`); it must be registered for the grant."""

    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)
    REQUIRED = "code"

    def validate_token_request(self) -> None:
        client: OAuthClient = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError(
                f"The client is not registered for grant_type={self.GRANT_TYPE}."
            )
        if not self.request.form.get(self.REQUIRED):
            raise InvalidRequestError(f"Missing '{self.REQUIRED}' in request.")
        self.request.client = client


class AuthorizationCodeGrant(_UserGrant):
    """RFC 6749 §4.1.3 with PKCE (RFC 7636, S256, required of every client)."""

    GRANT_TYPE = AUTHORIZATION_CODE
    REQUIRED = "code"

    def create_token_response(self) -> Response:
        form = self.request.form
        body = user_tokens.redeem(
            db.session,
            self.request.origin,
            self.request.client,
            code=form["code"],
            redirect_uri=self.request.payload.redirect_uri,
            code_verifier=form.get("code_verifier"),
        )
        return 200, body, self.TOKEN_RESPONSE_HEADER


class RefreshTokenGrant(_UserGrant):
    """RFC 6749 §6, rotating: each refresh token is used once."""

    GRANT_TYPE = REFRESH_TOKEN
    REQUIRED = "refresh_token"

    def create_token_response(self) -> Response:
        body = user_tokens.refresh(
            db.session,
            self.request.origin,
            self.request.client,
            refresh_token=self.request.form["refresh_token"],
            scope=self.request.payload.scope,
        )
        return 200, body, self.TOKEN_RESPONSE_HEADER


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009 for confidential clients: 200 whether or not the token was theirs or known."""

    CLIENT_AUTH_METHODS = list(CONFIDENTIAL_METHODS)

    def create_endpoint_response(self, request: Any) -> Response:
        client = self.authenticate_endpoint_client(request)
        token = _token_param(request)
        hint = request.form.get("token_type_hint")
        token_state.revoke(db.session, request.origin, client, token, hint)
        return 200, {}, default_json_headers


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662 for confidential clients, about their own tokens only."""

    CLIENT_AUTH_METHODS = list(CONFIDENTIAL_METHODS)

    def create_endpoint_response(self, request: Any) -> Response:
        client = self.authenticate_endpoint_client(request)
        token = _token_param(request)
        body = token_state.introspect(
            db.session, client, token, request.form.get("token_type_hint")
        )
        return 200, body, default_json_headers
