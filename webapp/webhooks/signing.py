"""Standard Webhooks signatures (https://www.standardwebhooks.com): the secret is `whsec_` and
the base64 of random bytes; `webhook-signature` is `v1,` and the base64 HMAC-SHA256, under the
decoded secret, of `{webhook-id}.{webhook-timestamp}.{body}`. During a secret rotation's overlap
the header carries one signature per secret, space-separated (the spec allows several; a consumer
accepts the message when any of them verifies)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec allows 24-64


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(
    secret: str | Sequence[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three headers; `secret` may be several secrets (the newest first), each signing."""
    keys = [secret] if isinstance(secret, str) else list(secret)
    if not keys:
        raise ValueError("no secret to sign with")
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(k, message_id, timestamp, body) for k in keys),
    }
