"""Provider verification: the pacts of tests/contract/pacts/ replayed against the real service.

The web app's interactions go to `gunicorn -c gunicorn.conf.py wsgi:app` on the migrated test
database, with the test-only provider-state hook mounted (`GATEHOUSE_ENV=test`,
`PACT_PROVIDER_STATES=true`): before each interaction the verifier posts its provider state to
`/_pact/provider-states`, which sets it up through the service functions and answers the values
(tokens) the interaction's requests use. The webhook receiver's messages are produced by the
real event-building code: the same provider states, set up in this process on the same database,
write their domain events (`webapp.events`), and each message is the envelope as a webhook
delivers it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from pact import Verifier
from pact.types import Message
from sqlalchemy import select

from tests.support.contracts import (
    PACT_DIR,
    PROVIDER,
    STATE_HOOK,
    WEB_APP,
    WEBHOOK_RECEIVER,
    pact_path,
)
from tests.support.gunicorn import serve
from webapp.events.models import DomainEvent
from webapp.extensions import db
from webapp.provider_states import states


def verify(verifier: Verifier) -> dict[str, Any]:
    """Run the verification; on a mismatch fail with the verifier's own report."""
    try:
        verifier.verify()
    except RuntimeError as exc:
        raise AssertionError(f"{exc}\n{verifier.output(strip_ansi=True)}") from None
    return verifier.results


def web_app_verifier(port: int) -> Verifier:
    """A verifier of the web app's pact against the server on `port`, setting each
    interaction's provider state up through the server's state hook."""
    base = f"http://127.0.0.1:{port}"
    return (
        Verifier(PROVIDER, host="127.0.0.1")
        .add_source(PACT_DIR)
        .filter_consumers(WEB_APP)
        .add_transport(url=base)
        .state_handler(base + STATE_HOOK, body=True)
    )


def test_the_api_honours_the_web_app_contract(
    app: Flask, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    interactions = len(json.loads(pact_path(WEB_APP).read_text())["interactions"])
    with serve(
        database_url,
        redis_url,
        tmp_path,
        GATEHOUSE_ENV="test",
        PACT_PROVIDER_STATES="true",
    ) as (_, port):
        verifier = web_app_verifier(port).set_error_on_empty_pact()
        results = verify(verifier)
    assert results["result"], verifier.output(strip_ansi=True)
    assert verified(results) == interactions > 0


def test_without_the_hook_the_states_cannot_be_set_up(
    app: Flask, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    """The same server without PACT_PROVIDER_STATES: the hook is not there, so no interaction
    that needs an account can pass (the verification depends on its states being real)."""
    with serve(database_url, redis_url, tmp_path, GATEHOUSE_ENV="test") as (_, port):
        verifier = web_app_verifier(port)
        with pytest.raises(RuntimeError):
            verifier.verify()
    assert verified(verifier.results) == 0


def verified(results: dict[str, Any]) -> int:
    """How many interactions the verifier replayed and found as expected."""
    return sum(1 for entry in results["interactionResults"] if entry["result"] == "OK")


# The event each message of the receiver's pact is (by its description).
MESSAGES = {
    "a user.created event": "user.created",
    "a user.deleted event": "user.deleted",
    "a session.revoked event": "session.revoked",
}


def test_the_events_honour_the_webhook_receiver_contract(app: Flask) -> None:
    interactions = len(json.loads(pact_path(WEBHOOK_RECEIVER).read_text())["interactions"])

    def set_up(state: str, action: str, parameters: dict[str, Any] | None) -> None:
        if action == "setup":
            with app.app_context():
                states.set_up(db.session, state, parameters or {})
                db.session.remove()

    def produce(name: str) -> Message:
        """The newest event of the message's type, as written by the state's setup: the
        envelope exactly as a webhook delivers it (`domain_events.envelope`)."""
        with app.app_context():
            event = db.session.scalars(
                select(DomainEvent)
                .where(DomainEvent.type == MESSAGES[name])
                .order_by(DomainEvent.created_at.desc())
            ).first()
            db.session.remove()
        assert event is not None, f"the provider state wrote no {MESSAGES[name]} event"
        return Message(
            contents=json.dumps(event.envelope).encode(),
            metadata={"contentType": "application/json"},
            content_type="application/json",
        )

    verifier = (
        Verifier(PROVIDER)
        .add_source(PACT_DIR)
        .filter_consumers(WEBHOOK_RECEIVER)
        .state_handler(set_up, teardown=True)
        .message_handler(produce)
        .set_error_on_empty_pact()
    )
    results = verify(verifier)
    assert verified(results) == interactions > 0
