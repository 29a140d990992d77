"""GET /api/v1/users/ (administrators): filters and sort orders."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update

from webapp.extensions import db
from webapp.users.models import User

USERS = "/api/v1/users/"


def _emails(response) -> list[str]:
    assert response.status_code == 200, response.json
    return [item["email"] for item in response.json["items"]]


def _set_created_at(app, user_id, when: datetime) -> None:
    with app.app_context():
        db.session.execute(update(User).where(User.id == user_id).values(created_at=when))
        db.session.commit()
        db.session.remove()


def test_listing_users_needs_the_admin_role(client, member):
    response = client.get(USERS, headers=member.headers)

    assert response.status_code == 403
    assert response.json["type"].endswith("/forbidden")


def test_listing_users_anonymously_is_401(client):
    response = client.get(USERS)

    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers


def test_admin_lists_every_user_newest_first_by_default(client, admin, make_user, app):
    a = make_user(email="a@example.com", login=False)
    b = make_user(email="b@example.com", login=False)
    _set_created_at(app, admin.id, datetime(2024, 1, 1, tzinfo=UTC))
    _set_created_at(app, a.id, datetime(2024, 1, 2, tzinfo=UTC))
    _set_created_at(app, b.id, datetime(2024, 1, 3, tzinfo=UTC))

    response = client.get(USERS, headers=admin.headers)

    assert _emails(response) == ["b@example.com", "a@example.com", admin.email]
    assert response.json["next_cursor"] is None
    assert response.json["total"] is None
    assert "Link" not in response.headers
    assert response.json["items"][0]["role"] == "user"
    assert "password_hash" not in response.json["items"][0]


def test_email_filter_is_a_case_insensitive_substring(client, admin, make_user):
    make_user(email="Ada.Lovelace@Example.com", login=False)
    make_user(email="grace@example.com", login=False)
    make_user(email="LOVELACE2@other.org", login=False)

    response = client.get(USERS, query_string={"email": "loveLACE"}, headers=admin.headers)

    assert sorted(_emails(response)) == ["Ada.Lovelace@Example.com", "LOVELACE2@other.org"]


def test_email_filter_treats_like_wildcards_literally(client, admin, make_user):
    make_user(email="under_score@example.com", login=False)
    make_user(email="underXscore@example.com", login=False)
    make_user(email="percent@example.com", login=False)

    underscore = client.get(USERS, query_string={"email": "r_s"}, headers=admin.headers)
    percent = client.get(USERS, query_string={"email": "%"}, headers=admin.headers)

    assert _emails(underscore) == ["under_score@example.com"]
    assert _emails(percent) == []


def test_role_filter_returns_only_that_role(client, admin, make_user):
    other_admin = make_user("admin", login=False)
    make_user("user", login=False)

    admins = client.get(USERS, query_string={"role": "admin"}, headers=admin.headers)
    users = client.get(USERS, query_string={"role": "user"}, headers=admin.headers)

    assert sorted(_emails(admins)) == sorted([admin.email, other_admin.email])
    assert {item["role"] for item in users.json["items"]} == {"user"}
    assert len(users.json["items"]) == 1


def test_unknown_role_filter_is_422(client, admin):
    response = client.get(USERS, query_string={"role": "superuser"}, headers=admin.headers)

    assert response.status_code == 422
    assert "role" in response.json["errors"]


def test_active_filter_separates_active_from_deactivated_users(client, admin, make_user):
    gone = make_user(email="gone@example.com", login=False)
    make_user(email="here@example.com", login=False)
    assert (
        client.patch(f"{USERS}{gone.id}", json={"active": False}, headers=admin.headers).status_code
        == 200
    )

    inactive = client.get(USERS, query_string={"active": "false"}, headers=admin.headers)
    active = client.get(USERS, query_string={"active": "true"}, headers=admin.headers)

    assert _emails(inactive) == ["gone@example.com"]
    assert sorted(_emails(active)) == sorted(["here@example.com", admin.email])


def test_created_after_is_inclusive_and_created_before_is_exclusive(client, admin, make_user, app):
    old = make_user(email="old@example.com", login=False)
    mid = make_user(email="mid@example.com", login=False)
    new = make_user(email="new@example.com", login=False)
    _set_created_at(app, admin.id, datetime(2020, 1, 1, tzinfo=UTC))
    _set_created_at(app, old.id, datetime(2024, 1, 1, tzinfo=UTC))
    _set_created_at(app, mid.id, datetime(2024, 6, 1, tzinfo=UTC))
    _set_created_at(app, new.id, datetime(2025, 1, 1, tzinfo=UTC))

    after = client.get(
        USERS, query_string={"created_after": "2024-06-01T00:00:00+00:00"}, headers=admin.headers
    )
    before = client.get(
        USERS, query_string={"created_before": "2024-06-01T00:00:00Z"}, headers=admin.headers
    )
    window = client.get(
        USERS,
        query_string={
            "created_after": "2023-12-31T23:00:00-01:00",
            "created_before": "2025-01-01T00:00:00+00:00",
        },
        headers=admin.headers,
    )

    assert _emails(after) == ["new@example.com", "mid@example.com"]
    assert _emails(before) == ["old@example.com", admin.email]
    assert _emails(window) == ["mid@example.com", "old@example.com"]


def test_a_created_after_without_a_timezone_is_422(client, admin):
    response = client.get(
        USERS, query_string={"created_after": "2024-01-01T00:00:00"}, headers=admin.headers
    )

    assert response.status_code == 422
    assert "created_after" in response.json["errors"]


def test_filters_combine(client, admin, make_user):
    make_user("admin", email="boss@acme.test", login=False)
    make_user("user", email="worker@acme.test", login=False)
    make_user("admin", email="boss@other.test", login=False)

    response = client.get(
        USERS, query_string={"email": "acme", "role": "admin"}, headers=admin.headers
    )

    assert _emails(response) == ["boss@acme.test"]


def test_sort_by_email_ascending_and_descending(client, admin, make_user):
    for email in ("m@example.com", "c@example.com", "x@example.com"):
        make_user(email=email, login=False)
    expected = sorted(["m@example.com", "c@example.com", "x@example.com", admin.email])

    ascending = client.get(USERS, query_string={"sort": "email"}, headers=admin.headers)
    descending = client.get(USERS, query_string={"sort": "-email"}, headers=admin.headers)

    assert _emails(ascending) == expected
    assert _emails(descending) == expected[::-1]


def test_sort_by_name(client, admin, make_user):
    make_user(email="z@example.com", name="Alice", login=False)
    make_user(email="y@example.com", name="Zed", login=False)
    make_user(email="x@example.com", name="Mallory", login=False)

    response = client.get(
        USERS, query_string={"sort": "name", "role": "user"}, headers=admin.headers
    )

    assert [item["name"] for item in response.json["items"]] == ["Alice", "Mallory", "Zed"]


def test_sort_by_created_at_ascending_and_descending(client, admin, make_user, app):
    first = make_user(email="first@example.com", login=False)
    second = make_user(email="second@example.com", login=False)
    _set_created_at(app, admin.id, datetime(2024, 1, 1, tzinfo=UTC))
    _set_created_at(app, first.id, datetime(2024, 2, 1, tzinfo=UTC))
    _set_created_at(app, second.id, datetime(2024, 3, 1, tzinfo=UTC))

    ascending = client.get(USERS, query_string={"sort": "created_at"}, headers=admin.headers)
    descending = client.get(USERS, query_string={"sort": "-created_at"}, headers=admin.headers)

    assert _emails(ascending) == [admin.email, "first@example.com", "second@example.com"]
    assert _emails(descending) == ["second@example.com", "first@example.com", admin.email]


def test_an_unknown_sort_is_422_naming_the_choices(client, admin):
    for sort in ("password_hash", "-role", "created_at,email"):
        response = client.get(USERS, query_string={"sort": sort}, headers=admin.headers)
        assert response.status_code == 422, sort
        assert response.json["type"].endswith("/validation-failed")
        assert "sort" in response.json["errors"]
        assert "-created_at" in response.json["errors"]["sort"][0]
