"""Refresh tokens in the tests: moving their use back in time, past a reuse grace window."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from sqlalchemy import update

from webapp.auth.models import RefreshToken
from webapp.db import utcnow
from webapp.extensions import db


def backdate_used_refresh_tokens(app: Flask, seconds: int) -> None:
    """Every refresh token already used counts as used `seconds` ago (the same for the API's
    tokens and the OAuth provider's: one table)."""
    with app.app_context():
        db.session.execute(
            update(RefreshToken)
            .where(RefreshToken.used_at.is_not(None))
            .values(used_at=utcnow() - timedelta(seconds=seconds))
        )
        db.session.commit()
        db.session.remove()
