"""The variables read around the application rather than by a settings class; the README's third
configuration table is generated from `PROCESS_VARIABLES`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessVariable:
    """A variable read around the application rather than by a settings class: by gunicorn.conf.py
    before any application exists, by the job worker's metrics endpoint, by a CLI command, or by a
    library itself (`reader`: which one; the code never reads it)."""

    name: str
    default: str
    meaning: str
    reader: str | None = None


PROCESS_VARIABLES: tuple[ProcessVariable, ...] = (
    ProcessVariable("PORT", "`8000`", "gunicorn listens on `0.0.0.0:$PORT` unless `BIND` is set"),
    ProcessVariable("BIND", "`0.0.0.0:$PORT`", "gunicorn listen address"),
    ProcessVariable("GUNICORN_THREADS", "`4`", "threads per gunicorn worker"),
    ProcessVariable("GUNICORN_TIMEOUT", "`30`", "seconds before gunicorn restarts a silent worker"),
    ProcessVariable(
        "GUNICORN_GRACEFUL_TIMEOUT", "`25`", "seconds a stopping worker may finish its requests"
    ),
    ProcessVariable("GUNICORN_KEEPALIVE", "`5`", "seconds an idle keep-alive connection is kept"),
    ProcessVariable(
        "GUNICORN_MAX_REQUESTS", "`0` (never)", "requests after which a worker is replaced"
    ),
    ProcessVariable(
        "METRICS_ADDR",
        "`0.0.0.0`",
        "the interface `/metrics` listens on when `METRICS_PORT` is set",
    ),
    ProcessVariable(
        "PROMETHEUS_MULTIPROC_DIR",
        "a fresh temporary directory per gunicorn master",
        "where processes write metric samples; set it (per process group) for the worker too",
    ),
    ProcessVariable(
        "GATEHOUSE_ADMIN_PASSWORD",
        "unset",
        "password for `users create-admin` (otherwise prompted)",
    ),
    ProcessVariable(
        "OTEL_TRACES_SAMPLER",
        "`parentbased_always_on` (every trace)",
        "which traces are recorded while tracing is on (`OTEL_EXPORTER_OTLP_ENDPOINT`); "
        "`parentbased_traceidratio` keeps the share `OTEL_TRACES_SAMPLER_ARG` of new traces and "
        "follows the caller's decision for a request that carries a `traceparent` (decided once "
        "per request at the WSGI edge)",
        reader="the OpenTelemetry SDK",
    ),
    ProcessVariable(
        "OTEL_TRACES_SAMPLER_ARG",
        "`1.0` for the ratio samplers",
        "the sampler's argument; for `parentbased_traceidratio`, the share of new traces kept "
        "(the shipped ConfigMap: `0.1`)",
        reader="the OpenTelemetry SDK",
    ),
)
