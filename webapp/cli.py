"""`flask --app wsgi ...` commands for administrators: users, signing keys, outbox (dev), OAuth
clients (`webapp.oauth.cli`), webhooks retention (`webapp.webhooks.cli`)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from marshmallow import ValidationError, validate

from webapp.auth import signups
from webapp.config import DEV_KEYS_FILE, current_settings
from webapp.context import SYSTEM
from webapp.db import utcnow
from webapp.errors import DomainError
from webapp.extensions import db
from webapp.http import idempotency_records
from webapp.oauth.cli import oauth_cli
from webapp.outbox import service as outbox
from webapp.outbox.models import SENT
from webapp.outbox.sealing import open_payload, scrubbed
from webapp.security import encryption
from webapp.security.encryption import EncryptionKeyError, new_key_entry
from webapp.security.keys import KeyRing
from webapp.users import service as users
from webapp.webhooks.cli import webhooks_cli

users_cli = AppGroup("users", help="Manage user accounts.")
keys_cli = AppGroup("keys", help="Manage signing and encryption keys.")
outbox_cli = AppGroup("outbox", help="Inspect the email outbox.")
idempotency_cli = AppGroup("idempotency", help="The remembered Idempotency-Key replies.")


@users_cli.command("create-admin")
@click.option("--email", required=True)
@click.option("--name", default="Administrator", show_default=True)
def create_admin(email: str, name: str) -> None:
    """Create an administrator (password from GATEHOUSE_ADMIN_PASSWORD or a prompt)."""
    try:  # the rule the API applies to emails (the service trusts its callers to have checked)
        validate.And(validate.Email(), validate.Length(max=320))(email)
    except ValidationError:
        raise click.BadParameter("not a valid email address", param_hint="--email") from None
    password = os.environ.get("GATEHOUSE_ADMIN_PASSWORD") or click.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    try:
        user = users.create_user(
            db.session, SYSTEM, email=email, name=name, password=password, role="admin"
        )
    except DomainError as exc:
        details = "; ".join(m for msgs in (exc.errors or {}).values() for m in msgs)
        raise click.ClickException(f"{exc.detail} {details}".strip()) from None
    click.echo(f"created administrator {user.email} ({user.id})")


@users_cli.command("purge-expired-signups")
def purge_expired_signups() -> None:
    """Delete sign-ups never verified within UNVERIFIED_ACCOUNT_TTL (and never signed in).
    Optional: registering an address already frees it from an expired sign-up."""
    count = signups.purge_expired(db.session)
    click.echo(f"deleted {count} expired sign-up(s)")


@idempotency_cli.command("purge")
def purge_idempotency() -> None:
    """Delete the replies remembered longer than IDEMPOTENCY_TTL (a daily cron job: the
    housekeeping CronJob runs it)."""
    count = idempotency_records.purge_expired(db.session, ttl=current_settings().idempotency_ttl)
    click.echo(f"deleted {count} idempotency record(s) older than IDEMPOTENCY_TTL")


@keys_cli.command("rotate-signing")
@click.option("--alg", type=click.Choice(["RS256", "EdDSA"]), default=None)
def rotate_signing(alg: str | None) -> None:
    """Promote the published next key to signer and publish a new next key.

    With JWT_KEYS_FILE the file is rewritten in place; with JWT_KEYS the new JWK Set is printed
    for you to store where JWT_KEYS comes from. Restart (or roll) the API afterwards.
    """
    settings = current_settings()
    ring: KeyRing = current_app.extensions["gatehouse_keyring"]
    rotated = ring.rotated(alg)
    document = json.dumps(rotated.to_jwks(), indent=2)
    target = settings.jwt_keys_file
    if target is None and not settings.jwt_keys:
        target = DEV_KEYS_FILE
    if target:
        path = Path(target)
        temp = path.with_suffix(".tmp")
        temp.write_text(document)
        temp.chmod(0o600)
        temp.replace(path)
        if rotated.signing_key.kid == ring.signing_key.kid:
            # A ring without a published next key only gains one: it must be published first.
            click.echo(
                f"published next key {rotated.next_key.kid if rotated.next_key else '?'}; "
                f"{ring.signing_key.kid} still signs. Run again after JWKS_MAX_AGE to switch. "
                f"Keys written to {path}"
            )
        else:
            click.echo(f"rotated: {rotated.signing_key.kid} signs now; keys written to {path}")
    else:
        sys.stdout.write(document + "\n")


@keys_cli.command("rotate-encryption")
@click.option("--batch-size", default=500, show_default=True)
def rotate_encryption(batch_size: int) -> None:
    """Re-encrypt every encrypted column under the first key of ENCRYPTION_KEYS.

    Put the new key first in ENCRYPTION_KEYS (keep the old ones after it), roll the service, run
    this, then remove the old keys. Safe to run again or while serving (batches, rows locked).
    """
    ring = encryption.keyring()
    try:
        counts = encryption.rotate_all(db.engine, db.metadata, batch_size=batch_size)
    except encryption.DecryptionError as exc:
        raise click.ClickException(
            f"{exc} — is the key that encrypted it still in ENCRYPTION_KEYS?"
        ) from None
    for column, count in counts.items():
        click.echo(f"{column}: {count} re-encrypted")
    click.echo(f"every encrypted value is now under key {ring.primary_kid!r}")


@keys_cli.command("new-encryption-key")
@click.option("--kid", required=True, help="Key id (1-32 of A-Z a-z 0-9 _ -).")
def new_encryption_key(kid: str) -> None:
    """Print a new `kid:base64key` entry to put first in ENCRYPTION_KEYS."""
    try:
        click.echo(new_key_entry(kid))
    except EncryptionKeyError as exc:
        raise click.BadParameter(str(exc), param_hint="--kid") from None


@outbox_cli.command("print")
@click.option("--follow", is_flag=True, help="Keep polling (development mail sink).")
@click.option("--interval", default=1.0, show_default=True)
def print_outbox(follow: bool, interval: float) -> None:
    """Development only: print pending outbox emails (with their links) and mark them sent."""
    if current_settings().is_production:
        raise click.ClickException("outbox print is a development mail sink; not in production")
    while True:
        for message in outbox.pending(db.session):
            click.echo(
                f"--- email {message.template} to {message.recipient}\n"
                + json.dumps(open_payload(message.payload, message.id), indent=2)
            )
            message.status = SENT
            message.sent_at = utcnow()
            message.payload = scrubbed(message.payload)
        db.session.commit()
        if not follow:
            return
        time.sleep(interval)


def init_app(app: Flask) -> None:
    for group in (users_cli, keys_cli, outbox_cli, idempotency_cli, oauth_cli, webhooks_cli):
        app.cli.add_command(group)
