"""The shared list helper on /api/v1/users/ and /api/v1/audit-events/: limit, cursor, offset."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from webapp.audit.models import AuditEvent
from webapp.extensions import db
from webapp.users.models import User

USERS = "/api/v1/users/"
EVENTS = "/api/v1/audit-events/"
LINK_NEXT = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


def _add_users(app, count: int, *, prefix: str = "bulk") -> list[uuid.UUID]:
    """Rows straight into the table (no password hashing: these accounts never sign in)."""
    with app.app_context():
        users = [
            User(email=f"{prefix}{i}-{uuid.uuid4().hex[:6]}@example.com", name=f"{prefix} {i}")
            for i in range(count)
        ]
        db.session.add_all(users)
        db.session.commit()
        ids = [u.id for u in users]
        db.session.remove()
        return ids


def _add_events(app, count: int) -> None:
    with app.app_context():
        db.session.add_all(AuditEvent(action="user.updated") for _ in range(count))
        db.session.commit()
        db.session.remove()


def _count(app, model) -> int:
    with app.app_context():
        total = db.session.scalar(select(func.count()).select_from(model))
        db.session.remove()
        return total


def _next_link(response) -> str | None:
    header = response.headers.get("Link")
    if header is None:
        return None
    match = LINK_NEXT.match(header)
    assert match, header
    return match["url"]


def _cursor(payload) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.fixture(params=[USERS, EVENTS], ids=["users", "audit-events"])
def listing(request, app, admin):
    """A list endpoint with 45 rows in total (the admin's own rows included)."""
    path = request.param
    if path == USERS:
        _add_users(app, 45 - _count(app, User))
    else:
        _add_events(app, 45 - _count(app, AuditEvent))
    return path


# --- limit -------------------------------------------------------------------------------


def test_the_default_page_holds_twenty_items(client, admin, listing):
    response = client.get(listing, headers=admin.headers)

    assert response.status_code == 200
    assert len(response.json["items"]) == 20
    assert response.json["next_cursor"]
    assert _next_link(response) is not None


def test_a_limit_of_one_hundred_is_allowed_and_returns_every_row(client, admin, listing):
    response = client.get(listing, query_string={"limit": 100}, headers=admin.headers)

    assert response.status_code == 200
    assert len(response.json["items"]) == 45
    assert response.json["next_cursor"] is None
    assert "Link" not in response.headers


@pytest.mark.parametrize("limit", ["101", "0", "-1", "ten"])
def test_a_limit_outside_one_to_one_hundred_is_422(client, admin, listing, limit):
    response = client.get(listing, query_string={"limit": limit}, headers=admin.headers)

    assert response.status_code == 422
    assert response.json["type"].endswith("/validation-failed")
    assert "limit" in response.json["errors"]


# --- cursor mode -------------------------------------------------------------------------


def test_following_next_links_visits_every_row_exactly_once(client, admin, listing):
    seen: list[str] = []
    url: str | None = f"{listing}?limit=7"
    pages = 0
    while url:
        response = client.get(url, headers=admin.headers)
        assert response.status_code == 200, response.json
        seen.extend(item["id"] for item in response.json["items"])
        url = _next_link(response)
        pages += 1
        if url is not None:
            assert response.json["next_cursor"] == parse_qs(urlsplit(url).query)["cursor"][0]
            assert parse_qs(urlsplit(url).query)["limit"] == ["7"]
        else:
            assert response.json["next_cursor"] is None

    assert pages == 7  # 6 full pages of 7 and a last page of 3
    assert len(seen) == len(set(seen)) == 45


def test_the_next_link_keeps_the_filters_and_sort(client, admin, app):
    _add_users(app, 5, prefix="keep")
    _add_users(app, 5, prefix="drop")

    first = client.get(
        USERS,
        query_string={"email": "keep", "sort": "email", "limit": 2},
        headers=admin.headers,
    )
    query = parse_qs(urlsplit(_next_link(first)).query)

    assert query["email"] == ["keep"]
    assert query["sort"] == ["email"]
    assert "offset" not in query
    emails = [i["email"] for i in first.json["items"]]
    url = _next_link(first)
    while url:
        page = client.get(url, headers=admin.headers)
        emails.extend(i["email"] for i in page.json["items"])
        url = _next_link(page)
    assert len(emails) == 5
    assert emails == sorted(emails)
    assert all(e.startswith("keep") for e in emails)


@pytest.mark.parametrize("sort", ["-created_at", "created_at", "email", "-email", "name"])
def test_a_cursor_walk_under_concurrent_inserts_never_repeats_or_skips_a_row(
    client, admin, app, sort
):
    original = set(map(str, _add_users(app, 30, prefix="orig"))) | {str(admin.id)}
    seen: list[str] = []
    url: str | None = f"{USERS}?limit=4&sort={sort}"
    inserted: set[str] = set()
    while url:
        response = client.get(url, headers=admin.headers)
        assert response.status_code == 200, response.json
        seen.extend(item["id"] for item in response.json["items"])
        url = _next_link(response)
        # Rows that sort before, between and after the current position arrive mid-walk.
        for prefix in ("a-new", "n-new", "z-new"):
            inserted |= set(map(str, _add_users(app, 1, prefix=prefix)))

    assert len(seen) == len(set(seen)), "a row appeared twice"
    assert original <= set(seen), "an original row was skipped"
    assert set(seen) <= original | inserted


def test_rows_inserted_during_an_oldest_first_walk_appear_at_its_end(client, admin, app):
    _add_users(app, 8)  # nine rows with the admin: pages of 5 and 4, then the late one
    first = client.get(
        USERS, query_string={"sort": "created_at", "limit": 5}, headers=admin.headers
    )
    [late] = _add_users(app, 1, prefix="late")

    second = client.get(_next_link(first), headers=admin.headers)

    ids = [i["id"] for i in second.json["items"]]
    assert ids[-1] == str(late)
    assert len(ids) == 5
    assert _next_link(second) is None


def test_a_garbage_cursor_is_422(client, admin, listing):
    for cursor in ("not-a-cursor!", "e30", _cursor({"a": 1}), _cursor(5), "%%%"):
        response = client.get(listing, query_string={"cursor": cursor}, headers=admin.headers)
        assert response.status_code == 422, cursor
        assert response.json["type"].endswith("/validation-failed")
        assert "cursor" in response.json["errors"]


def test_a_tampered_cursor_with_wrongly_typed_parts_is_422_not_500(client, admin, listing):
    now = datetime.now(UTC).isoformat()
    tampered = [
        _cursor(["-created_at", now, 5]),
        _cursor(["-created_at", now, ["x"]]),
        _cursor(["-created_at", now, "not-a-uuid"]),
        _cursor(["-created_at", 12345, str(uuid.uuid4())]),
        _cursor(["-created_at", "yesterday", str(uuid.uuid4())]),
        _cursor(["-created_at", "2024-01-01T00:00:00", str(uuid.uuid4())]),
        _cursor(["-created_at", now, str(uuid.uuid4()), "extra"]),
    ]
    for cursor in tampered:
        response = client.get(listing, query_string={"cursor": cursor}, headers=admin.headers)
        assert response.status_code == 422, (base64.urlsafe_b64decode(cursor + "=="), response.json)
        assert "cursor" in response.json["errors"]


def test_a_tampered_email_cursor_is_422_not_500(client, admin):
    tampered = [
        _cursor(["email", "a@example.com", 5]),
        _cursor(["email", ["a"], str(uuid.uuid4())]),
        _cursor(["email", None, str(uuid.uuid4())]),
    ]
    for cursor in tampered:
        response = client.get(
            USERS, query_string={"sort": "email", "cursor": cursor}, headers=admin.headers
        )
        assert response.status_code == 422, response.json
        assert "cursor" in response.json["errors"]


def test_a_cursor_from_another_sort_order_is_422(client, admin, app):
    _add_users(app, 5)
    by_email = client.get(USERS, query_string={"sort": "email", "limit": 2}, headers=admin.headers)
    cursor = by_email.json["next_cursor"]

    for sort in ("-created_at", "-email", "name"):
        response = client.get(
            USERS, query_string={"sort": sort, "cursor": cursor}, headers=admin.headers
        )
        assert response.status_code == 422, sort
        assert "cursor" in response.json["errors"]
    same = client.get(
        USERS, query_string={"sort": "email", "cursor": cursor}, headers=admin.headers
    )
    assert same.status_code == 200


def test_a_cursor_from_the_audit_list_is_refused_by_the_users_list_sorted_by_email(
    client, admin, app
):
    _add_events(app, 5)
    events = client.get(EVENTS, query_string={"limit": 2}, headers=admin.headers)
    cursor = events.json["next_cursor"]

    response = client.get(
        USERS, query_string={"cursor": cursor, "sort": "email"}, headers=admin.headers
    )

    assert response.status_code == 422


# --- offset mode -------------------------------------------------------------------------


def test_offset_mode_returns_the_total_and_a_next_link(client, admin, listing):
    first = client.get(listing, query_string={"offset": 0, "limit": 20}, headers=admin.headers)

    assert first.status_code == 200
    assert first.json["total"] == 45
    assert first.json["next_cursor"] is None
    assert len(first.json["items"]) == 20
    query = parse_qs(urlsplit(_next_link(first)).query)
    assert query["offset"] == ["20"]
    assert query["limit"] == ["20"]
    assert "cursor" not in query

    seen = [i["id"] for i in first.json["items"]]
    url = _next_link(first)
    while url:
        page = client.get(url, headers=admin.headers)
        assert page.json["total"] == 45
        seen.extend(i["id"] for i in page.json["items"])
        url = _next_link(page)
    assert len(seen) == len(set(seen)) == 45


def test_the_last_offset_page_has_no_next_link(client, admin, listing):
    response = client.get(listing, query_string={"offset": 40, "limit": 20}, headers=admin.headers)

    assert response.status_code == 200
    assert len(response.json["items"]) == 5
    assert response.json["total"] == 45
    assert "Link" not in response.headers


def test_an_offset_past_the_end_is_an_empty_page_with_the_total(client, admin, listing):
    response = client.get(listing, query_string={"offset": 500}, headers=admin.headers)

    assert response.status_code == 200
    assert response.json["items"] == []
    assert response.json["total"] == 45


def test_offset_mode_total_respects_filters(client, admin, app):
    _add_users(app, 3, prefix="match")
    _add_users(app, 4, prefix="other")

    response = client.get(
        USERS, query_string={"offset": 0, "email": "match"}, headers=admin.headers
    )

    assert response.json["total"] == 3


def test_a_negative_offset_is_422(client, admin, listing):
    response = client.get(listing, query_string={"offset": -1}, headers=admin.headers)

    assert response.status_code == 422
    assert "offset" in response.json["errors"]


def test_cursor_and_offset_together_are_422(client, admin, listing):
    cursor = client.get(listing, query_string={"limit": 5}, headers=admin.headers).json[
        "next_cursor"
    ]

    response = client.get(
        listing, query_string={"cursor": cursor, "offset": 5}, headers=admin.headers
    )

    assert response.status_code == 422
    assert response.json["type"].endswith("/validation-failed")
    assert "cursor" in response.json["errors"]


def test_the_audit_list_sorts_only_by_time(client, admin):
    oldest_first = client.get(EVENTS, query_string={"sort": "created_at"}, headers=admin.headers)
    by_action = client.get(EVENTS, query_string={"sort": "action"}, headers=admin.headers)

    assert oldest_first.status_code == 200
    assert by_action.status_code == 422
    assert "sort" in by_action.json["errors"]


def test_an_event_walk_under_concurrent_inserts_never_repeats_or_skips_an_event(client, admin, app):
    _add_events(app, 25)
    with app.app_context():
        original = {str(i) for i in db.session.scalars(select(AuditEvent.id))}
        db.session.remove()
    seen: list[str] = []
    url: str | None = f"{EVENTS}?limit=6"
    while url:
        response = client.get(url, headers=admin.headers)
        seen.extend(item["id"] for item in response.json["items"])
        url = _next_link(response)
        with app.app_context():
            db.session.add(
                AuditEvent(
                    action="user.updated", created_at=datetime.now(UTC) + timedelta(seconds=1)
                )
            )
            db.session.commit()
            db.session.remove()

    assert len(seen) == len(set(seen))
    assert original <= set(seen)
