"""A relying party of the end-to-end tests, built the way an application would build one: a tiny
Flask app whose OAuth side is a stock client library (Authlib's requests client,
`OAuth2Session`), configured from the provider's discovery document alone, and whose ID tokens
are verified with jwcrypto, a JOSE library that shares no code with the provider (PyJWT signs
its tokens) nor with Authlib (joserfc).

It serves, on its own port in a thread:
- `/login`: a new authorization request (PKCE S256, `state`, `nonce`, and the parameters of
  its own query: `?prompt=none`...) and a redirect to the provider;
- `/callback`: the answer; with a `code`, the token request with the PKCE verifier;
- `/logout`: RP-initiated logout with the last ID token as `id_token_hint`;
- `/logged-out`: where the provider sends the browser back.
What happened is kept in `callbacks` and `logouts` for the test to assert on."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from flask import Flask, redirect, request
from jwcrypto import jwk
from jwcrypto import jwt as jose_jwt
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from tests.support.waiting import free_port


@dataclass
class Flow:
    """One authorization request the relying party sent."""

    state: str
    nonce: str
    verifier: str


@dataclass
class Callback:
    """One answer at the redirect URI: its query, and the token response or the error."""

    params: dict[str, str]
    flow: Flow
    token: dict[str, Any] | None = None
    token_error: str | None = None
    session: OAuth2Session | None = None


@dataclass
class RelyingParty:
    issuer: str
    client_id: str
    client_secret: str | None
    scope: str = "openid profile email"
    port: int = field(default_factory=free_port)
    metadata: dict[str, Any] = field(default_factory=dict)
    flows: dict[str, Flow] = field(default_factory=dict)
    callbacks: list[Callback] = field(default_factory=list)
    logouts: list[dict[str, str]] = field(default_factory=list)
    logout_state: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redirect_uri(self) -> str:
        return f"{self.base}/callback"

    @property
    def post_logout_redirect_uri(self) -> str:
        return f"{self.base}/logged-out"

    def discover(self) -> None:
        """OpenID Connect Discovery 1.0 §4: the configuration at the issuer's well-known URL,
        whose `issuer` must be exactly the one asked about (§4.3)."""
        response = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10)
        response.raise_for_status()
        self.metadata = response.json()
        assert self.metadata["issuer"] == self.issuer, self.metadata

    def oauth(self, token: dict[str, Any] | None = None) -> OAuth2Session:
        """A stock client session; a secret-less client is public (`none`)."""
        method = "client_secret_basic" if self.client_secret else "none"
        return OAuth2Session(
            self.client_id,
            self.client_secret,
            scope=self.scope,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=method,
            revocation_endpoint_auth_method=method,
            token=token,
        )

    @property
    def last(self) -> Callback:
        assert self.callbacks, "the provider never came back to the relying party"
        return self.callbacks[-1]

    # --- ID tokens, verified independently ------------------------------------------------

    def verify_id_token(self, id_token: str) -> dict[str, Any]:
        """OIDC Core §3.1.3.7 with jwcrypto: the signature with the key of the published JWKS
        that `kid` names, `iss` exactly the issuer, `aud` this client, `exp` and `iat` present
        and `exp` not past. Returns the header's `alg`/`kid`/`typ` under `_header` too."""
        jwks = requests.get(self.metadata["jwks_uri"], timeout=10).text
        keys = jwk.JWKSet.from_json(jwks)
        checked = jose_jwt.JWT(
            jwt=id_token,
            key=keys,
            algs=self.metadata["id_token_signing_alg_values_supported"],
            check_claims={
                "iss": self.issuer,
                "aud": self.client_id,
                "exp": None,
                "iat": None,
                "sub": None,
            },
        )
        claims: dict[str, Any] = json.loads(checked.claims)
        claims["_header"] = json.loads(checked.header)
        return claims

    # --- the web app ----------------------------------------------------------------------

    def app(self) -> Flask:
        rp = Flask("relying_party")

        @rp.get("/login")
        def login() -> Response:
            flow = Flow(state="", nonce=generate_token(20), verifier=generate_token(48))
            extra = request.args.to_dict()  # more parameters of the request: prompt, ...
            url, flow.state = self.oauth().create_authorization_url(
                self.metadata["authorization_endpoint"],
                code_verifier=flow.verifier,
                nonce=flow.nonce,
                **extra,
            )
            self.flows[flow.state] = flow
            return redirect(url)

        @rp.get("/callback")
        def callback() -> tuple[str, int]:
            params = request.args.to_dict()
            flow = self.flows.pop(params.get("state", ""), None)
            if flow is None:  # an answer to no request of ours: never redeemed
                return "unknown state", 400
            answer = Callback(params, flow)
            self.callbacks.append(answer)
            if "error" in params:
                return f"<h1>Sign-in failed: {params['error']}</h1>", 200
            session = self.oauth()
            try:
                answer.token = dict(
                    session.fetch_token(
                        self.metadata["token_endpoint"],
                        authorization_response=request.url,
                        state=flow.state,
                        code_verifier=flow.verifier,
                    )
                )
            except OAuthError as exc:
                answer.token_error = exc.error
                return f"<h1>Token request failed: {exc.error}</h1>", 200
            answer.session = session
            return "<h1>Signed in</h1>", 200

        @rp.get("/logout")
        def logout() -> Response:
            id_token = next(c.token["id_token"] for c in reversed(self.callbacks) if c.token)
            self.logout_state = generate_token(16)
            query = urlencode(
                {
                    "id_token_hint": id_token,
                    "client_id": self.client_id,
                    "post_logout_redirect_uri": self.post_logout_redirect_uri,
                    "state": self.logout_state,
                }
            )
            return redirect(f"{self.metadata['end_session_endpoint']}?{query}")

        @rp.get("/logged-out")
        def logged_out() -> str:
            self.logouts.append(request.args.to_dict())
            return "<h1>Signed out of the relying party</h1>"

        return rp

    @contextlib.contextmanager
    def running(self) -> Iterator[RelyingParty]:
        """Discover the provider, then serve the app on `port` in a thread until the end."""
        self.discover()
        server = make_server("127.0.0.1", self.port, self.app(), threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            thread.join(timeout=10)
