"""GET /api/v1/audit-events/ (administrators): what was recorded, filters, pagination."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from webapp.audit.models import AuditEvent
from webapp.audit.service import ACTIONS
from webapp.extensions import db

EVENTS = "/api/v1/audit-events/"
USERS = "/api/v1/users/"


def _items(response) -> list[dict]:
    assert response.status_code == 200, response.json
    return response.json["items"]


def _add_event(
    app, action: str, *, actor=None, target=None, api_key=None, at: datetime | None = None
):
    with app.app_context():
        event = AuditEvent(
            action=action,
            actor_id=actor,
            api_key_id=api_key,
            target_id=target,
            target_type="user",
        )
        if at is not None:
            event.created_at = at
        db.session.add(event)
        db.session.commit()
        event_id = event.id
        db.session.remove()
        return event_id


def test_audit_events_are_for_administrators_only(client, member):
    forbidden = client.get(EVENTS, headers=member.headers)
    anonymous = client.get(EVENTS)

    assert forbidden.status_code == 403
    assert forbidden.json["type"].endswith("/forbidden")
    assert anonymous.status_code == 401
    assert "WWW-Authenticate" in anonymous.headers


def test_an_admin_action_is_recorded_with_actor_target_ip_agent_and_request_id(
    client, admin, member
):
    response = client.patch(
        f"{USERS}{member.id}",
        json={"name": "Audited"},
        headers={
            **admin.headers,
            "User-Agent": "audit-test/1.0",
            "X-Request-ID": "req-audit-0001",
        },
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )
    assert response.status_code == 200

    [event] = _items(
        client.get(EVENTS, query_string={"action": "user.updated"}, headers=admin.headers)
    )

    assert event["actor_id"] == str(admin.id)
    assert event["target_type"] == "user"
    assert event["target_id"] == str(member.id)
    assert event["ip"] == "198.51.100.7"
    assert event["user_agent"] == "audit-test/1.0"
    assert event["request_id"] == "req-audit-0001"
    assert event["details"] == {"fields": ["name"]}
    assert event["api_key_id"] is None  # a signed-in human, no key
    assert datetime.fromisoformat(event["created_at"]).tzinfo is not None
    assert set(event) == {
        "id",
        "action",
        "actor_id",
        "api_key_id",
        "target_type",
        "target_id",
        "ip",
        "user_agent",
        "request_id",
        "details",
        "created_at",
    }


def test_events_come_newest_first(client, admin, app):
    old = _add_event(app, "user.updated", at=datetime(2020, 1, 1, tzinfo=UTC))
    new = _add_event(app, "user.updated", at=datetime(2030, 1, 1, tzinfo=UTC))

    items = _items(client.get(EVENTS, headers=admin.headers))

    assert items[0]["id"] == str(new)
    assert items[-1]["id"] == str(old)
    stamps = [item["created_at"] for item in items]
    assert stamps == sorted(stamps, reverse=True)


def test_filter_by_action(client, admin, app):
    _add_event(app, "user.deleted")
    _add_event(app, "user.deleted")
    _add_event(app, "session.revoked")

    items = _items(
        client.get(EVENTS, query_string={"action": "user.deleted"}, headers=admin.headers)
    )

    assert [item["action"] for item in items] == ["user.deleted", "user.deleted"]


def test_every_known_action_is_a_filter_that_returns_exactly_its_events(client, admin, app):
    ids = {action: _add_event(app, action) for action in ACTIONS}

    for action in ACTIONS:
        items = _items(
            client.get(EVENTS, query_string={"action": action, "limit": 100}, headers=admin.headers)
        )
        assert {item["action"] for item in items} == {action}, action
        assert str(ids[action]) in {item["id"] for item in items}, action


@pytest.mark.parametrize("action", ["user.exploded", "USER.CREATED", "user.*", ""])
def test_an_unknown_action_filter_is_422(client, admin, action):
    response = client.get(EVENTS, query_string={"action": action}, headers=admin.headers)

    assert response.status_code == 422
    assert response.json["type"].endswith("/validation-failed")
    assert "action" in response.json["errors"]


def test_filter_by_actor_and_by_target(client, admin, app):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    by_alice = _add_event(app, "user.updated", actor=alice, target=bob)
    on_alice = _add_event(app, "user.updated", actor=bob, target=alice)

    actor = _items(client.get(EVENTS, query_string={"actor_id": str(alice)}, headers=admin.headers))
    target = _items(
        client.get(EVENTS, query_string={"target_id": str(alice)}, headers=admin.headers)
    )
    both = _items(
        client.get(
            EVENTS,
            query_string={"actor_id": str(alice), "target_id": str(alice)},
            headers=admin.headers,
        )
    )

    assert [e["id"] for e in actor] == [str(by_alice)]
    assert [e["id"] for e in target] == [str(on_alice)]
    assert both == []


def test_filter_by_api_key(client, admin, app):
    owner, key, other_key = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    through_key = _add_event(app, "user.updated", actor=owner, api_key=key)
    _add_event(app, "user.updated", actor=owner, api_key=other_key)
    _add_event(app, "user.updated", actor=owner)

    items = _items(client.get(EVENTS, query_string={"api_key_id": str(key)}, headers=admin.headers))

    assert [(e["id"], e["api_key_id"]) for e in items] == [(str(through_key), str(key))]


@pytest.mark.parametrize("field", ["actor_id", "api_key_id", "target_id"])
def test_a_malformed_id_filter_is_422(client, admin, field):
    response = client.get(EVENTS, query_string={field: "not-a-uuid"}, headers=admin.headers)

    assert response.status_code == 422
    assert field in response.json["errors"]


def test_filter_by_time_range(client, admin, app):
    _add_event(app, "user.updated", at=datetime(2024, 1, 1, tzinfo=UTC))
    june = _add_event(app, "user.updated", at=datetime(2024, 6, 1, tzinfo=UTC))
    _add_event(app, "user.updated", at=datetime(2024, 12, 1, tzinfo=UTC))

    window = _items(
        client.get(
            EVENTS,
            query_string={
                "action": "user.updated",
                "created_after": "2024-06-01T00:00:00+00:00",
                "created_before": "2024-12-01T00:00:00+00:00",
            },
            headers=admin.headers,
        )
    )
    naive = client.get(
        EVENTS, query_string={"created_before": "2024-12-01T00:00:00"}, headers=admin.headers
    )

    assert [e["id"] for e in window] == [str(june)]
    assert naive.status_code == 422


def test_a_filtered_cursor_walk_visits_every_matching_event_once(client, admin, app):
    target = uuid.uuid4()
    expected = {str(_add_event(app, "user.updated", target=target)) for _ in range(11)}
    for _ in range(5):
        _add_event(app, "user.updated", target=uuid.uuid4())

    seen: list[str] = []
    params = {"target_id": str(target), "limit": 4}
    while True:
        response = client.get(EVENTS, query_string=params, headers=admin.headers)
        seen.extend(e["id"] for e in _items(response))
        if response.json["next_cursor"] is None:
            assert "Link" not in response.headers
            break
        assert f"target_id={target}" in response.headers["Link"]
        params = {**params, "cursor": response.json["next_cursor"]}

    assert len(seen) == len(set(seen)) == 11
    assert set(seen) == expected


def test_events_of_identical_time_are_ordered_by_id_and_paged_without_loss(client, admin, app):
    at = datetime(2024, 3, 3, tzinfo=UTC)
    ids = {str(_add_event(app, "user.deleted", at=at)) for _ in range(7)}

    seen: list[str] = []
    params = {"action": "user.deleted", "limit": 3}
    while True:
        response = client.get(EVENTS, query_string=params, headers=admin.headers)
        seen.extend(e["id"] for e in _items(response))
        if response.json["next_cursor"] is None:
            break
        params = {**params, "cursor": response.json["next_cursor"]}

    assert seen == sorted(ids, reverse=True)


def test_an_action_and_its_audit_event_commit_together(client, admin, member, app):
    """A refused action (412) leaves no event behind; a successful one leaves exactly one."""
    refused = client.delete(f"{USERS}{member.id}", headers={**admin.headers, "If-Match": '"stale"'})
    assert refused.status_code == 412
    assert (
        _items(client.get(EVENTS, query_string={"action": "user.deleted"}, headers=admin.headers))
        == []
    )

    assert client.delete(f"{USERS}{member.id}", headers=admin.headers).status_code == 204
    [event] = _items(
        client.get(EVENTS, query_string={"action": "user.deleted"}, headers=admin.headers)
    )
    assert event["target_id"] == str(member.id)


def test_events_stay_readable_after_their_actor_and_target_are_deleted(
    client, admin, make_user, app
):
    doomed = make_user()
    client.patch("/api/v1/users/me", json={"name": "Soon gone"}, headers=doomed.headers)
    with app.app_context():
        db.session.execute(update(AuditEvent).values(details={"kept": True}))
        db.session.commit()
        db.session.remove()

    assert client.delete(f"{USERS}{doomed.id}", headers=admin.headers).status_code == 204

    own = _items(
        client.get(EVENTS, query_string={"actor_id": str(doomed.id)}, headers=admin.headers)
    )
    assert {e["action"] for e in own} == {"auth.login_succeeded", "user.updated"}
    assert all(e["details"] == {"kept": True} for e in own)
