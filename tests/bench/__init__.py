"""The HTTP benchmark of Gatehouse: `make bench` (`python -m tests.bench`).

Not a test: it measures and reports, and asserts nothing about wall-clock time. See
`docs/benchmarks.md` for what it measures and why, and `tests/bench/runner.py` for how.
"""
