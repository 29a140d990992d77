"""gunicorn's own log lines (start-up, worker boot and exit, errors) as JSON, like the app's.

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

from observability.logging import GatehouseJsonFormatter, RedactingFilter


class JsonLogger(Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        formatter = GatehouseJsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,
        )
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter)
            handler.addFilter(RedactingFilter())

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None
