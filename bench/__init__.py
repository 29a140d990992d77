"""The benchmark runners of Gatehouse: tooling, not tests (`python -m bench.http`,
`python -m bench.http.enumeration`, `python -m bench.jobs`). They serve throwaway targets built
with the helpers of tests/support and are never part of the wheel."""
