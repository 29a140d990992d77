"""Client ids, client secrets and authorization codes: random values, stored only as keyed hashes.

A secret or code is 256 random bits, so a fast keyed hash is enough (nothing can be guessed
however fast the hash; a slow one would only add latency to every token request). The key is
API_KEY_PEPPER (derived from SECRET_KEY when unset), kept outside the database, so a stolen table
alone does not even allow checking a guess; a domain prefix keeps these hashes apart from API
keys', and binding the client id stops a hash being copied onto another client.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from webapp.config import current_settings

CLIENT_ID_BYTES = 16
SECRET_BYTES = 32
CODE_BYTES = 32


def _keyed(message: str) -> str:
    pepper = current_settings().effective_api_key_pepper
    return hmac.new(pepper, message.encode(), hashlib.sha256).hexdigest()


def new_client_id() -> str:
    return secrets.token_urlsafe(CLIENT_ID_BYTES)


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def new_code() -> str:
    return secrets.token_urlsafe(CODE_BYTES)


def hash_secret(client_id: str, secret: str) -> str:
    return _keyed(f"oauth-client-secret:{client_id}:{secret}")


def hash_code(code: str) -> str:
    return _keyed(f"oauth-code:{code}")
