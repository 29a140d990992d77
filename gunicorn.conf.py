"""gunicorn settings for the API (`gunicorn -c gunicorn.conf.py wsgi:app`), all from the environment.

Threaded workers (gthread): idle keep-alive connections do not pin a worker, and at SIGTERM a
worker finishes the requests it holds within `graceful_timeout` (Kubernetes'
terminationGracePeriodSeconds must exceed it, with the preStop sleep on top).
"""

import os

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
