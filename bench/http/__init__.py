"""The HTTP benchmark of Gatehouse: `make bench` (`python -m bench.http`).

Not a test: it measures and reports, and asserts nothing about wall-clock time. See
`docs/benchmarks.md` for what it measures and why, and `bench/http/runner.py` for how.
"""
