"""RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): the checks of a sign-out
request before the provider asks the user to confirm it.

`id_token_hint` must be an ID token this provider signed (any key of the JWKS, expired or not:
a sign-out usually comes after the token's life) for a registered client; `client_id`, when
given too, must be one of its audiences. `post_logout_redirect_uri` needs the client (from
either) and must be registered for it exactly, or the user is shown a page and sent nowhere:
an unchecked redirect after sign-out would be an open redirector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jwt as pyjwt

from webapp.auth.tokens import SUPPORTED_ALGORITHMS, keyring
from webapp.config import current_settings
from webapp.db import DbSession
from webapp.oauth import service
from webapp.oauth.authorize import PageError, with_params
from webapp.oauth.models import OAuthClient
from webapp.oauth.tokens import TOKEN_TYPE


@dataclass(frozen=True)
class LogoutRequest:
    client: OAuthClient | None
    post_logout_redirect_uri: str | None
    state: str | None
    query: str  # as received, carried by the confirmation form

    @property
    def location(self) -> str | None:
        """Where the browser goes once signed out, if the client asked and may."""
        if self.post_logout_redirect_uri is None:
            return None
        return with_params(self.post_logout_redirect_uri, state=self.state)


def _first(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name) or []
    if len(values) > 1:
        raise PageError(f"The sign-out request gives {name} more than once.")
    return (values[0] or None) if values else None


def id_token_claims(token: str) -> dict[str, Any]:
    """The verified claims of an ID token of this provider (expiry not checked), or PageError."""
    invalid = PageError("The sign-out request carries an ID token this provider did not issue.")
    try:
        header = pyjwt.get_unverified_header(token)
        key = keyring().verification_key(str(header.get("kid", "")))
        if key is None or header.get("typ") == TOKEN_TYPE:
            raise invalid
        claims: dict[str, Any] = pyjwt.decode(
            token,
            key,
            algorithms=SUPPORTED_ALGORITHMS,
            issuer=current_settings().effective_oidc_issuer,
            options={"verify_exp": False, "verify_aud": False, "require": ["iss", "aud", "sub"]},
        )
    except pyjwt.PyJWTError:
        raise invalid from None
    if claims.get("type") == "access":  # Gatehouse's own API tokens are no ID tokens
        raise invalid
    return claims


def parse(db: DbSession, params: Mapping[str, Sequence[str]]) -> LogoutRequest:
    hint = _first(params, "id_token_hint")
    client_id = _first(params, "client_id")
    redirect_uri = _first(params, "post_logout_redirect_uri")
    state = _first(params, "state")
    audiences: list[str] = []
    if hint is not None:
        aud = id_token_claims(hint)["aud"]
        audiences = [aud] if isinstance(aud, str) else [str(a) for a in aud]
        if client_id is not None and client_id not in audiences:
            raise PageError("The ID token was not issued to the client named by client_id.")
        if client_id is None and len(audiences) == 1:
            client_id = audiences[0]
    client = service.find_by_client_id(db, client_id) if client_id else None
    if client_id is not None and client is None:
        raise PageError("The application that sent you here is not registered (client_id).")
    if redirect_uri is not None:
        if client is None:
            raise PageError(
                "The sign-out request names a return address but no application "
                "(client_id or id_token_hint), so you were not sent there."
            )
        if redirect_uri not in client.post_logout_redirect_uris:
            raise PageError(
                f"The address {client.client_name} asked to return you to after signing out is "
                "not one it registered (post_logout_redirect_uri), so you were not sent there."
            )
    query_pairs = [(name, value) for name, given in params.items() for value in given]
    return LogoutRequest(client, redirect_uri, state, urlencode(query_pairs))
