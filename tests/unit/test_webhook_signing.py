"""Signing with several secrets (a rotation's overlap): one `v1,` signature per secret in
`webhook-signature`, each verifying with the stock `standardwebhooks` library."""

from __future__ import annotations

import time

import pytest
import standardwebhooks

from webapp.webhooks import signing

BODY = b'{"type":"user.updated"}'


def test_two_secrets_give_two_signatures_each_verifying_alone():
    new, old, stranger = signing.new_secret(), signing.new_secret(), signing.new_secret()

    headers = signing.headers([new, old], "evt-1", int(time.time()), BODY)

    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert signatures[0] == signing.signature(new, "evt-1", int(headers["webhook-timestamp"]), BODY)
    for secret in (new, old):
        assert standardwebhooks.Webhook(secret).verify(BODY, headers) == {"type": "user.updated"}
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(stranger).verify(BODY, headers)


def test_one_secret_gives_one_signature_and_none_is_refused():
    secret = signing.new_secret()

    assert " " not in signing.headers(secret, "evt-2", 1, BODY)["webhook-signature"]
    with pytest.raises(ValueError, match="no secret"):
        signing.headers([], "evt-2", 1, BODY)
