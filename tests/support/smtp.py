"""A real SMTP server for the tests (aiosmtpd on a free 127.0.0.1 port) that keeps what it
accepts, can refuse, delay or hold mail, and lets a test wait for what arrives."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.waiting import free_port


@dataclass
class ReceivedEmail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> Any:
        from email import message_from_bytes, policy

        return message_from_bytes(self.raw, policy=policy.default)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def text(self) -> str:
        return str(self.message.get_body(preferencelist=("plain",)).get_content())

    @property
    def html(self) -> str:
        return str(self.message.get_body(preferencelist=("html",)).get_content())

    @property
    def link(self) -> str:
        import re

        match = re.search(r"https?://\S+", self.text)
        assert match, self.text
        return match.group(0)


class SmtpSink:
    """An aiosmtpd handler that keeps what it accepts. `reply` refuses mail when set to a 4xx/5xx
    line; `hold` (an Event) keeps each DATA waiting until set — a client that dies meanwhile
    cancels it, so nothing is recorded, as with a server that never said 250."""

    def __init__(self) -> None:
        import threading

        self.url = ""
        self.received: list[ReceivedEmail] = []
        self.attempts = 0
        self.abandoned = 0
        self.reply = "250 2.0.0 OK"
        self.delay = 0.0
        self.hold: threading.Event | None = None
        self.entered = threading.Event()
        self._changed = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        with self._changed:
            self.attempts += 1
        self.entered.set()
        try:
            if self.hold is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.hold.wait, 30)
            if self.delay:
                await asyncio.sleep(self.delay)
        except asyncio.CancelledError:  # the client went away before the reply
            with self._changed:
                self.abandoned += 1
                self._changed.notify_all()
            raise
        reply = self.reply
        if reply.startswith("250"):
            with self._changed:
                self.received.append(
                    ReceivedEmail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
                )
                self._changed.notify_all()
        return reply

    def wait_for(self, count: int, timeout: float = 30.0) -> list[ReceivedEmail]:
        """Wait until `count` emails arrived (fails after `timeout` seconds)."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.received) >= count, timeout)
            assert arrived, f"{len(self.received)} of {count} emails arrived in {timeout}s"
            return list(self.received)

    def wait_until(self, condition: Callable[[SmtpSink], bool], timeout: float = 30.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: condition(self), timeout), "sink condition"

    def to(self, recipient: str) -> list[ReceivedEmail]:
        return [m for m in list(self.received) if recipient.lower() in m.rcpt_tos]


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on a free 127.0.0.1 port."""
    from aiosmtpd.controller import Controller

    sink = SmtpSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    sink.url = f"smtp://127.0.0.1:{port}"
    yield sink
    if sink.hold is not None:
        sink.hold.set()
    controller.stop()
