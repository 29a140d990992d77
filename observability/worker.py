"""The job worker's own `/metrics` endpoint (Prometheus job `gatehouse-worker`).

The API exposes its samples through Flask; the worker has no HTTP server, so it calls
`serve_metrics()` once at start-up and prometheus_client serves the exposition from a daemon thread
on `METRICS_PORT` (default 9100; `METRICS_ADDR` picks the interface, default all of them).

Multiprocess mode: the worker runs its jobs in a forked job process (replaced after a number of
jobs, `jobs.supervisor`), and a counter that process increments dies with it unless the samples go
to `PROMETHEUS_MULTIPROC_DIR`. That variable
must therefore be set in the worker's environment *before* prometheus_client is imported (the
container image and `make run` set it; the directory must be the worker's own, not the API's).
With it, this endpoint aggregates the files of the worker and of every job process it forked;
without it, only the worker process's own samples are served (enough for `--in-process` workers).

The shared-state gauges (queue depth, dead letters, outbox) are not served here: the API collects
them at scrape time, and serving them twice would double them in every `sum`.
"""

from __future__ import annotations

import logging
import os
import platform

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

from observability.metrics import BUILD_INFO, MultiProcessCollector, _version

DEFAULT_PORT = 9100
log = logging.getLogger(__name__)


def metrics_registry() -> CollectorRegistry:
    """The registry to expose: every process's files in multiprocess mode, else this process's."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    os.makedirs(directory, exist_ok=True)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return registry


def configured_port(port: int | None = None) -> int:
    """`port`, else `METRICS_PORT`, else 9100; a clear error names a bad variable."""
    if port is not None:
        return port
    raw = os.environ.get("METRICS_PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"METRICS_PORT must be a port number, got {raw!r}") from None
    if not 0 < value < 65536:
        raise ValueError(f"METRICS_PORT must be between 1 and 65535, got {value}")
    return value


def serve_metrics(port: int | None = None) -> None:
    """Serve `/metrics` for this worker on `port` (default: `METRICS_PORT`, else 9100)."""
    bind_port = configured_port(port)
    address = os.environ.get("METRICS_ADDR", "0.0.0.0")  # noqa: S104 - scraped from other pods
    BUILD_INFO.labels(version=_version(), python=platform.python_version()).set(1)
    start_http_server(bind_port, addr=address, registry=metrics_registry())
    log.info(
        "worker metrics served",
        extra={
            "address": address,
            "port": bind_port,
            "multiprocess": bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")),
        },
    )


def process_exited(pid: int) -> None:
    """For the worker to call when a job process has exited (multiprocess mode only).

    Drops the process's live gauges (`gatehouse_db_pool_connections_in_use`): a process killed
    with a connection checked out would otherwise count it forever. Its counters stay, as they must.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
