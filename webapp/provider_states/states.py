"""What each provider state of the contracts (tests/contract/pacts/) means, set up through the
same service functions the API calls, so that the verification exercises the real rules. Each
setup first removes any account holding the email it is given, so states can follow each other
in one database without a reset. A setup returns the values the verification substitutes into
the consumer's requests (Pact's `fromProviderState` generators): tokens the consumer could not
know beforehand."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from webapp.auth import email_tokens, sessions
from webapp.auth import service as auth
from webapp.auth.signups import find_user_by_email
from webapp.auth.tokens import decode_access_token
from webapp.context import Origin
from webapp.db import DbSession
from webapp.errors import NotFound, ValidationFailed
from webapp.outbox.models import OutboxMessage
from webapp.outbox.sealing import open_payload
from webapp.users import service as users

# Where the state hook's actions come from in the audit trail.
ORIGIN = Origin(ip="127.0.0.1", user_agent="pact-provider-states")

Values = dict[str, str]
Setup = Callable[[DbSession, dict[str, Any]], Values]


def _text(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise ValidationFailed(
            f"The provider state needs the parameter {name!r}.", errors={name: ["required"]}
        )
    return value


def no_account(db: DbSession, params: dict[str, Any]) -> Values:
    """No account uses `email` (one that does is deleted, as an administrator would)."""
    user = find_user_by_email(db, _text(params, "email"))
    if user is not None:
        users.delete_user(db, ORIGIN, user.id)
    return {}


def unverified_account(db: DbSession, params: dict[str, Any]) -> Values:
    """A sign-up of `email` (password `password`) not yet verified; `token` is the verification
    token of the email the sign-up queued, read from the outbox as the mail worker reads it."""
    no_account(db, params)
    user = auth.register(
        db,
        ORIGIN,
        email=_text(params, "email"),
        password=_text(params, "password"),
        name=str(params.get("name") or "Ada"),
    )
    message = db.scalars(
        select(OutboxMessage)
        .where(
            OutboxMessage.template == email_tokens.VERIFY_EMAIL,
            OutboxMessage.recipient == user.email,
        )
        .order_by(OutboxMessage.created_at.desc())
    ).first()
    assert message is not None, "a sign-up queues its verification email"
    token = open_payload(message.payload, message.id)["token"]
    return {"user_id": str(user.id), "token": str(token)}


def verified_account(db: DbSession, params: dict[str, Any]) -> Values:
    """A verified account of `email` with password `password` (created as an administrator
    creates one: an account with a password starts verified)."""
    no_account(db, params)
    user = users.create_user(
        db,
        ORIGIN,
        email=_text(params, "email"),
        name=str(params.get("name") or "Ada"),
        password=_text(params, "password"),
    )
    return {"user_id": str(user.id)}


def signed_in_account(db: DbSession, params: dict[str, Any]) -> Values:
    """`verified_account`, signed in: its tokens and session."""
    values = verified_account(db, params)
    pair = auth.login(db, ORIGIN, email=_text(params, "email"), password=_text(params, "password"))
    assert isinstance(pair, auth.TokenPair), "no second factor is enrolled"
    claims = decode_access_token(pair.access_token)
    return {
        **values,
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "session_id": str(claims["sid"]),
    }


def deleted_account(db: DbSession, params: dict[str, Any]) -> Values:
    """`verified_account`, then deleted by an administrator."""
    values = verified_account(db, params)
    users.delete_user(db, ORIGIN, uuid.UUID(values["user_id"]))
    return values


def signed_out_account(db: DbSession, params: dict[str, Any]) -> Values:
    """`signed_in_account`, then signed out (its session revoked with reason `logout`)."""
    values = signed_in_account(db, params)
    session_id = uuid.UUID(values["session_id"])
    sessions.logout(db, ORIGIN.acting_as(uuid.UUID(values["user_id"])), session_id)
    return values


# The state names exactly as the consumers wrote them in their pacts.
STATES: dict[str, Setup] = {
    "no account uses the email": no_account,
    "an unverified sign-up with a known verification token": unverified_account,
    "an account that signed up": unverified_account,
    "a verified account with a known password": verified_account,
    "a signed-in account": signed_in_account,
    "an account that an administrator deleted": deleted_account,
    "a signed-in account that signed out": signed_out_account,
}


def set_up(db: DbSession, state: str, params: dict[str, Any]) -> Values:
    """Bring the provider into `state`; 404 `not-found` for a state no setup is known for."""
    setup = STATES.get(state)
    if setup is None:
        raise NotFound(f"No provider state is named {state!r}.")
    return setup(db, params)
