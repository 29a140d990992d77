"""`flask --app wsgi webhooks purge`: apply WEBHOOK_RETENTION to the domain events and the
webhook delivery log (a daily cron job; see docs/webhooks.md)."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from webapp.extensions import db
from webapp.webhooks import retention

webhooks_cli = AppGroup("webhooks", help="Domain events and webhook deliveries.")


@webhooks_cli.command("purge")
def purge() -> None:
    """Delete domain events and delivery-log entries older than WEBHOOK_RETENTION (events a
    delivery still waits for are kept)."""
    purged = retention.purge(db.session)
    click.echo(
        f"deleted {purged.events} domain event(s) and {purged.attempts} delivery attempt(s) "
        f"older than {purged.before.isoformat()}; kept {purged.kept_pending} still pending"
    )
