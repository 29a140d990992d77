"""The provider pages' CSP names the client's redirect URI as a form target, safely: without
its query (CSP source expressions have none), and only the origin when the path holds a
character that would end the source list or the directive."""

from __future__ import annotations

import pytest

from webapp.oauth.pages import csp_source, page_csp


@pytest.mark.parametrize(
    ("uri", "source"),
    [
        ("https://wiki.example.com/oauth/callback", "https://wiki.example.com/oauth/callback"),
        ("https://wiki.example.com/cb?tenant=1", "https://wiki.example.com/cb"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("https://evil.example.com/a;script-src", "https://evil.example.com"),
        ("https://evil.example.com/a,b", "https://evil.example.com"),
    ],
)
def test_a_redirect_uri_becomes_a_safe_csp_source(uri, source):
    assert csp_source(uri) == source


def test_the_policy_allows_forms_to_self_and_the_targets_only():
    policy = page_csp(["https://wiki.example.com/cb?x=1"])

    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["form-action"] == "'self' https://wiki.example.com/cb"
    assert directives["default-src"] == "'none'"
    assert directives["style-src"] == "'self'"
    assert "script-src" not in directives
