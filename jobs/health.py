"""The worker's liveness: its job loop writes until when it counts as alive; `python -m jobs.health`
(the Kubernetes liveness and startup probe) checks that this moment has not passed.

The file (`JOBS_LIVENESS_FILE`) holds one number, a Unix time. Who writes it:

- under the supervisor (`flask --app wsgi jobs worker`), the supervisor's own loop, about once a
  second, from what the job process marks on the shared `JobWatch`: each turn of RQ's loop (a job
  done, or an idle wait for jobs, which lasts at most `IDLE_TICK` seconds) extends it by
  `LOOP_ALLOWANCE`, and a job in hand extends it to the job's deadline (its timeout plus
  `OVERRUN_GRACE`: the supervisor kills an overrunning job process and forks a fresh one, so a long
  job never looks dead). The supervisor caps it at `SUPERVISOR_ALLOWANCE` from now, so a stuck
  supervisor is seen as well;
- `--in-process` runs, the worker itself at the same points.

So the probe fails when the job loop stops turning (a deadlock, a job process that cannot start
again and again), not when a side thread happens to serve a port. A Redis outage does not stop
the loop: RQ retries within it, and each retry is a turn.

This module imports nothing but the standard library: the probe runs every few seconds.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DEFAULT_FILE = "/tmp/gatehouse-worker.alive"  # noqa: S108 - /tmp is the pod's own emptyDir
FILE_VARIABLE = "JOBS_LIVENESS_FILE"

IDLE_TICK = 20  # seconds RQ waits for a job before its loop turns again
# An idle loop turns every IDLE_TICK seconds; with Redis away, every reconnect attempt (RQ backs
# off up to 60 s) is a turn. Twice the longest gap, then.
LOOP_ALLOWANCE = 120.0
SUPERVISOR_ALLOWANCE = 45.0  # above the supervisor's longest restart back-off (30 s)
_WRITE_EVERY = 1.0  # seconds between writes of the file (monotonic)


class LivenessFile:
    """Writes "alive until" to the file, atomically, at most once a second."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._written_at = -_WRITE_EVERY

    def alive_until(self, deadline: float, *, force: bool = False) -> None:
        """Record that the worker counts as alive until `deadline` (Unix time)."""
        now = time.monotonic()
        if not force and now - self._written_at < _WRITE_EVERY:
            return
        self._written_at = now
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            partial.write_text(f"{deadline:.3f}\n")
            os.replace(partial, self.path)  # the probe never reads half a number
        except OSError:
            # A full or read-only disk: the probe will say so by failing.
            with contextlib.suppress(OSError):
                partial.unlink()

    def alive_for(self, seconds: float, *, force: bool = False) -> None:
        self.alive_until(time.time() + seconds, force=force)


def seconds_left(path: str | Path, now: float | None = None) -> float | None:
    """Seconds until the recorded moment (negative: past), None when nothing readable is there."""
    try:
        deadline = float(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
    return deadline - (time.time() if now is None else now)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m jobs.health [FILE]`: exit 0 while the worker's job loop counts as alive."""
    args = sys.argv[1:] if argv is None else list(argv)
    path = args[0] if args else os.environ.get(FILE_VARIABLE) or DEFAULT_FILE
    left = seconds_left(path)
    if left is None:
        print(f"not alive: no heartbeat of the job loop in {path}", file=sys.stderr)
        return 1
    if left < 0:
        print(f"not alive: the job loop's heartbeat ran out {-left:.0f}s ago", file=sys.stderr)
        return 1
    print(f"alive for {left:.0f}s more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
