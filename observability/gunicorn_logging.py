"""gunicorn's own log lines (start-up, worker boot and exit, errors) as JSON, like the app's (as
text in development).

Used as `logger_class` in gunicorn.conf.py. Access lines are not gunicorn's job here: the app
writes one per request with its route template and request id, so `access()` does nothing —
and, unlike a `logconfig_dict`, this costs no per-request work inside gunicorn.

Its lines go through the app's redaction too: "Invalid request from ip=…" quotes the refused
request line (a reset link's token in a query string), and an error that escaped the app is
logged here with its traceback.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from observability.logging import RedactingFilter, formatter


class JsonLogger(Logger):
    log_format = "json"

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter(self.log_format))
            handler.addFilter(RedactingFilter())

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


class TextLogger(JsonLogger):
    """The same lines as readable text, for `make run` (development)."""

    log_format = "text"
