"""Accounts of the tests: created through the service layer, signed in through the API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from webapp.auth.models import AuthSession
from webapp.db import utcnow
from webapp.extensions import db

STRONG_PASSWORD = "pale-Orbit-93-lantern"
STALE = 16 * 60  # older than REAUTH_MAX_AGE (300 s): a token stolen a quarter of an hour ago


@dataclass
class Account:
    id: uuid.UUID
    email: str
    password: str
    role: str
    access_token: str = ""
    refresh_token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def log_in(client: FlaskClient, account: Account) -> None:
    """Sign `account` in with its password; its access and refresh tokens are set."""
    response = client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": account.password}
    )
    assert response.status_code == 200, response.get_json()
    account.access_token = response.json["access_token"]
    account.refresh_token = response.json["refresh_token"]


def age_sessions(app: Flask, user_id: uuid.UUID, seconds: int = STALE) -> None:
    """Move the last password check of every session of the user `seconds` into the past."""
    with app.app_context():
        db.session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == user_id)
            .values(auth_time=utcnow() - timedelta(seconds=seconds))
        )
        db.session.commit()
        db.session.remove()


@pytest.fixture
def make_user(app: Flask, client: FlaskClient) -> Callable[..., Account]:
    """Create a verified account through the service layer and sign it in through the API."""
    from webapp.context import SYSTEM
    from webapp.users import service

    counter = iter(range(1_000_000))

    def build(
        role: str = "user",
        *,
        email: str | None = None,
        password: str = STRONG_PASSWORD,
        login: bool = True,
        name: str = "Test User",
    ) -> Account:
        email = email or f"{role}{next(counter)}-{uuid.uuid4().hex[:6]}@example.com"
        with app.app_context():
            user = service.create_user(
                db.session, SYSTEM, email=email, name=name, password=password, role=role
            )
            account = Account(user.id, email, password, role)
            db.session.remove()
        if login:
            log_in(client, account)
        return account

    return build


@pytest.fixture
def admin(make_user: Callable[..., Account]) -> Account:
    return make_user("admin")


@pytest.fixture
def member(make_user: Callable[..., Account]) -> Account:
    return make_user("user")
