"""The gunicorn worker class of the API: gthread that accepts a connection only with a free thread.

Every gthread worker polls the one shared listening socket and accepts whatever it can, up to
`worker_connections` (1,000). When a burst of keep-alive clients connects at once (a load
balancer's pool, a load test), the worker that wakes first takes nearly all of them and keeps
them: on this machine one of two workers often held 29-31 of 32 connections, so one core did the
work of two and latency doubled. Here a worker stops accepting while all its threads are busy,
so the other workers take the rest; connections it already holds are served as before (kept
alive or pending, they do not count as busy). `SO_REUSEPORT` would spread connections too, but a
worker stopped with SIGTERM would then reset the connections queued on its own socket.

Connections may now wait in the listen backlog while every thread is busy. When the worker stops
(SIGTERM), it first accepts everything already queued there and serves it within the graceful
timeout, as the stock worker would have: a client that connected before the signal gets its
answer (tests/e2e/test_graceful_shutdown.py). While every thread of every worker is blocked (on
an unreachable database, say), probes and scrapes wait in the backlog rather than in a worker's
queue: the same wait, since the stock worker accepts them but has no thread to serve them.

It leans on gthread's internals (`keepalived_conns`, `pending_conns`, `nr_conns`, `accept`,
`set_accept_enabled`) of the pinned gunicorn; tests/e2e/test_gunicorn_worker.py fails if a
new version changes them.
"""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker


class FairThreadWorker(ThreadWorker):
    @property
    def worker_connections(self) -> int:
        idle = len(self.keepalived_conns) + len(self.pending_conns)
        return int(min(self._max_connections, idle + self.cfg.threads))

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._max_connections = value

    def set_accept_enabled(self, enabled: bool) -> None:
        if not enabled and not self.alive:
            self._accept_backlog()
        super().set_accept_enabled(enabled)

    def _accept_backlog(self) -> None:
        for listener in self.sockets:
            listener.setblocking(False)
            while self.nr_conns < self._max_connections:
                before = self.nr_conns
                self.accept(listener)  # one connection, or nothing left (EAGAIN is swallowed)
                if self.nr_conns == before:
                    break
