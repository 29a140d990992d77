"""What polling the near cache's socket (redis-py's private `connection._sock`) buys: a lookup of
a held key as shipped (lock-free poll, then the dict) against the same lookup always drained
through redis-py's public API under the lock (`get_message(timeout=0)`), by 1 and 4 threads.

    python -m bench.http.near_cache_poll [--redis-url redis://127.0.0.1:6379/15] [--seconds 2]

Needs a Redis server; prints µs per lookup for each variant, best of three rounds.
"""

from __future__ import annotations

import argparse
import threading
import time

import redis

from webapp.near_cache import NearCache, channel_for

KEYS = ("gh:session:bench", "gh:user:bench")


def _trusted_cache(url: str) -> NearCache:
    cache = NearCache(url, channel_for(redis.Redis.from_url(url)), ttl=300.0, timeout=0.25)
    deadline = time.monotonic() + 10
    while not cache.trusted:  # the first call subscribes from a background thread
        if time.monotonic() > deadline:
            raise SystemExit(f"no subscription to {url}")
        time.sleep(0.05)
    _, token = cache.lookup(KEYS)
    cache.keep(token, KEYS, [b"{}", b"{}"])
    values, _ = cache.lookup(KEYS)
    if values is None:
        raise SystemExit("the near cache did not keep the entries")
    return cache


def _lookups(cache: NearCache, threads: int, seconds: float) -> float:
    """µs of wall time per lookup, all threads together (what the process can serve)."""
    counts = [0] * threads
    start_line = threading.Barrier(threads + 1)
    stop = threading.Event()

    def run(index: int) -> None:
        start_line.wait()
        lookup, done = cache.lookup, 0
        while not stop.is_set():
            for _ in range(200):
                lookup(KEYS)
            done += 200
        counts[index] = done

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    start_line.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return (time.perf_counter() - began) / sum(counts) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    polled = _trusted_cache(args.redis_url)
    drained = _trusted_cache(args.redis_url)
    drained._quiet = lambda now: False  # type: ignore[method-assign]  # always take the lock
    print("| threads | polled, as shipped (µs/lookup) | drained under the lock (µs/lookup) |")
    print("|---|---|---|")
    for threads in (1, 4):
        best_polled = min(_lookups(polled, threads, args.seconds) for _ in range(3))
        best_drained = min(_lookups(drained, threads, args.seconds) for _ in range(3))
        print(f"| {threads} | {best_polled:.2f} | {best_drained:.2f} |")


if __name__ == "__main__":
    main()
