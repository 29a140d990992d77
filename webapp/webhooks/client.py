"""One webhook POST, to a pinned address, with hard limits.

The host is resolved once (webapp.webhooks.ssrf) and the connection made to that address, the
URL's host kept for the `Host` header and TLS (SNI and certificate check): a DNS answer that
changes between the check and the connection cannot redirect the request. Redirects are not
followed (a 3xx is a failed attempt). Limits: CONNECT_TIMEOUT to connect, TOTAL_TIMEOUT for the
whole exchange, at most MAX_RESPONSE_BYTES of the response read.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from webapp.webhooks import ssrf

CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 15.0
MAX_RESPONSE_BYTES = 64 * 1024
_CHUNK = 8192


class SendFailed(Exception):
    """No HTTP response (refused target, connection or TLS error, timeout)."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes  # at most MAX_RESPONSE_BYTES


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str) -> None:
        super().__init__(host, port, timeout=CONNECT_TIMEOUT)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), CONNECT_TIMEOUT)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=CONNECT_TIMEOUT, context=context)
        self.address = address
        self.tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), CONNECT_TIMEOUT)
        try:
            self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_private: bool,
    tls: ssl.SSLContext | None = None,
) -> Response:
    deadline = time.monotonic() + TOTAL_TIMEOUT
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    address = str(ssrf.resolve(host, port, allow_private=allow_private))
    conn: http.client.HTTPConnection = (
        _PinnedHTTPS(host, port, address, tls or ssl.create_default_context())
        if https
        else _PinnedHTTP(host, port, address)
    )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.connect()
        _limit(conn, deadline)
        conn.request("POST", path, body=body, headers=headers)
        _limit(conn, deadline)
        response = conn.getresponse()
        received = b""
        while len(received) < MAX_RESPONSE_BYTES:
            _limit(conn, deadline)
            chunk = response.read(min(_CHUNK, MAX_RESPONSE_BYTES - len(received)))
            if not chunk:
                break
            received += chunk
        return Response(response.status, received)
    except (OSError, http.client.HTTPException) as exc:
        raise SendFailed(_describe(exc)) from None
    finally:
        conn.close()


def _limit(conn: http.client.HTTPConnection, deadline: float) -> None:
    """Every socket operation waits at most what is left of the total budget."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("total timeout")
    if conn.sock is not None:
        conn.sock.settimeout(min(left, TOTAL_TIMEOUT))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    return f"{exc.__class__.__name__}: {exc}"[:300]
