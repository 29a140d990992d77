"""`flask --app wsgi jobs ...`: the worker, the dispatcher, and dead letters (list, replay)."""

from __future__ import annotations

import uuid

import click
import redis
from flask import current_app
from flask.cli import AppGroup

from jobs import dead_letters, queues, worker
from jobs.dispatcher import dispatch
from jobs.settings import current_jobs_settings
from webapp.config import Settings, current_settings
from webapp.errors import DomainError
from webapp.extensions import db

jobs_cli = AppGroup("jobs", help="Background jobs: the worker, the outbox, dead letters.")


def _connection(settings: Settings) -> redis.Redis:
    if not settings.redis_url:
        raise click.ClickException("REDIS_URL must be set")
    return queues.connect(settings.redis_url, socket_timeout=5)


def _connection_or_none(settings: Settings) -> redis.Redis | None:
    """Dead letters are in the database; Redis is only needed to enqueue at once."""
    connection = _connection(settings)
    try:
        connection.ping()
    except redis.RedisError as exc:
        click.echo(
            f"warning: redis unreachable ({exc.__class__.__name__}); the dispatcher "
            "will enqueue the replayed messages when it is back",
            err=True,
        )
        return None
    return connection


@jobs_cli.command("worker")
@click.option("--burst", is_flag=True, help="Dispatch once, work until the queues are empty, exit.")
@click.option("--no-dispatcher", is_flag=True, help="Do not run the outbox dispatcher.")
@click.option(
    "--queues",
    "queue_names",
    default=",".join(queues.QUEUES),
    show_default=True,
    help="Comma-separated queues, highest priority first.",
)
@click.option("--name", default=None, help="Worker name (default: random).")
@click.option(
    "--in-process",
    is_flag=True,
    help="Run jobs in this process: no supervised job process, no recycling.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    envvar="METRICS_PORT",
    default=None,
    help="Serve /metrics on this port (env METRICS_PORT; off when unset).",
)
def worker_command(
    burst: bool,
    no_dispatcher: bool,
    queue_names: str,
    name: str | None,
    in_process: bool,
    metrics_port: int | None,
) -> None:
    """Run an RQ worker on high, default, low, with the outbox dispatcher beside it."""
    names = [q.strip() for q in queue_names.split(",") if q.strip()]
    unknown = [q for q in names if q not in queues.QUEUES]
    if unknown or not names:
        raise click.BadParameter(f"queues must be among {', '.join(queues.QUEUES)}")
    try:
        worker.run(
            # current_app is typed as the Flask app it stands for, not as the proxy it is.
            current_app._get_current_object(),  # type: ignore[attr-defined]
            burst=burst,
            with_dispatcher=not no_dispatcher,
            queue_names=names,
            name=name,
            in_process=in_process,
            metrics_port=metrics_port,
        )
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


@jobs_cli.command("dispatch")
def dispatch_command() -> None:
    """Move due outbox messages to their queues once."""
    report = dispatch(db.session, _connection(current_settings()), current_jobs_settings())
    click.echo(str(report))
    if report.error:
        raise SystemExit(1)


@jobs_cli.command("failed")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100))
def failed_command(limit: int) -> None:
    """List dead letters (messages that failed their last try), newest first."""
    page = dead_letters.list_dead(db.session, _connection_or_none(current_settings()), limit=limit)
    if not page.items:
        click.echo("no failed jobs")
        return
    for item in page.items:
        registry = {True: "in failed registry", False: "not in redis", None: "redis unknown"}
        click.echo(
            f"{item.id}  {item.queue:<7} {item.template:<15} tries={item.attempts} "
            f"dead_at={item.dead_at:%Y-%m-%d %H:%M:%S} ({registry[item.in_failed_registry]})\n"
            f"    {item.last_error or ''}"
        )


@jobs_cli.command("replay")
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
@click.argument("job_id", required=False)
def replay_command(replay_all: bool, job_id: str | None) -> None:
    """Put dead letters back on their queues: one JOB_ID, or --all."""
    if replay_all == bool(job_id):
        raise click.UsageError("give a JOB_ID or --all (not both)")
    connection = _connection_or_none(current_settings())
    settings = current_jobs_settings()
    if replay_all:
        count = dead_letters.requeue_all(db.session, connection, settings)
        click.echo(f"replayed {count} failed jobs")
        return
    assert job_id is not None
    try:
        message_id = uuid.UUID(job_id)
    except ValueError:
        raise click.BadParameter(f"{job_id!r} is not a job id", param_hint="JOB_ID") from None
    try:
        result = dead_letters.requeue(db.session, connection, settings, message_id)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"replayed {result.id} ({result.status})")
