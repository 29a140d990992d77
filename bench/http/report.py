"""The report printed at the end of a run: the results table, the targets (docs/benchmarks.md) with
PASS/MISS, and the workers x threads sweep, as Markdown tables padded to read in a terminal.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.http.cpu import CPU_COLUMNS
from bench.http.results import HashRate, Run

# The targets of docs/benchmarks.md: /users/me against the bare endpoint, login against the hash.
TARGET_ME_RATIO = 0.60
TARGET_ME_P99_MS = 20.0
TARGET_LOGIN_RATIO = 0.90
TARGET_LOGIN_P95_MS = 100.0


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_report(run: Run, hashes: HashRate | None, context: list[str]) -> None:
    print()
    print("## Results")
    print()
    for line in context:
        print(f"- {line}")
    print()
    header = (
        "scenario",
        "conns",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "server CPU µs/req",
        CPU_COLUMNS,
        "conns per worker",
    )
    rows = []
    for result in run.results.values():
        cpu = result.cpu_us_per_request
        rows.append(
            (
                result.scenario,
                str(result.connections),
                f"{result.rps:,.1f}",
                f"{result.p50_ms:.2f}",
                f"{result.p95_ms:.2f}",
                f"{result.p99_ms:.2f}",
                result.errors_text(),
                f"{cpu:,.0f}" if cpu is not None else "n/a",
                result.cpu.text() if result.cpu else "n/a",
                result.spread_text(),
            )
        )
    if hashes is not None:
        rows.append(
            (
                f"Argon2 hash_password, {hashes.processes} processes (raw)",
                str(hashes.processes),
                f"{hashes.rate:,.1f}",
                f"({hashes.ms_per_hash:.2f} per hash)",
                "",
                "",
                "",
                "",
                hashes.cpu.text() if hashes.cpu else "n/a",
                "",
            )
        )
    print_table(header, rows)

    print()
    print("## Targets")
    print()
    checks = []
    bare, me, login_result = (run.results.get(k) for k in ("bare", "me", "login"))
    if bare and me:
        ratio = me.rps / bare.rps if bare.rps else 0.0
        checks.append(
            (
                f"users/me ÷ bare (req/s) = {me.rps:,.1f} / {bare.rps:,.1f}",
                f"{ratio:.1%}",
                f"≥ {TARGET_ME_RATIO:.0%}",
                mark(ratio >= TARGET_ME_RATIO and me.error_count == 0)
                if bare.balanced and me.balanced
                else "n/a: one worker held most connections",
            )
        )
        checks.append(
            (
                f"users/me p99 at {me.connections} connections",
                f"{me.p99_ms:.2f} ms",
                f"≤ {TARGET_ME_P99_MS:.0f} ms",
                mark(me.p99_ms <= TARGET_ME_P99_MS),
            )
        )
    if login_result and hashes:
        ratio = login_result.rps / hashes.rate if hashes.rate else 0.0
        checks.append(
            (
                f"login ÷ raw hash rate = {login_result.rps:,.1f} / {hashes.rate:,.1f}",
                f"{ratio:.1%}",
                f"≥ {TARGET_LOGIN_RATIO:.0%}",
                mark(ratio >= TARGET_LOGIN_RATIO and login_result.error_count == 0),
            )
        )
        checks.append(
            (
                f"login p95 at {login_result.connections} clients",
                f"{login_result.p95_ms:.2f} ms",
                f"< {TARGET_LOGIN_P95_MS:.0f} ms",
                mark(login_result.p95_ms < TARGET_LOGIN_P95_MS),
            )
        )
    print_table(("measure", "value", "target", ""), checks)


def print_sweep(runs: list[Run]) -> None:
    print()
    print("## Workers x threads (GET /api/v1/users/me vs GET /bare, same settings)")
    print()
    header = (
        "workers x threads",
        "bare req/s",
        "bare p99 ms",
        "users/me req/s",
        "users/me p50 ms",
        "users/me p99 ms",
        "ratio",
        "errors",
        "users/me cores server/pg+redis/other",
        "conns per worker bare, users/me",
    )
    rows = []
    for run in runs:
        bare, me = run.results["bare"], run.results["me"]
        rows.append(
            (
                f"{run.workers} x {run.threads}",
                f"{bare.rps:,.1f}",
                f"{bare.p99_ms:.2f}",
                f"{me.rps:,.1f}",
                f"{me.p50_ms:.2f}",
                f"{me.p99_ms:.2f}",
                f"{me.rps / bare.rps:.1%}" if bare.rps else "n/a",
                str(bare.error_count + me.error_count),
                f"{me.cpu.server or 0:.2f} / {me.cpu.backing:.2f} / {me.cpu.other:.2f}"
                if me.cpu
                else "n/a",
                f"{bare.spread_text()}, {me.spread_text()}",
            )
        )
    print_table(header, rows)
    best = max(
        runs, key=lambda r: (r.results["me"].p99_ms <= TARGET_ME_P99_MS, r.results["me"].rps)
    )
    print()
    print(
        f"best for users/me: {best.workers} x {best.threads} "
        f"({best.results['me'].rps:,.1f} req/s, p99 {best.results['me'].p99_ms:.2f} ms)"
    )


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A Markdown table, padded so it also reads well in a terminal."""
    widths = [max(len(str(cell)) for cell in col) for col in zip(header, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return (
            "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False)) + " |"
        )

    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
