"""The settings production runs with, given to every Gatehouse server the benchmark starts (and to
the bare app, which ignores them): the one place that says what "as production runs" means here,
printed in the report's header.

On top of the throwaway target's environment (`tests/support/throwaway.py`: `GATEHOUSE_ENV=
production`, real secrets and keys, PostgreSQL, Redis, its own `PROMETHEUS_MULTIPROC_DIR`, so the
HTTP metrics are on as in production), and of the rate-limit settings of each server
(`RATE_LIMITS_OFF`, `RATE_LIMITS_ON`).
"""

from __future__ import annotations

from tests.support.waiting import free_port
from webapp.config import Settings

# The origin of the deployment's web client: the benchmark sends it as a browser would.
WEB_CLIENT_ORIGIN = "https://app.example.com"


def shipped_default(field: str) -> str:
    """The default of a setting as the code ships it (`webapp/config/settings.py`; the ConfigMap
    does not set the access-log settings), as the environment would spell it."""
    value = Settings.model_fields[field].default
    return f"{value:g}" if isinstance(value, float) else str(value)


def production_settings(
    *, access_log_sample: float | None = None, access_log_slow_ms: float | None = None
) -> dict[str, str]:
    """Production's logging, CORS and tracing; the access-log sampling at the shipped defaults
    unless the runner's options say otherwise."""
    return {
        # As k8s/base/configmap.yaml ships it: access lines at the shipped sampling (every 4xx,
        # 5xx and slow request, a share of the rest), into the server's log file, never a terminal.
        "LOG_LEVEL": "INFO",
        "ACCESS_LOG_SAMPLE": (
            f"{access_log_sample:g}"
            if access_log_sample is not None
            else shipped_default("access_log_sample")
        ),
        "ACCESS_LOG_SLOW_MS": (
            f"{access_log_slow_ms:g}"
            if access_log_slow_ms is not None
            else shipped_default("access_log_slow_ms")
        ),
        # A deployment with a web client: CORS on, so requests carrying Origin get its headers.
        "CORS_ORIGINS": WEB_CLIENT_ORIGIN,
        # Tracing configured as in production, without a collector: spans are made, sampled and
        # batched, and their export fails against a port nobody listens on. The OpenTelemetry SDK
        # reads the two sampler variables itself.
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    }


# Capacity: the limiter off, with the opt-out production requires for it (and warns about).
RATE_LIMITS_OFF = {"RATELIMIT_ENABLED": "false", "UNSAFE_PRODUCTION_WITHOUT_RATELIMIT": "true"}

# As deployed: the limiter on with its Redis storage (REDIS_URL), each request counted as in
# production. The budget of /users/me (the default limit, per user) is raised so far that no
# request of the run is refused: what is measured is the counting, not refusals — and a run that
# was refused all the same stops the benchmark (`scenarios.refused_requests`).
UNREFUSED_BUDGET = "1000000000 per minute"
RATE_LIMITS_ON = {
    "RATELIMIT_ENABLED": "true",
    "UNSAFE_PRODUCTION_WITHOUT_RATELIMIT": "false",
    "RATELIMIT_DEFAULT": UNREFUSED_BUDGET,
}


def describe(settings: dict[str, str]) -> str:
    """The settings as the report's header shows them."""
    shown = []
    for name, value in settings.items():
        closed = " (closed: no collector)" if name == "OTEL_EXPORTER_OTLP_ENDPOINT" else ""
        shown.append(f"{name}={value}{closed}")
    return ", ".join(shown)
