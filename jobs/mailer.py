"""SMTP sending behind a circuit breaker.

`SMTP_URL` is `smtp://[user:password@]host:port` (plain, or STARTTLS with `SMTP_STARTTLS=true`)
or `smtps://host:port` (TLS from the first byte); `SMTP_USERNAME` / `SMTP_PASSWORD` override the
URL's credentials. Every socket operation has `SMTP_TIMEOUT`.

Two kinds of failure, treated differently (see docs/jobs.md):
- the server is unreachable or times out (`Unreachable`): the breaker counts it, and after
  `SMTP_BREAKER_FAIL_MAX` in a row it opens for `SMTP_BREAKER_RESET_TIMEOUT` seconds, during which
  no connection is even tried (`BreakerOpen`). Neither spends a message's tries: jobs wait.
- the server answers and refuses (a 4xx/5xx reply: `Refused`): the server is healthy, so the
  breaker does not count it; the message spends a try.

The breaker's state lives in Redis, so every worker process sees the same breaker.

A job process keeps one SMTP connection between jobs (`Mailer.kept_session()`), closed after
`KEEP_IDLE` seconds without a send. A server may still drop a kept connection while it idles; a
send that finds it dropped before the message began (no DATA sent, so nothing can have been
accepted) reconnects and sends once more.
"""

from __future__ import annotations

import functools
import logging
import os
import smtplib
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import unquote, urlsplit

import pybreaker
import redis

from jobs.settings import JobsSettings

log = logging.getLogger(__name__)

BREAKER_NAMESPACE = "gatehouse:smtp-breaker"
BREAKER_STATE_KEY = f"{BREAKER_NAMESPACE}:pybreaker:state"  # "closed", "open" or "half-open"
KEEP_IDLE = 10.0  # seconds a kept SMTP connection may idle before it is closed, not reused


class DeliveryError(Exception):
    """A send that did not happen."""


class Unreachable(DeliveryError):
    """No SMTP conversation: refused connection, timeout, dropped connection, bad greeting."""


class BreakerOpen(DeliveryError):
    """The breaker is open: the server failed repeatedly, so no connection was tried."""


class Refused(DeliveryError):
    """The server answered and refused (a 4xx/5xx reply)."""

    def __init__(self, code: int | None, reply: str) -> None:
        super().__init__(f"{code} {reply}".strip() if code else reply)
        self.code = code


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None
    timeout: float

    @classmethod
    def from_settings(cls, settings: JobsSettings) -> SmtpConfig:
        url = urlsplit(settings.smtp_url)
        implicit_tls = url.scheme == "smtps"
        return cls(
            host=url.hostname or "localhost",
            port=url.port or (465 if implicit_tls else 25),
            implicit_tls=implicit_tls,
            starttls=settings.smtp_starttls and not implicit_tls,
            username=settings.smtp_username or (unquote(url.username) if url.username else None),
            password=settings.smtp_password or (unquote(url.password) if url.password else None),
            timeout=settings.smtp_timeout,
        )


def _is_unreachable(exc: BaseException) -> bool:
    # smtplib's exceptions are OSErrors too: only the network ones mean "unreachable".
    # SMTPConnectError is a reply (a bad greeting, e.g. 421) but means "not serving now".
    if isinstance(exc, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


def _reply_of(exc: BaseException) -> Refused:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()), (None, b"recipient refused"))
        return Refused(code, _text(reply))
    if isinstance(exc, smtplib.SMTPResponseException):
        return Refused(exc.smtp_code, _text(exc.smtp_error))
    return Refused(None, str(exc) or exc.__class__.__name__)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


