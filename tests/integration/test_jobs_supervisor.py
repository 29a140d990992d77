"""The worker's supervisor (`jobs.supervisor`): the job process it forks is watched, killed
when it hangs or stops beating, and replaced; its shared watch says why."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from jobs import supervisor as supervision
from jobs.supervisor import JobWatch, Supervisor


def test_a_job_past_its_timeout_and_the_grace_is_to_be_killed():
    watch = JobWatch()
    now = time.monotonic()
    watch.job_started(timeout=5)

    assert watch.verdict(now + 4) is None
    assert watch.verdict(now + 5 + supervision.OVERRUN_GRACE - 1) is None
    reason = watch.verdict(now + 5 + supervision.OVERRUN_GRACE + 1)
    assert reason is not None
    assert "past its timeout" in reason

    watch.job_ended()
    watch.beat()
    assert watch.verdict(time.monotonic() + supervision.OVERRUN_GRACE + 5) is None


def test_a_process_that_stopped_beating_is_to_be_killed_before_the_sweep_would_free_its_claim():
    from jobs.recovery import STALE_AFTER

    watch = JobWatch()
    watch.beat()
    now = time.monotonic()

    assert supervision.STALL_AFTER < STALE_AFTER
    assert watch.verdict(now + supervision.STALL_AFTER - 1) is None
    reason = watch.verdict(now + supervision.STALL_AFTER + 1)
    assert reason is not None
    assert "no beat" in reason


def test_the_watch_is_shared_with_the_forked_job_process():
    watch = JobWatch()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        watch.job_started(timeout=1000)
        os._exit(0)
    os.waitpid(pid, 0)
    deadline, _ = watch._read()
    assert deadline > time.monotonic() + 900


@pytest.fixture
def short_grace(monkeypatch):
    monkeypatch.setattr(supervision, "OVERRUN_GRACE", 0.3)
    monkeypatch.setattr(supervision, "_RESTART_BACKOFF", (0.0,))


def test_a_hung_job_process_is_killed_and_replaced(short_grace, rq_connection, tmp_path: Path):
    """The first job process hangs past its job's deadline where no timeout reaches it; the
    supervisor kills it and forks the next, which asks the supervisor to stop."""
    events = tmp_path / "events"

    def job_main(watch: JobWatch, name: str) -> int:
        with events.open("a") as out:
            out.write(f"{name} {os.getpid()}\n")
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        if name.endswith(".1"):
            watch.job_started(timeout=0.2)
            time.sleep(60)
        os.kill(os.getppid(), signal.SIGTERM)  # the supervisor passes it on: exit as asked
        return 0

    started = time.monotonic()
    code = Supervisor(job_main, rq_connection, "hung-test").run()

    assert code == 0
    assert time.monotonic() - started < 30
    names = [line.split()[0] for line in events.read_text().splitlines()]
    assert names == ["hung-test.1", "hung-test.2"]
    first_pid = int(events.read_text().splitlines()[0].split()[1])
    assert not Path(f"/proc/{first_pid}").exists() or _zombie_or_gone(first_pid)


def test_a_job_process_that_exits_after_its_jobs_is_replaced_at_once(rq_connection, tmp_path):
    """Recycling: a job process that stops by itself (its job count or memory limit) is followed
    by a fresh one; a second signal to the supervisor while it runs kills it."""
    events = tmp_path / "events"

    def job_main(watch: JobWatch, name: str) -> int:
        with events.open("a") as out:
            out.write(f"{name}\n")
        if name.endswith(".3"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            os.kill(os.getppid(), signal.SIGTERM)
            time.sleep(0.5)  # two signals sent at once could arrive as one
            os.kill(os.getppid(), signal.SIGTERM)
            time.sleep(60)
        return 0

    code = Supervisor(job_main, rq_connection, "recycle-test").run()

    assert events.read_text().split() == [f"recycle-test.{n}" for n in (1, 2, 3)]
    assert code == 1  # the last job process was killed, not stopped cleanly


def _zombie_or_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")
