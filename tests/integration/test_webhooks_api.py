"""/api/v1/webhooks: administrators subscribe endpoints; the secret is shown once and stored
encrypted; every change is audited; URLs are checked (docs/webhooks.md)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from webapp.audit.models import AuditEvent
from webapp.extensions import db
from webapp.webhooks.models import WebhookEndpoint

HOOKS = "/api/v1/webhooks/"


def audit_actions(app) -> list[str]:
    with app.app_context():
        query = select(AuditEvent.action).where(AuditEvent.action.like("webhook.%"))
        actions = list(db.session.scalars(query.order_by(AuditEvent.created_at)))
        db.session.remove()
        return actions


def create(client, admin, **fields):
    body = {"url": "https://hooks.example.com/gatehouse", **fields}
    return client.post(HOOKS, json=body, headers=admin.headers)


def test_only_administrators_manage_webhooks(client, member):
    assert client.get(HOOKS, headers=member.headers).status_code == 403
    assert create(client, member).status_code == 403
    assert client.get(HOOKS).status_code == 401


def test_create_shows_the_secret_once_and_stores_it_encrypted(client, admin, app):
    response = create(client, admin, event_types=["user.created", "user.deleted"])

    assert response.status_code == 201, response.json
    body = response.json
    assert body["secret"].startswith("whsec_")
    assert body["event_types"] == ["user.created", "user.deleted"]
    assert body["enabled"] is True
    assert response.headers["Location"].endswith(f"/api/v1/webhooks/{body['id']}")
    shown = client.get(f"{HOOKS}{body['id']}", headers=admin.headers)
    assert shown.status_code == 200
    assert "secret" not in shown.json
    assert all(
        "secret" not in item for item in client.get(HOOKS, headers=admin.headers).json["items"]
    )
    with app.app_context():
        row = db.session.get(WebhookEndpoint, body["id"])
        assert row.secret_encrypted.startswith("v1.")
        assert body["secret"] not in row.secret_encrypted
        db.session.remove()
    assert audit_actions(app) == ["webhook.created"]


def test_patch_and_delete_are_audited_and_honour_if_match(client, admin, app):
    created = create(client, admin).json
    url = f"{HOOKS}{created['id']}"
    etag = client.get(url, headers=admin.headers).headers["ETag"]

    patched = client.patch(
        url,
        json={"enabled": False, "description": "CRM sync", "event_types": []},
        headers={**admin.headers, "If-Match": etag},
    )
    stale = client.delete(url, headers={**admin.headers, "If-Match": etag})
    deleted = client.delete(url, headers=admin.headers)

    assert patched.status_code == 200, patched.json
    assert (patched.json["enabled"], patched.json["description"]) == (False, "CRM sync")
    assert stale.status_code == 412
    assert deleted.status_code == 204
    assert client.get(url, headers=admin.headers).status_code == 404
    assert audit_actions(app) == ["webhook.created", "webhook.updated", "webhook.deleted"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example.com/x", "https"),
        ("https://127.0.0.1/x", "loopback"),
        ("https://2130706433/x", "loopback"),
        ("https://0x7f000001/x", "loopback"),
        ("https://[::ffff:10.0.0.1]/x", "private"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://localhost:8443/x", "this machine"),
    ],
)
def test_plain_http_and_private_targets_are_refused(client, admin, app, url, reason):
    response = create(client, admin, url=url)

    assert response.status_code == 422
    assert reason in response.json["errors"]["url"][0]
    assert audit_actions(app) == []


def test_unknown_event_types_are_refused(client, admin):
    response = create(client, admin, event_types=["user.exploded"])

    assert response.status_code == 422


def test_private_targets_are_accepted_when_allowed(admin, make_app):
    client = make_app(webhook_allow_private=True).test_client()

    response = create(client, admin, url="http://127.0.0.1:9/hook")

    assert response.status_code == 201, response.json
