"""RFC 9457 problem documents as the API answers them."""

from __future__ import annotations

from typing import Any

from webapp.http.problems import PROBLEM_MIMETYPE

MEMBERS = ("type", "title", "status", "detail", "instance", "request_id")


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    """`response` is a problem of `status` and `slug` with every member; returns its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_MIMETYPE
    body: dict[str, Any] = response.get_json(force=True)
    for member in MEMBERS:
        assert member in body, f"problem lacks {member!r}: {body}"
    assert body["type"].endswith(f"/problems/{slug}"), body["type"]
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body
