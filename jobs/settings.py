"""The job workers' settings: email delivery (SMTP, sender) and how jobs are scheduled and run.

`JobsSettings` is declared like `webapp.config.Settings` (the same base, `DeclaredSettings`): one
field per variable, with its type, default, bounds and help text, from which README's jobs table
is generated. The settings the workers share with the API (database, Redis, logging,
`PUBLIC_BASE_URL`) stay in `Settings`.

The composition root (`webapp.factory.create_app`) builds both at start-up, so a bad `SMTP_URL`
stops the API as well as a worker with one line naming the variable, and keeps these settings in
the application with `init_app`. Code of this package reaches them one way:
`current_jobs_settings()` inside an application, `jobs_settings_of(app)` in set-up code handed the
app; the dispatcher, the mailer and a delivery take them as an argument.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, current_app
from pydantic import Field, field_validator

from jobs.health import DEFAULT_FILE as DEFAULT_LIVENESS_FILE
from webapp.config import DeclaredSettings

# Where `init_app` keeps an application's jobs settings (beside webapp's `GATEHOUSE`).
APP_CONFIG_KEY = "GATEHOUSE_JOBS"


class JobsSettings(DeclaredSettings):
    """Every setting read by the `jobs` package only, one declaration each."""

    # -- Email delivery --------------------------------------------------------------------------
    smtp_url: str = Field(
        default="smtp://localhost:1025",
        description="mail server for the workers (`smtp://` or `smtps://`, credentials may be in "
        "the URL)",
        json_schema_extra={"shown_default": "`smtp://localhost:1025` (`make run`: its mail sink)"},
    )
    smtp_starttls: bool = Field(
        default=False, description="upgrade `smtp://` connections with STARTTLS"
    )
    smtp_username: str | None = Field(default=None, description="SMTP authentication user")
    smtp_password: str | None = Field(default=None, description="SMTP authentication password")
    smtp_timeout: float = Field(default=10.0, gt=0, description="seconds per SMTP operation")
    smtp_breaker_fail_max: int = Field(
        default=5, gt=0, description="circuit breaker: consecutive connection failures that open it"
    )
    smtp_breaker_reset_timeout: float = Field(
        default=30.0, gt=0, description="circuit breaker: seconds before it tries the server again"
    )
    mail_from: str = Field(
        default="Gatehouse <no-reply@gatehouse.local>", description="sender of every email"
    )

    # -- Background jobs -------------------------------------------------------------------------
    jobs_max_retries: int = Field(
        default=5,
        ge=0,
        description="retries of an email after its first try before it is dead-lettered "
        "(5: six tries in all)",
    )
    jobs_retry_backoff: float = Field(
        default=10.0,
        gt=0,
        description="first retry delay in seconds (doubles each try, ±20 % jitter, capped at 1 h)",
    )
    jobs_lease: float = Field(
        default=300.0,
        gt=0,
        description="seconds after which an enqueued but unsent message is enqueued again",
    )
    jobs_dispatch_interval: float = Field(
        default=1.0, gt=0, description="seconds between outbox dispatcher runs"
    )
    jobs_batch_size: int = Field(
        default=50, gt=0, description="emails per batch job on the `low` queue"
    )
    jobs_worker_max_jobs: int = Field(
        default=1000,
        gt=0,
        description="jobs a worker's job process runs before it is replaced by a fresh one",
    )
    jobs_worker_max_memory_mb: int = Field(
        default=512,
        gt=0,
        description="resident memory after which a job process is replaced (after its job)",
    )
    jobs_liveness_file: str = Field(
        default=DEFAULT_LIVENESS_FILE,
        min_length=1,
        description="file in which a worker's job loop records until when it counts as alive; "
        "`python -m jobs.health` (the liveness probe) reads it",
    )

    # -- Webhook delivery ------------------------------------------------------------------------
    webhook_endpoint_concurrency: int = Field(
        default=1,
        ge=1,
        le=100,
        description="deliveries in flight at once per webhook endpoint; with `1` an endpoint "
        "gets its events in order (docs/webhooks.md)",
    )
    webhook_disable_after: int = Field(
        default=259200,
        gt=0,
        description="seconds an endpoint's deliveries may fail without a single success before "
        "it is disabled and the administrators are emailed",
        json_schema_extra={"shown_default": "`259200` (3 days)"},
    )

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url_shape(cls, value: str) -> str:
        smtp = urlsplit(value)
        if smtp.scheme not in ("smtp", "smtps") or not smtp.hostname:
            # The URL may hold credentials: the message never echoes it.
            raise ValueError("must look like smtp://host:port or smtps://host:port")
        return value


def init_app(app: Flask, settings: JobsSettings) -> None:
    """Keep `settings` in `app` for the functions below (the composition root calls this)."""
    app.config[APP_CONFIG_KEY] = settings


def jobs_settings_of(app: Flask) -> JobsSettings:
    """The jobs settings an application was built with (set-up code handed the app itself)."""
    settings: JobsSettings = app.config[APP_CONFIG_KEY]
    return settings


def current_jobs_settings() -> JobsSettings:
    """The jobs settings of the application in context (job functions, CLI commands, views)."""
    return jobs_settings_of(current_app)
