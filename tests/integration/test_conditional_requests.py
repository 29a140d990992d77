"""ETag, If-None-Match (304) and If-Match (412) on /api/v1/users/{id} and /api/v1/users/me."""

from __future__ import annotations

from sqlalchemy import func, select

from webapp.audit.models import AuditEvent
from webapp.extensions import db
from webapp.users.models import User

USERS = "/api/v1/users/"
ME = "/api/v1/users/me"


def _state(app, user_id) -> tuple[str, str, bool, int] | None:
    with app.app_context():
        user = db.session.get(User, user_id)
        state = None if user is None else (user.name, user.role, user.active, user.version)
        db.session.remove()
        return state


def _event_count(app) -> int:
    with app.app_context():
        count = db.session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action.in_(["user.updated", "user.role_changed", "user.deleted"]))
        )
        db.session.remove()
        return count


def _with(headers, **extra):
    return {**headers, **{k.replace("_", "-"): v for k, v in extra.items()}}


# --- ETag and If-None-Match --------------------------------------------------------------


def test_get_user_by_id_returns_an_etag_and_if_none_match_gives_304(client, admin, member):
    first = client.get(f"{USERS}{member.id}", headers=admin.headers)
    etag = first.headers["ETag"]

    again = client.get(f"{USERS}{member.id}", headers=_with(admin.headers, If_None_Match=etag))

    assert first.status_code == 200
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert again.status_code == 304
    assert again.get_data() == b""
    assert again.headers["ETag"] == etag


def test_get_me_returns_the_same_etag_as_get_by_id_and_honours_if_none_match(client, member):
    me = client.get(ME, headers=member.headers)
    by_id = client.get(f"{USERS}{member.id}", headers=member.headers)

    assert me.headers["ETag"] == by_id.headers["ETag"]
    again = client.get(ME, headers=_with(member.headers, If_None_Match=me.headers["ETag"]))
    assert again.status_code == 304
    assert again.get_data() == b""


def test_if_none_match_accepts_a_list_and_weak_forms(client, admin, member):
    etag = client.get(f"{USERS}{member.id}", headers=admin.headers).headers["ETag"]

    for header in (f'"other", {etag}', f"W/{etag}", "*"):
        response = client.get(
            f"{USERS}{member.id}", headers=_with(admin.headers, If_None_Match=header)
        )
        assert response.status_code == 304, header


def test_an_etag_that_no_longer_matches_gives_the_full_body(client, admin, member):
    old = client.get(f"{USERS}{member.id}", headers=admin.headers).headers["ETag"]
    client.patch(f"{USERS}{member.id}", json={"name": "Changed"}, headers=admin.headers)

    by_id = client.get(f"{USERS}{member.id}", headers=_with(admin.headers, If_None_Match=old))
    me = client.get(ME, headers=_with(member.headers, If_None_Match=old))

    assert by_id.status_code == 200
    assert by_id.json["name"] == "Changed"
    assert by_id.headers["ETag"] != old
    assert me.status_code == 200
    assert me.json["name"] == "Changed"
    assert me.headers["ETag"] == by_id.headers["ETag"]


# --- If-Match: stale → 412, nothing changes ----------------------------------------------


def test_patch_with_a_stale_if_match_is_412_and_changes_nothing(client, admin, member, app):
    stale = client.get(f"{USERS}{member.id}", headers=admin.headers).headers["ETag"]
    client.patch(f"{USERS}{member.id}", json={"name": "Second"}, headers=admin.headers)
    before, events = _state(app, member.id), _event_count(app)

    response = client.patch(
        f"{USERS}{member.id}", json={"name": "Third"}, headers=_with(admin.headers, If_Match=stale)
    )

    assert response.status_code == 412
    assert response.json["type"].endswith("/precondition-failed")
    assert _state(app, member.id) == before
    assert before[0] == "Second"
    assert _event_count(app) == events


def test_patch_me_with_a_stale_if_match_is_412(client, member, app):
    stale = client.get(ME, headers=member.headers).headers["ETag"]
    client.patch(ME, json={"name": "Second"}, headers=member.headers)

    response = client.patch(
        ME, json={"name": "Third"}, headers=_with(member.headers, If_Match=stale)
    )

    assert response.status_code == 412
    assert response.json["type"].endswith("/precondition-failed")
    assert _state(app, member.id)[0] == "Second"


def test_put_with_a_stale_if_match_is_412_and_changes_nothing(client, admin, member, app):
    body = {"email": member.email, "name": "Put", "role": "admin", "active": False}
    before, events = _state(app, member.id), _event_count(app)

    response = client.put(
        f"{USERS}{member.id}", json=body, headers=_with(admin.headers, If_Match='"stale.1"')
    )

    assert response.status_code == 412
    assert response.json["type"].endswith("/precondition-failed")
    assert _state(app, member.id) == before
    assert _event_count(app) == events
    assert client.get(ME, headers=member.headers).status_code == 200  # not deactivated