class _BreakerLog(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        old = getattr(old_state, "name", old_state)
        log.warning("smtp circuit breaker %s -> %s", old, new_state.name)


_breakers: dict[tuple[int, float, int], pybreaker.CircuitBreaker] = {}


def breaker_for(settings: JobsSettings, connection: redis.Redis | None) -> pybreaker.CircuitBreaker:
    """The SMTP breaker, shared through Redis when a connection is given. Built once (job processes
    inherit the worker's), since setting up its Redis storage costs round trips."""
    key = (
        settings.smtp_breaker_fail_max,
        settings.smtp_breaker_reset_timeout,
        id(connection),
    )
    breaker = _breakers.get(key)
    if breaker is None:
        storage: pybreaker.CircuitBreakerStorage = (
            pybreaker.CircuitRedisStorage(
                pybreaker.STATE_CLOSED, connection, namespace=BREAKER_NAMESPACE
            )
            if connection is not None
            else pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        )
        breaker = pybreaker.CircuitBreaker(
            fail_max=settings.smtp_breaker_fail_max,
            reset_timeout=settings.smtp_breaker_reset_timeout,
            # Only "cannot talk to the server" trips the breaker; refusals and our own errors
            # (a template bug, a job timeout) say nothing about the server's health.
            exclude=[lambda exc: not _is_unreachable(exc)],
            state_storage=storage,
            listeners=[_BreakerLog()],
            name="smtp",
        )
        _breakers[key] = breaker
    return breaker


class _RepliesKept:
    """Keeps the server's reply to DATA (it usually names the queue id) for the record, and
    whether the message got as far as DATA."""

    last_data_reply: tuple[int, bytes] | None = None
    data_started = False

    def data(self, msg: Any) -> tuple[int, bytes]:
        self.data_started = True
        # A mixin: `data` is that of the smtplib class it is mixed into.
        reply: tuple[int, bytes] = super().data(msg)  # type: ignore[misc]
        self.last_data_reply = reply
        return reply


class _SMTP(_RepliesKept, smtplib.SMTP):
    pass


class _SMTPS(_RepliesKept, smtplib.SMTP_SSL):
    pass


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Certificate-verifying TLS, built once: loading the CA store costs ~20 ms."""
    return ssl.create_default_context()


class Mailer:
    """Sends email `Message`s over this process's one kept connection (`kept_session()`)."""

    def __init__(self, config: SmtpConfig, breaker: pybreaker.CircuitBreaker) -> None:
        self.config = config
        self.breaker = breaker
        self._kept: SmtpSession | None = None
        self._kept_pid = 0

    @contextmanager
    def kept_session(self) -> Iterator[SmtpSession]:
        """This process's session: its connection stays open after the block, for the next
        one, unless it idled longer than `KEEP_IDLE` since its last send."""
        if self._kept is None or self._kept_pid != os.getpid():
            # A forked process never writes on a connection its parent opened.
            self._kept, self._kept_pid = SmtpSession(self), os.getpid()
        session = self._kept
        if session.idle_for() > KEEP_IDLE:
            session.close()
        yield session

    def close(self) -> None:
        if self._kept is not None and self._kept_pid == os.getpid():
            self._kept.close()
        self._kept = None

    def _connect(self) -> _SMTP | _SMTPS:
        cfg = self.config
        smtp: _SMTP | _SMTPS
        if cfg.implicit_tls:
            smtp = _SMTPS(cfg.host, cfg.port, timeout=cfg.timeout, context=tls_context())
        else:
            smtp = _SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        try:
            smtp.ehlo()
            if cfg.starttls:
                smtp.starttls(context=tls_context())
                smtp.ehlo()
            if cfg.username:
                smtp.login(cfg.username, cfg.password or "")
        except BaseException:
            with suppress(Exception):
                smtp.close()
            raise
        return smtp


class SmtpSession:
    """A lazily opened SMTP connection; any error closes it, the next send reconnects."""

    def __init__(self, mailer: Mailer) -> None:
        self._mailer = mailer
        self._smtp: _SMTP | _SMTPS | None = None
        self._last_used = time.monotonic()

    def idle_for(self) -> float:
        return time.monotonic() - self._last_used

    def send(self, message: Message) -> str:
        """Send one message; returns the server's reply. Raises Unreachable, BreakerOpen, Refused
        or, for anything else, the original exception."""
        try:
            return self._mailer.breaker.call(self._send, message)
        except pybreaker.CircuitBreakerError as exc:
            self.close()
            raise BreakerOpen(str(exc)) from exc
        except Exception as exc:
            self.close()
            if _is_unreachable(exc):
                raise Unreachable(f"{exc.__class__.__name__}: {exc}".rstrip(": ")) from exc
            if isinstance(exc, smtplib.SMTPException):
                raise _reply_of(exc) from exc
            raise

    def _send(self, message: Message) -> str:
        reused = self._smtp is not None
        try:
            smtp = self._send_on(self._smtp or self._mailer._connect(), message)
        except smtplib.SMTPServerDisconnected:
            if not reused or self._smtp is None or self._smtp.data_started:
                raise
            # The server dropped the kept connection while it idled; the message never
            # reached DATA, so nothing can have been accepted: once more on a new connection.
            self.close()
            smtp = self._send_on(self._mailer._connect(), message)
        self._last_used = time.monotonic()
        code, reply = smtp.last_data_reply or (250, b"")
        return f"{code} {_text(reply)}".strip()

    def _send_on(self, smtp: _SMTP | _SMTPS, message: Message) -> _SMTP | _SMTPS:
        self._smtp = smtp
        smtp.last_data_reply, smtp.data_started = None, False
        smtp.send_message(message)
        return smtp

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with suppress(Exception):
                smtp.quit()
            with suppress(Exception):
                smtp.close()
