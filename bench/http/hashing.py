"""The raw Argon2 hash that the login scenario is judged against: `hash_password` in
`--hash-processes` forked processes (one per core by default), each in a session of its own at
the benchmark's niceness, hashing for a few seconds from a common start; their rate and the CPU
one hash costs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from typing import Any

from bench.http.cpu import CpuMeter
from bench.http.priority import prioritize_self
from bench.http.results import HashRate


def _hash_loop(seconds: float, barrier: Any, out: Any) -> None:
    from webapp.security.passwords import hash_password

    with contextlib.suppress(OSError):
        os.setsid()
    prioritize_self()
    hash_password("warm-up, not measured")
    barrier.wait()
    count, start, cpu_start = 0, time.perf_counter(), time.process_time()
    end = start + seconds
    while time.perf_counter() < end:
        hash_password("correct-Horse-battery-42")
        count += 1
    out.put((count, time.perf_counter() - start, time.process_time() - cpu_start))


def measure_hash_rate(processes: int, seconds: float) -> HashRate:
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_hash_loop, args=(seconds, barrier, out)) for _ in range(processes)]
    meter = CpuMeter()
    for proc in procs:
        proc.start()
    try:
        results = [out.get(timeout=seconds + 60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    hashes = sum(count for count, _, _ in results)
    rate = sum(count / elapsed for count, elapsed, _ in results)
    ms = sum(elapsed / count * 1000 for count, elapsed, _ in results) / len(results)
    # The hashing loop's own CPU, as the server's per login is: the login spends it verifying.
    cpu_ms = sum(cpu for _, _, cpu in results) / hashes * 1000 if hashes else 0.0
    share = meter.share(None, children_are_server=True)
    return HashRate(
        processes=processes,
        hashes=hashes,
        rate=rate,
        ms_per_hash=ms,
        cpu_ms_per_hash=cpu_ms,
        cpu=share,
    )
