"""The webhook receiver's contract with the events (consumer `webhook-receiver`): the CloudEvents
it acts on — an account created, an account deleted, a session ended — as Pact messages. Each
test hands the message Pact generates from the expectations to the receiver's own handler
(`receive_event`), so the pact holds only what the receiver really reads. The provider side
produces each message from the real event-building code (tests/contract/provider)."""

from __future__ import annotations

from pathlib import Path

from pact import Pact, match

from tests.support.contracts import (
    PROVIDER,
    WEBHOOK_RECEIVER,
    Action,
    assert_same_contract,
    receive_event,
)

EMAIL = "ada@example.com"
PASSWORD = "pale-Orbit-93-lantern"
UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
TIME = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"
USER_ID = "5d3c9a1e-8b7f-4c2d-9e6a-1f0b2c3d4e5f"
SESSION_ID = "9a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9"
EVENT_ID = "0193a6f2-5c1e-7d0a-9b8e-2f1c3d4e5f60"


def envelope(event_type: str, subject: str, data: dict[str, object]) -> dict[str, object]:
    """A CloudEvents 1.0 event as the receiver reads it: exact where it branches (version, type,
    schema), by type or pattern where values vary."""
    return {
        "specversion": "1.0",
        "id": match.regex(EVENT_ID, regex=UUID),
        "source": match.regex("https://id.example", regex=r"^https?://[^/\s]+(/\S*)?$"),
        "type": event_type,
        "subject": match.regex(subject, regex=UUID),
        "time": match.regex("2026-12-03T13:45:02.123456Z", regex=TIME),
        "datacontenttype": "application/json",
        "dataschema": f"urn:gatehouse:events:{event_type}:v1",
        "data": {"user_id": match.regex(USER_ID, regex=UUID), **data},
    }


def received(pact: Pact) -> list[Action]:
    """The receiver's actions on the pact's messages (a handler's error fails the test)."""
    actions: list[Action] = []
    pact.verify(lambda body, meta: actions.append(receive_event(body, meta)), "Async")
    return actions


def expect_account_created(pact: Pact) -> None:
    data = {
        "email": match.str(EMAIL),
        "name": match.str("Ada"),
        "role": match.str("user"),
        "active": match.bool(True),
        "email_verified": match.bool(False),
        "via": "signup",
    }
    (
        pact.upon_receiving("a user.created event", "Async")
        .given("an account that signed up", email=EMAIL, password=PASSWORD)
        .with_body(envelope("user.created", USER_ID, data), content_type="application/json")
    )


def expect_account_deleted(pact: Pact) -> None:
    data = {"email": match.str(EMAIL)}
    (
        pact.upon_receiving("a user.deleted event", "Async")
        .given("an account that an administrator deleted", email=EMAIL, password=PASSWORD)
        .with_body(envelope("user.deleted", USER_ID, data), content_type="application/json")
    )


def expect_session_ended(pact: Pact) -> None:
    data = {"session_id": match.regex(SESSION_ID, regex=UUID), "reason": "logout"}
    (
        pact.upon_receiving("a session.revoked event", "Async")
        .given("a signed-in account that signed out", email=EMAIL, password=PASSWORD)
        .with_body(envelope("session.revoked", SESSION_ID, data), content_type="application/json")
    )


def test_the_receiver_acts_on_each_event(tmp_path: Path) -> None:
    pact = Pact(WEBHOOK_RECEIVER, PROVIDER).with_specification("V4")
    for expect in (expect_account_created, expect_account_deleted, expect_session_ended):
        expect(pact)
    assert sorted((a.kind, a.user_id, a.subject) for a in received(pact)) == [
        ("end_session", USER_ID, SESSION_ID),
        ("erase", USER_ID, USER_ID),
        ("provision", USER_ID, USER_ID),
    ]
    pact.write_file(tmp_path)
    assert_same_contract(tmp_path, WEBHOOK_RECEIVER)
