"""POST /oauth/token has a per-IP budget of its own (RATELIMIT_OAUTH_TOKEN), and a spent budget
at the provider's endpoints answers in OAuth's JSON error format (429, `Retry-After`), which
OAuth client libraries parse, rather than problem+json."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask

from tests.support.oidc import INTROSPECT, TOKEN, basic
from webapp.extensions import limiter

ONE = {"REMOTE_ADDR": "198.51.100.7"}
OTHER = {"REMOTE_ADDR": "198.51.100.8"}


@pytest.fixture
def limited(app: Flask, redis_url: str, make_app: Callable[..., Flask]) -> Flask:
    redis.Redis.from_url(redis_url).flushdb()
    # The limiter is one object per process: it must trust this app's storage afresh (as in
    # tests/integration/test_rate_limits.py).
    limiter._storage_dead = False
    return make_app(
        ratelimit_enabled=True,
        ratelimit_default="100 per minute",
        ratelimit_oauth_token="2 per minute",
    )


def token_request(client: Any, body: dict[str, Any], environ: dict[str, str]) -> Any:
    return client.post(
        TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": "not-a-token"},
        headers=basic(body["client_id"], body["client_secret"]),
        environ_base=environ,
    )


def test_the_token_endpoint_has_its_own_per_ip_budget(limited, web_app):
    client = limited.test_client()

    first = token_request(client, web_app, ONE)
    second = token_request(client, web_app, ONE)
    refused = token_request(client, web_app, ONE)

    # Refusals (here invalid_grant) count as much as successes: guessing costs budget.
    assert first.status_code == second.status_code == 400
    assert first.headers["RateLimit-Limit"] == "2"
    assert refused.status_code == 429
    assert refused.mimetype == "application/json"
    assert refused.json["error"] == "temporarily_unavailable"
    assert refused.json["error_description"]
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.headers["Cache-Control"] == "no-store"
    # Another address has a budget of its own; the other provider endpoints keep the default.
    assert token_request(client, web_app, OTHER).status_code == 400
    introspected = client.post(
        INTROSPECT,
        data={"token": "x"},
        headers=basic(web_app["client_id"], web_app["client_secret"]),
        environ_base=ONE,
    )
    assert introspected.status_code == 200
    assert introspected.headers["RateLimit-Limit"] == "100"


def test_the_provider_answers_a_spent_default_budget_in_oauths_format(make_app, redis_url, web_app):
    redis.Redis.from_url(redis_url).flushdb()
    limiter._storage_dead = False
    client = make_app(ratelimit_enabled=True, ratelimit_default="1 per minute").test_client()
    headers = basic(web_app["client_id"], web_app["client_secret"])

    assert client.post(INTROSPECT, data={"token": "x"}, headers=headers).status_code == 200
    refused = client.post(INTROSPECT, data={"token": "x"}, headers=headers)

    assert refused.status_code == 429
    assert refused.json["error"] == "temporarily_unavailable"
    assert "type" not in refused.json  # not problem+json
