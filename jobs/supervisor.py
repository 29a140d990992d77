"""The worker's two processes: a supervisor, and the job process it forks and replaces.

`flask --app wsgi jobs worker` is the supervisor. It runs the outbox dispatcher and forks one
job process, which runs jobs one after another in its own process (RQ's non-forking execution:
no fork, no fresh database connection and no new SMTP connection per job). What a fork per job
would give is kept here, per job process instead of per job (docs/adr/0002):

- **Leaks do not last.** The job process exits after `JOBS_WORKER_MAX_JOBS` jobs, or after the
  job during which its memory passed `JOBS_WORKER_MAX_MEMORY_MB`; the supervisor forks a fresh
  one at once (a fork of an app already loaded: milliseconds).
- **A hung job is stopped.** RQ stops a job at its timeout (SIGALRM in the job process). A job
  stuck where that cannot reach it (C code holding the interpreter), or a process that stopped
  beating on the shared `JobWatch`, is killed by the supervisor `OVERRUN_GRACE` seconds past the
  job's timeout or `STALL_AFTER` seconds after its last beat — before the dead-worker sweep
  (`jobs.recovery.STALE_AFTER`) would free its claim under it.
- **A killed job is sent again at once.** When the job process dies by a signal (an OOM kill, the
  supervisor's own kill), the supervisor files its job as failed, as RQ does for a killed
  work-horse, and `jobs.recovery.release_killed` makes its messages due with their claims freed.
- **The job process dies with its supervisor** (`die_with_parent`): a SIGKILLed supervisor
  leaves no job process sending with nobody beating for it.
- **The pod's liveness follows the job loop.** The job process marks each turn of RQ's loop on
  the watch; the supervisor's loop turns that into the liveness file `python -m jobs.health`
  checks (`jobs.health`).

Signals: the first SIGTERM or SIGINT is passed on to the job process as SIGTERM (RQ's warm
shutdown: the job in hand finishes), and the supervisor exits with it; a second one kills the
job process at once and releases its messages. The job process has a process group of its own,
so a terminal's Ctrl-C reaches it only through the supervisor.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import signal
import struct
import time
from collections.abc import Callable
from types import FrameType

import redis
from rq import SimpleWorker

from jobs import queues, runtime
from jobs.health import LOOP_ALLOWANCE, SUPERVISOR_ALLOWANCE, LivenessFile
from jobs.recovery import STALE_AFTER, die_with_parent, release_killed, started_jobs
from observability.worker import process_exited

log = logging.getLogger(__name__)

OVERRUN_GRACE = 10.0  # seconds past a job's own timeout before its process is killed
STALL_AFTER = STALE_AFTER * 2 / 3  # seconds without a beat: killed before the sweep steps in
BEAT_INTERVAL = 1.0  # how often a job process marks itself alive on the watch
_POLL = 0.1  # the supervisor's loop
_RESTART_BACKOFF = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)  # after job processes that failed to start


class JobWatch:
    """Three numbers the job process writes and the supervisor reads, in memory both share:
    when the job in hand must be over (0: none), when the process last beat (its beat thread),
    and when its job loop last turned (0: not yet); monotonic seconds, the same clock in both
    processes."""

    _FORMAT = "ddd"

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, struct.calcsize(self._FORMAT))
        self.reset()

    def reset(self) -> None:
        """For a new job process. The loop's last turn stays: a job process that cannot start
        again and again must not look alive."""
        struct.pack_into("dd", self._memory, 0, 0.0, time.monotonic())

    def _read(self) -> tuple[float, float]:
        deadline, beat, _ = struct.unpack_from(self._FORMAT, self._memory, 0)
        return deadline, beat

    def loop_turned(self) -> None:
        struct.pack_into("d", self._memory, 16, time.monotonic())

    def alive_until(self) -> float | None:
        """Until when (monotonic) the job loop counts as alive; None before its first turn."""
        deadline, _, turned = struct.unpack_from(self._FORMAT, self._memory, 0)
        if not turned:
            return None
        until: float = turned + LOOP_ALLOWANCE
        if deadline:
            until = max(until, deadline + OVERRUN_GRACE)
        return until

    def job_started(self, timeout: float) -> None:
        struct.pack_into("d", self._memory, 0, time.monotonic() + timeout)

    def job_ended(self) -> None:
        struct.pack_into("d", self._memory, 0, 0.0)

    def beat(self) -> None:
        struct.pack_into("d", self._memory, 8, time.monotonic())

    def verdict(self, now: float | None = None) -> str | None:
        """Why the job process must be killed now, or None."""
        now = time.monotonic() if now is None else now
        deadline, beat = self._read()
        if deadline and now > deadline + OVERRUN_GRACE:
            return f"job ran {OVERRUN_GRACE:.0f}s past its timeout"
        if now - beat > STALL_AFTER:
            return f"no beat for {now - beat:.0f}s"
        return None


JobMain = Callable[[JobWatch, str], int]


class Supervisor:
    """Forks `job_main(watch, name)` in a child and keeps one running until told to stop."""

    def __init__(
        self,
        job_main: JobMain,
        connection: redis.Redis,
        base_name: str,
        liveness: LivenessFile | None = None,
    ) -> None:
        self.job_main = job_main
        self.connection = connection
        self.base_name = base_name
        self.liveness = liveness
        self.watch = JobWatch()
        self.generation = 0
        self.pid: int | None = None
        self.name = ""
        self._signals = 0
        self._passed_on = 0
        self._failed_starts = 0
        self._started_at = 0.0

    # --- in the supervisor ---------------------------------------------------------------------

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            return self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1  # acted on by the loop, which knows the job process for sure

    def _pass_signals_on(self) -> None:
        if self._signals == self._passed_on or self.pid is None:
            return
        self._passed_on = self._signals
        if self._passed_on == 1:
            log.info("job worker: stopping after the job in hand")
            self._send(signal.SIGTERM)
        else:
            log.warning("job worker: stopping now, the job in hand is cut short")
            self._send(signal.SIGKILL)

    def _loop(self) -> int:
        while True:
            if self.pid is None:
                if self._signals:
                    return 0
                self._start()
            assert self.pid is not None
            self._pass_signals_on()
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                code = self._ended(status)
                if self._signals:
                    return code if code >= 0 else 1
                continue
            reason = self.watch.verdict()
            if reason is not None and not self._signals:
                log.error("job worker: killing its job process: %s", reason)
                self._send(signal.SIGKILL)
            self._report_liveness()
            time.sleep(_POLL)

    def _report_liveness(self) -> None:
        """The job loop's "alive until", capped so that a stuck supervisor shows too."""
        job_loop = self.watch.alive_until()
        if self.liveness is None or job_loop is None:
            return
        now = time.monotonic()
        until = min(job_loop, now + SUPERVISOR_ALLOWANCE)
        self.liveness.alive_until(time.time() + (until - now))

    def _start(self) -> None:
        wait = _RESTART_BACKOFF[min(self._failed_starts, len(_RESTART_BACKOFF) - 1)]
        if wait:
            time.sleep(wait)
        self.generation += 1
        self.name = f"{self.base_name}.{self.generation}"
        self.watch.reset()
        parent = os.getpid()
        with runtime.fork_guard():
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is collected by the e2e tests
            self._child(parent)
        self.pid = pid
        self._started_at = time.monotonic()

    def _ended(self, status: int) -> int:
        """Book the job process's end; returns its exit code (negative: the signal)."""
        pid, name, self.pid = self.pid, self.name, None
        assert pid is not None
        process_exited(pid)
        code = os.waitstatus_to_exitcode(status)
        lived = time.monotonic() - self._started_at
        self._failed_starts = self._failed_starts + 1 if code != 0 and lived < 5 else 0
        if code < 0:
            log.warning(
                "job worker: its job process was killed",
                extra={"pid": pid, "signal": -code, "worker": name},
            )
            self._release_jobs_of(name, f"job process killed by signal {-code}")
        elif code != 0:
            log.error("job worker: its job process exited", extra={"pid": pid, "code": code})
            self._release_jobs_of(name, f"job process exited with code {code}")
        else:
            log.info("job worker: job process recycled", extra={"pid": pid, "worker": name})
        return code

    def _release_jobs_of(self, name: str, reason: str) -> None:
        """File the dead process's started jobs as failed (as RQ does for a killed work-horse),
        free their messages, and remove the process from RQ's worker registry."""
        try:
            dead = SimpleWorker(
                [queues.queue(q, self.connection) for q in queues.QUEUES],
                connection=self.connection,
                name=name,
            )
            for job in started_jobs(self.connection):
                if job.worker_name == name:
                    queue = queues.queue(job.origin, self.connection)
                    dead.handle_job_failure(job, queue=queue, exc_string=reason)
                    release_killed(job, self.connection)
            dead.register_death()
        except Exception:  # Redis away: the sweep and the lease remain
            log.exception("job worker: could not release the jobs of its dead job process")

    def _send(self, sig: signal.Signals) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    # --- in the job process --------------------------------------------------------------------

    def _child(self, parent: int) -> None:
        code = 1
        try:
            os.setpgid(0, 0)
            die_with_parent(parent)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            code = self.job_main(self.watch, self.name)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("job worker: its job process failed")
        finally:
            logging.shutdown()
            os._exit(code)
