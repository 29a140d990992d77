"""Small readers of database state shared by several test modules."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from webapp.audit.models import AuditEvent
from webapp.extensions import db


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
