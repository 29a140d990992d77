"""Real HTTP receivers for webhook tests: each records its requests and answers from `replies`;
`hold` (an Event) keeps each request waiting for its answer until set; `stop()` and `start()`
take it off the network and bring it back on the same port."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1: records each request, answers from `replies`."""

    url: str = ""
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    replies: list[tuple[int, bytes, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0
    hold: threading.Event | None = None
    entered: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                state.entered.set()
                if state.hold is not None:
                    state.hold.wait(60)
                time.sleep(state.delay)
                status, reply, headers = state.replies.pop(0) if state.replies else (200, b"ok", {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def event_ids(self) -> list[str]:
        """The `webhook-id` of each request received, in order of arrival."""
        return [headers["webhook-id"] for headers, _ in list(self.requests)]


@pytest.fixture
def make_receiver() -> Iterator[Callable[[], Receiver]]:
    """Start receivers; each is stopped (its held requests released) after the test."""
    started: list[Receiver] = []

    def start() -> Receiver:
        receiver = Receiver()
        receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        if receiver.hold is not None:
            receiver.hold.set()
        receiver.stop()


@pytest.fixture
def receiver(make_receiver: Callable[[], Receiver]) -> Receiver:
    return make_receiver()
