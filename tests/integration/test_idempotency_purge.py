"""`flask idempotency purge`: remembered Idempotency-Key replies older than IDEMPOTENCY_TTL are
deleted (a key never used again stayed for ever), younger ones kept and still replayed."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from webapp.db import utcnow
from webapp.extensions import db
from webapp.http import idempotency, idempotency_records
from webapp.http.idempotency_records import IdempotencyRecord

KEYS = "/api/v1/api-keys/"


def create_key(client, account, name: str, key: str):
    return client.post(
        KEYS,
        json={"name": name, "scopes": ["users:read"]},
        headers={**account.headers, "Idempotency-Key": key},
    )


def keys_remembered(app) -> set[str]:
    with app.app_context():
        keys = set(db.session.scalars(select(IdempotencyRecord.key)))
        db.session.remove()
        return keys


def test_the_purge_deletes_expired_replies_and_keeps_the_others(app, client, member, monkeypatch):
    for n in range(5):
        assert create_key(client, member, f"key {n}", f"idem-{n}").status_code == 201
    with app.app_context():
        db.session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key.in_(["idem-0", "idem-1", "idem-2"]))
            .values(created_at=utcnow() - timedelta(days=2))
        )
        db.session.commit()
        db.session.remove()
    monkeypatch.setattr(idempotency_records, "PURGE_BATCH", 2)  # several batches

    result = app.test_cli_runner().invoke(args=["idempotency", "purge"])

    assert result.exit_code == 0, result.output
    assert "deleted 3 idempotency record(s)" in result.output
    assert keys_remembered(app) == {"idem-3", "idem-4"}
    # A kept key still replays its first reply.
    again = create_key(client, member, "key 4", "idem-4")
    assert again.status_code == 201
    assert again.headers[idempotency.REPLAYED_HEADER] == "true"