def test_delete_with_a_stale_if_match_is_412_and_the_user_remains(client, admin, member, app):
    stale = client.get(f"{USERS}{member.id}", headers=admin.headers).headers["ETag"]
    client.patch(f"{USERS}{member.id}", json={"name": "Moved on"}, headers=admin.headers)

    response = client.delete(f"{USERS}{member.id}", headers=_with(admin.headers, If_Match=stale))

    assert response.status_code == 412
    assert response.json["type"].endswith("/precondition-failed")
    assert _state(app, member.id) is not None
    assert client.get(ME, headers=member.headers).status_code == 200


def test_role_change_with_a_stale_if_match_is_412(client, admin, member, app):
    response = client.put(
        f"{USERS}{member.id}/role",
        json={"role": "admin"},
        headers=_with(admin.headers, If_Match='"nope"'),
    )

    assert response.status_code == 412
    assert _state(app, member.id)[1] == "user"


def test_a_weak_etag_never_satisfies_if_match(client, admin, member, app):
    etag = client.get(f"{USERS}{member.id}", headers=admin.headers).headers["ETag"]

    response = client.patch(
        f"{USERS}{member.id}",
        json={"name": "Weak"},
        headers=_with(admin.headers, If_Match=f"W/{etag}"),
    )

    assert response.status_code == 412
    assert _state(app, member.id)[0] == "Test User"


# --- If-Match: current → success and a new ETag ------------------------------------------


def test_patch_with_the_current_if_match_succeeds_and_returns_a_new_etag(client, admin, member):
    etag = client.get(f"{USERS}{member.id}", headers=admin.headers).headers["ETag"]

    response = client.patch(
        f"{USERS}{member.id}", json={"name": "Fresh"}, headers=_with(admin.headers, If_Match=etag)
    )

    assert response.status_code == 200
    assert response.json["name"] == "Fresh"
    new = response.headers["ETag"]
    assert new != etag
    assert client.get(f"{USERS}{member.id}", headers=admin.headers).headers["ETag"] == new
    # The new ETag is itself a valid precondition for the next write.
    follow_up = client.patch(
        f"{USERS}{member.id}", json={"name": "Fresher"}, headers=_with(admin.headers, If_Match=new)
    )
    assert follow_up.status_code == 200


def test_patch_me_with_the_current_if_match_succeeds(client, member):
    etag = client.get(ME, headers=member.headers).headers["ETag"]

    response = client.patch(ME, json={"name": "Mine"}, headers=_with(member.headers, If_Match=etag))

    assert response.status_code == 200
    assert response.headers["ETag"] not in (None, etag)
    assert client.get(ME, headers=member.headers).headers["ETag"] == response.headers["ETag"]


def test_put_and_role_change_with_the_current_if_match_succeed(client, admin, member):
    etag = client.get(f"{USERS}{member.id}", headers=admin.headers).headers["ETag"]
    body = {"email": member.email, "name": "Put", "role": "user", "active": True}

    put = client.put(f"{USERS}{member.id}", json=body, headers=_with(admin.headers, If_Match=etag))
    role = client.put(
        f"{USERS}{member.id}/role",
        json={"role": "admin"},
        headers=_with(admin.headers, If_Match=put.headers["ETag"]),
    )

    assert put.status_code == 200
    assert put.headers["ETag"] != etag
    assert role.status_code == 200
    assert role.headers["ETag"] != put.headers["ETag"]


def test_delete_with_the_current_if_match_or_a_star_succeeds(client, admin, make_user, app):
    first, second = make_user(login=False), make_user(login=False)
    etag = client.get(f"{USERS}{first.id}", headers=admin.headers).headers["ETag"]

    by_etag = client.delete(f"{USERS}{first.id}", headers=_with(admin.headers, If_Match=etag))
    by_star = client.delete(f"{USERS}{second.id}", headers=_with(admin.headers, If_Match="*"))

    assert (by_etag.status_code, by_star.status_code) == (204, 204)
    assert _state(app, first.id) is None
    assert _state(app, second.id) is None


def test_if_match_with_a_list_containing_the_current_etag_succeeds(client, admin, member):
    etag = client.get(f"{USERS}{member.id}", headers=admin.headers).headers["ETag"]

    response = client.patch(
        f"{USERS}{member.id}",
        json={"name": "Listed"},
        headers=_with(admin.headers, If_Match=f'"old.1", {etag}'),
    )

    assert response.status_code == 200


# --- no If-Match: still works (no 428) ---------------------------------------------------


def test_writes_without_if_match_work(client, admin, member, make_user, app):
    victim = make_user(login=False)
    body = {"email": member.email, "name": "Put", "role": "user", "active": True}

    responses = [
        client.patch(ME, json={"name": "Self"}, headers=member.headers),
        client.patch(f"{USERS}{member.id}", json={"name": "Admin"}, headers=admin.headers),
        client.put(f"{USERS}{member.id}", json=body, headers=admin.headers),
        client.put(f"{USERS}{member.id}/role", json={"role": "admin"}, headers=admin.headers),
        client.delete(f"{USERS}{victim.id}", headers=admin.headers),
    ]

    assert [r.status_code for r in responses] == [200, 200, 200, 200, 204]
    assert _state(app, member.id)[:2] == ("Put", "admin")
