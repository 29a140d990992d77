"""The redaction's quick test (`_MAYBE_SECRET`) lets a line skip the substitutions only when no
secret pattern could match it: every pattern, with a text it redacts, is caught by the trigger."""

from __future__ import annotations

import pytest

from observability import logging as log_setup

EXAMPLES = [
    "Authorization: Bearer abc.def",
    "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxIn0.c2ln",
    "0123456789abcdef0123456789abcdef." + "A" * 43,
    "gh_live_0123456789abcdef_" + "a" * 52,
    "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
    "$2b$12$" + "a" * 53,
    "$pbkdf2-sha256$29000$salt$hash",
    "[parameters: ('x@example.com',)]",
    "/verify?token=abc123",
    "api_credential=hunter2",
    "{'Cookie': 'sid=1'}",
]


@pytest.mark.parametrize("pattern", log_setup._SECRET_PATTERNS, ids=lambda p: p.pattern[:30])
def test_every_secret_pattern_has_an_example_the_trigger_sees(pattern):
    caught = [text for text in EXAMPLES if pattern.search(text)]
    assert caught, f"no example for {pattern.pattern}"
    assert all(log_setup._MAYBE_SECRET.search(text) for text in caught)
    assert all(log_setup.redact(text) != text for text in caught)


def test_a_line_without_a_trigger_is_returned_as_is():
    line = "GET /api/v1/users/me 200 from 127.0.0.1"
    assert log_setup._MAYBE_SECRET.search(line) is None
    assert log_setup.redact(line) is line
