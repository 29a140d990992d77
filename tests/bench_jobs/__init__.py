"""Throughput of the email pipeline: `python -m tests.bench_jobs`."""
