"""gunicorn settings for the API (`gunicorn -c gunicorn.conf.py wsgi:app`), from the environment.

Threaded workers (gthread): idle keep-alive connections do not pin a worker, and at SIGTERM a
worker finishes the requests it holds within `graceful_timeout` (Kubernetes'
terminationGracePeriodSeconds must exceed it, with the preStop sleep on top).
"""

import os
import tempfile

bind = [os.environ.get("BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
# /metrics is served on a listener of its own, never on the API's port in production: Prometheus
# reaches METRICS_PORT, the Ingress and published ports only the API (observability/exposure.py).
if os.environ.get("METRICS_PORT", "").strip():
    metrics_addr = os.environ.get("METRICS_ADDR", "0.0.0.0")  # noqa: S104 - scraped from other pods
    bind.append(f"{metrics_addr}:{os.environ['METRICS_PORT'].strip()}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread that accepts only with a free thread, so keep-alive clients spread over the workers.
worker_class = "webapp.gunicorn_worker.FairThreadWorker"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "25"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
# gunicorn's own limits sit above the API's (webapp/http/hostile.py caps the query string at
# 4,096 bytes): a long query is refused by the API, in problem+json, before gunicorn would refuse
# it. 8190 is the largest request line gunicorn accepts; past either limit the worker answers
# 414/431 in problem+json too (webapp.gunicorn_worker.write_problem).
limit_request_line = 8190
limit_request_field_size = 8190
# A read-only root filesystem has no writable $HOME for gunicorn's control socket.
control_socket_disable = True
# Application logs are lines on stdout; gunicorn's own lines go to stderr (same format).
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
forwarded_allow_ips = "*" if int(os.environ.get("TRUSTED_PROXIES", "0")) else "127.0.0.1"

# Prometheus multiprocess mode: every worker writes its samples under this directory and /metrics
# aggregates them. It is emptied when the master starts, and a dead worker's live gauges are
# dropped when it exits (docs/observability.md, "Multiprocess mode").
# Unset, each master gets its own directory: two gunicorns on one host must not wipe each other's.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gatehouse-metrics-")
multiproc_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def on_starting(server):  # type: ignore[no-untyped-def]
    import shutil

    shutil.rmtree(multiproc_dir, ignore_errors=True)
    os.makedirs(multiproc_dir, exist_ok=True)


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

    GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)


# gunicorn's own lines in the app's format (text in development, JSON elsewhere: the factory's
# rule, GATEHOUSE_ENV defaulting to development); the app writes the one access line per request.
logger_class = (
    "observability.gunicorn_logging.TextLogger"
    if os.environ.get("GATEHOUSE_ENV", "development") == "development"
    else "observability.gunicorn_logging.JsonLogger"
)
