"""Single-use tokens (email verification, password reset, and the like).

Owns how such tokens are made and stored: the plaintext goes to the user once, only its SHA-256
digest is kept. A fast hash is enough here, unlike for passwords: the tokens carry 256 random bits,
so there is nothing to guess from a leaked digest.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["TOKEN_BYTES", "hash_token", "new_token"]

TOKEN_BYTES = 32  # 256 bits of entropy


def new_token() -> tuple[str, str]:
    """Return ``(plaintext, digest)``: a URL-safe token to send and its SHA-256 hex to store."""
    plaintext = secrets.token_urlsafe(TOKEN_BYTES)
    return plaintext, hash_token(plaintext)


def hash_token(plaintext: str) -> str:
    """The SHA-256 hex digest under which *plaintext* is stored and looked up."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()
