"""`flask --app wsgi oauth create-client ...`: register a client from the command line (the first
client of a new installation needs no administrator session), printing its secret once.
`flask --app wsgi oauth purge`: the provider's housekeeping (a daily cron job)."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from webapp.context import SYSTEM
from webapp.errors import DomainError
from webapp.extensions import db
from webapp.oauth import housekeeping, service
from webapp.oauth.metadata import AUTH_METHODS, GRANT_TYPES

oauth_cli = AppGroup("oauth", help="Manage OAuth / OpenID Connect clients.")


@oauth_cli.command("create-client")
@click.option("--name", "client_name", required=True, help="client_name, shown to users.")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Repeat for several.")
@click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True)
@click.option(
    "--grant-type",
    "grant_types",
    multiple=True,
    type=click.Choice(GRANT_TYPES),
    help="Repeat for several (default: authorization_code).",
)
@click.option("--scope", default="", help="Space-separated: openid profile email.")
@click.option(
    "--auth-method",
    "token_endpoint_auth_method",
    type=click.Choice(AUTH_METHODS),
    default="client_secret_basic",
    show_default=True,
    help="token_endpoint_auth_method (`none`: a public client, no secret).",
)
@click.option("--first-party", is_flag=True, help="The operator's own client: no consent.")
def create_client(
    client_name: str,
    redirect_uris: tuple[str, ...],
    post_logout_redirect_uris: tuple[str, ...],
    grant_types: tuple[str, ...],
    scope: str,
    token_endpoint_auth_method: str,
    first_party: bool,
) -> None:
    """Register a client; its client_id and (confidential clients) client_secret are printed,
    the secret this once."""
    try:
        issued = service.create_client(
            db.session,
            SYSTEM,
            client_name=client_name,
            redirect_uris=list(redirect_uris),
            post_logout_redirect_uris=list(post_logout_redirect_uris),
            grant_types=list(grant_types) or list(service.DEFAULTS["grant_types"]),
            scope=scope,
            token_endpoint_auth_method=token_endpoint_auth_method,
            first_party=first_party,
        )
    except DomainError as exc:
        details = "; ".join(f"{k}: {m}" for k, msgs in (exc.errors or {}).items() for m in msgs)
        raise click.ClickException(f"{exc.detail} {details}".strip()) from None
    click.echo(f"client_id: {issued.client.client_id}")
    if issued.client_secret is not None:
        click.echo(f"client_secret: {issued.client_secret}")
        click.echo("The secret is shown this once: store it now.")


@oauth_cli.command("purge")
def purge() -> None:
    """Delete authorization codes expired, and browser sessions ended, over a day ago (a daily
    cron job)."""
    purged = housekeeping.purge(db.session)
    click.echo(
        f"deleted {purged.codes} authorization code(s) and {purged.browser_sessions} browser "
        f"session(s) over before {purged.before.isoformat()}"
    )
