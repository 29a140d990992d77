"""The worker's supervisor (`jobs.supervisor`): the job process it forks is watched, killed
when it hangs or stops beating, and replaced; its shared watch says why. The worker's liveness
(`jobs.health`) follows its job loop, through the same watch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import health
from jobs import supervisor as supervision
from jobs.health import LivenessFile
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


# --- liveness: the job loop's heartbeat (jobs.health) ------------------------------------------


def probe(path: Path) -> int:
    """The worker's liveness probe as Kubernetes runs it (k8s/base/worker-deployment.yaml)."""
    done = subprocess.run(
        [sys.executable, "-m", "jobs.health", str(path)], capture_output=True, check=False
    )
    return done.returncode


def test_the_probe_reads_until_when_the_worker_counts_as_alive(tmp_path: Path):
    path = tmp_path / "alive"
    assert probe(path) == 1  # nothing written yet: the loop has not turned
    LivenessFile(path).alive_for(30)
    assert probe(path) == 0
    LivenessFile(path).alive_for(-1)
    assert probe(path) == 1
    path.write_text("garbled\n")
    assert probe(path) == 1
    assert health.seconds_left(tmp_path / "missing") is None


def test_the_watch_counts_loop_turns_and_the_job_in_hand():
    watch = JobWatch()
    assert watch.alive_until() is None  # no turn yet
    watch.loop_turned()
    turned = time.monotonic()
    until = watch.alive_until()
    assert until is not None
    assert turned - 1 < until - health.LOOP_ALLOWANCE <= turned
    watch.job_started(timeout=1000)  # a long job: alive until the supervisor would kill it
    long_job = watch.alive_until()
    assert long_job is not None
    assert long_job > time.monotonic() + 1000
    watch.job_ended()
    watch.reset()  # a new job process: the last turn stays, it is not a turn
    assert watch.alive_until() == until


@pytest.fixture
def short_liveness(monkeypatch):
    # Above the one second between writes of the file, as the real 120 s is.
    monkeypatch.setattr(supervision, "LOOP_ALLOWANCE", 1.5)
    monkeypatch.setattr(supervision, "_RESTART_BACKOFF", (0.0,))


def test_liveness_follows_the_job_loop_not_the_beat(short_liveness, rq_connection, tmp_path):
    """The job process keeps beating throughout (its beat thread would); the probe passes while
    its loop turns or a job is in hand, and fails once the loop stops turning."""
    path, events = tmp_path / "alive", tmp_path / "events"

    def beating(watch: JobWatch, seconds: float, turning: bool = False) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            watch.beat()
            if turning:
                watch.loop_turned()
            time.sleep(0.05)

    def job_main(watch: JobWatch, name: str) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        results = [probe(path)]  # before the first turn
        beating(watch, 1.5, turning=True)
        results.append(probe(path))  # turning
        watch.job_started(timeout=30)
        beating(watch, 3.0)
        results.append(probe(path))  # a job far past LOOP_ALLOWANCE, within its timeout
        watch.job_ended()
        beating(watch, 3.0)
        results.append(probe(path))  # beating, but the loop stopped turning
        events.write_text(" ".join(map(str, results)))
        os.kill(os.getppid(), signal.SIGTERM)
        return 0

    code = Supervisor(job_main, rq_connection, "liveness-test", LivenessFile(path)).run()

    assert code == 0
    assert events.read_text().split() == ["1", "0", "0", "1"]


def test_an_in_process_worker_writes_its_own_liveness(app, tmp_path):
    from jobs.worker import build_worker
    from webapp.config import settings_of

    path = tmp_path / "alive"
    worker = build_worker(settings_of(app))
    worker.liveness = LivenessFile(path)
    assert worker.dequeue_timeout == health.IDLE_TICK  # the idle loop turns this often
    worker.beat_registry()  # the beat thread's beat is not a turn of the loop
    assert probe(path) == 1
    worker.heartbeat()  # what RQ's loop calls on each turn
    left = health.seconds_left(path)
    assert left is not None
    assert health.LOOP_ALLOWANCE - 5 < left < health.LOOP_ALLOWANCE + 0.01
