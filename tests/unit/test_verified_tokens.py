"""The in-process cache of verified access-token claims never outlives a token."""

from __future__ import annotations

import time

from webapp.auth.tokens import LEEWAY_SECONDS, VerifiedTokens


def test_a_cached_token_is_served_until_it_expires():
    cache = VerifiedTokens()
    claims = {"sub": "u", "exp": time.time() + 60}
    cache.put("token", claims)
    assert cache.get("token") == claims


def test_an_expired_token_is_not_served_from_the_cache():
    cache = VerifiedTokens()
    cache.put("token", {"sub": "u", "exp": time.time() - LEEWAY_SECONDS - 1})
    assert cache.get("token") is None
    assert cache.get("token") is None  # and it was dropped


def test_the_cache_keeps_only_the_most_recently_used_tokens():
    cache = VerifiedTokens(size=2)
    future = time.time() + 60
    cache.put("a", {"exp": future})
    cache.put("b", {"exp": future})
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("c", {"exp": future})
    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert cache.get("c") is not None
