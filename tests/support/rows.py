"""Readers of committed database state: rows and audit events, detached and safe to read."""

from __future__ import annotations

import uuid
from typing import TypeVar

from flask import Flask
from sqlalchemy import select

from webapp.audit.models import AuditEvent
from webapp.extensions import db

Row = TypeVar("Row")


def audit_events(app: Flask, action: str) -> list[AuditEvent]:
    """The committed audit events of one action, oldest first (detached, safe to read)."""
    with app.app_context():
        rows = list(
            db.session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == action)
                .order_by(AuditEvent.created_at)
            )
        )
        db.session.expunge_all()
        db.session.remove()
        return rows


def stored_row(app: Flask, model: type[Row], row_id: uuid.UUID) -> Row:
    """One committed row, read in a session of its own and detached (safe to read afterwards)."""
    with app.app_context():
        row = db.session.get(model, row_id)
        assert row is not None
        db.session.expunge(row)
        db.session.remove()
    return row
