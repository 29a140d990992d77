"""Sign in to Gatehouse with a stock OpenID Connect client (docs/oidc.md, "A 5-minute
walk-through"): python oidc_signin.py CLIENT_ID CLIENT_SECRET. The environment variables
GATEHOUSE (the issuer) and REDIRECT_URI override the defaults. tests/e2e/test_oidc_browser.py
runs it."""

import json
import os
import sys
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit

import jwt
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

ISSUER = os.environ.get("GATEHOUSE", "http://127.0.0.1:8000")
REDIRECT_URI = os.environ.get("REDIRECT_URI", "http://127.0.0.1:8765/callback")
CLIENT_ID, CLIENT_SECRET = sys.argv[1], sys.argv[2]


class Callback(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the browser, back from Gatehouse with ?code=…&state=…&iss=…
        self.server.answer = self.path  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"Signed in: back to the terminal.")


callback = HTTPServer(("127.0.0.1", urlsplit(REDIRECT_URI).port or 80), Callback)

meta = requests.get(f"{ISSUER}/.well-known/openid-configuration", timeout=10).json()
client = OAuth2Session(
    CLIENT_ID,
    CLIENT_SECRET,
    scope="openid profile email",
    redirect_uri=REDIRECT_URI,
    code_challenge_method="S256",
)
verifier, nonce = generate_token(48), generate_token(20)
url, state = client.create_authorization_url(
    meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
)
print("Sign in at", url, flush=True)
webbrowser.open(url)

callback.handle_request()  # waits for the browser to come back
token = client.fetch_token(
    meta["token_endpoint"],
    authorization_response=callback.answer,
    state=state,
    code_verifier=verifier,
)
key = jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(token["id_token"])
claims = jwt.decode(
    token["id_token"],
    key,
    algorithms=meta["id_token_signing_alg_values_supported"],
    audience=CLIENT_ID,
    issuer=ISSUER,
)
assert claims["nonce"] == nonce, "not the ID token of this sign-in"
print("ID token:", json.dumps(claims))
print("UserInfo:", json.dumps(client.get(meta["userinfo_endpoint"]).json()))
