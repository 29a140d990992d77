"""The development mail sink of `make run`: an SMTP server that prints every email it receives
(headers and the plain-text part, links included) instead of delivering it.

    python -m jobs.devsink --port 1025

Development only: it needs aiosmtpd, from the dev extras.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, TextIO

from aiosmtpd.controller import Controller


def describe(raw: bytes) -> str:
    """A printable view of an email: its main headers and its plain-text body."""
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else "(no plain-text part)"
    lines = [f"{name}: {message[name]}" for name in ("From", "To", "Subject", "Message-ID")]
    rule = "-" * 72
    return "\n".join([rule, *lines, "", text.rstrip(), rule, ""])


class PrintingHandler:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.out.write(describe(envelope.original_content or envelope.content))
            self.out.flush()
        return "250 2.0.0 printed by the development mail sink"


def start(host: str, port: int, out: TextIO | None = None) -> Controller:
    controller = Controller(PrintingHandler(out or sys.stdout), hostname=host, port=port)
    controller.start()
    return controller


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    controller = start(args.host, args.port)
    print(f"development mail sink on smtp://{args.host}:{args.port}", flush=True)
    try:
        stop.wait()
    finally:
        controller.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
