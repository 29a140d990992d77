"""Throughput of the email pipeline: `python -m bench.jobs`."""
