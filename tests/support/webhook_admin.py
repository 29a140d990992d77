"""Webhook administration in the tests: an app whose SSRF guard lets deliveries reach the local
receiver, subscribing through the API, a change that emits an event, the webhook outbox rows,
making waiting deliveries due, and running deliveries until none is due."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from tests.support.accounts import Account
from webapp.db import aware, utcnow
from webapp.extensions import db
from webapp.outbox.models import ENQUEUED, PENDING, OutboxMessage
from webapp.webhooks.fanout import fan_out_pending
from webapp.webhooks.models import WebhookEndpoint

HOOKS = "/api/v1/webhooks/"


@pytest.fixture
def hooks_app(make_app: Callable[..., Flask]) -> Iterator[Flask]:
    application = make_app(webhook_allow_private=True)
    yield application
    with application.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


def subscribe(application: Flask, admin: Account, url: str, **fields: Any) -> dict[str, Any]:
    response = application.test_client().post(
        HOOKS, json={"url": url, **fields}, headers=admin.headers
    )
    assert response.status_code == 201, response.json
    body: dict[str, Any] = response.json
    return body


def subscribe_to_updates(
    application: Flask, admin: Account, url: str, **fields: Any
) -> dict[str, Any]:
    """Subscribe to `user.updated` alone (unless `fields` names the types): the event `rename`
    emits, so that no other event of the test reaches the receiver."""
    fields.setdefault("event_types", ["user.updated"])
    return subscribe(application, admin, url, **fields)


def rename(application: Flask, admin: Account, user_id: uuid.UUID, name: str) -> None:
    """A change that emits a `user.updated` event."""
    response = application.test_client().patch(
        f"/api/v1/users/{user_id}", json={"name": name}, headers=admin.headers
    )
    assert response.status_code == 200, response.json


def webhook_rows(application: Flask, endpoint_id: str | None = None) -> list[OutboxMessage]:
    """The webhook outbox messages (of one endpoint), in event order (detached); the key breaks
    ties between messages written in one fan-out."""
    with application.app_context():
        query = select(OutboxMessage).where(OutboxMessage.template == "webhook")
        if endpoint_id:
            query = query.where(OutboxMessage.recipient == endpoint_id)
        rows = list(
            db.session.scalars(
                query.order_by(OutboxMessage.created_at, OutboxMessage.idempotency_key)
            )
        )
        db.session.expunge_all()
        db.session.remove()
        return rows


def fan_out(application: Flask) -> int:
    """What the dispatcher does first: write the deliveries of the events committed so far;
    returns how many events it fanned out."""
    with application.app_context():
        count = fan_out_pending(db.session)
        db.session.remove()
        return count


def make_due(application: Flask, *only: uuid.UUID) -> None:
    """Pending messages (or those of `only`) due now: their wait or backoff is over."""
    with application.app_context():
        statement = update(OutboxMessage).where(OutboxMessage.status == PENDING)
        if only:
            statement = statement.where(OutboxMessage.id.in_(only))
        db.session.execute(statement.values(available_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        db.session.remove()


def set_endpoint(application: Flask, endpoint_id: str, **values: Any) -> None:
    """Write columns of an endpoint's row directly (to move its rotation back in time)."""
    with application.app_context():
        db.session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == uuid.UUID(endpoint_id))
            .values(**values)
        )
        db.session.commit()
        db.session.remove()


@pytest.fixture
def deliver_webhooks(work_jobs: Callable[..., int]) -> Callable[[Flask], None]:
    """Dispatch and work jobs until no webhook message is due or in flight (the emails the
    accounts queued are left to fail on their own: these apps have no SMTP server)."""

    def run(application: Flask) -> None:
        for _ in range(50):
            work_jobs(application, until_idle=False)
            now = utcnow()
            open_rows = [
                row
                for row in webhook_rows(application)
                if row.status == ENQUEUED
                or (row.status == PENDING and aware(row.available_at) <= now)
            ]
            if not open_rows:
                return
        raise AssertionError("webhook deliveries still open")

    return run


def api_key_of(application: Flask, account: Account) -> str:
    """An API key of `account` holding a scope: webhooks refuse every key all the same."""
    response = application.test_client().post(
        "/api/v1/api-keys/", json={"name": "ops", "scopes": ["users:list"]}, headers=account.headers
    )
    assert response.status_code == 201, response.json
    key: str = response.json["key"]
    return key
