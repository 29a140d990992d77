"""gunicorn settings for the API (`gunicorn -c gunicorn.conf.py wsgi:app`), from the environment.

Threaded workers (gthread): idle keep-alive connections do not pin a worker, and at SIGTERM a
worker finishes the requests it holds within `graceful_timeout` (Kubernetes'
terminationGracePeriodSeconds must exceed it, with the preStop sleep on top).
"""

import os
import tempfile

bind = os.environ.get("BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "25"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
# A read-only root filesystem has no writable $HOME for gunicorn's control socket.
control_socket_disable = True
# Application logs are JSON lines on stdout; gunicorn's own access log stays off.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
forwarded_allow_ips = "*" if int(os.environ.get("TRUSTED_PROXIES", "0")) else "127.0.0.1"

# Prometheus multiprocess mode: every worker writes its samples under this directory and /metrics
# aggregates them. It is emptied when the master starts, and a dead worker's live gauges are
# dropped when it exits (NOTES: prometheus-flask-exporter under gunicorn).
multiproc_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), "gatehouse-metrics")
)


def on_starting(server):  # type: ignore[no-untyped-def]
    import shutil

    shutil.rmtree(multiproc_dir, ignore_errors=True)
    os.makedirs(multiproc_dir, exist_ok=True)


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


# gunicorn's own lines (start, worker boot/exit, errors) as JSON too, like the application's.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": True,
        }
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
        }
    },
    "root": {"handlers": [], "level": loglevel.upper()},  # the app adds its JSON handler
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": loglevel.upper(), "propagate": False},
        # One access line per request comes from the app (with route and request id).
        "gunicorn.access": {"handlers": [], "propagate": False},
    },
}
