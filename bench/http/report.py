"""The report printed at the end of a run: the results table, the targets (docs/benchmarks.md) with
PASS/MISS and the as-deployed figures beside them, and the workers x threads sweep, as Markdown
tables padded to read in a terminal.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.http.cpu import CPU_COLUMNS
from bench.http.results import (
    BARE,
    BARE_LOGIN,
    BARE_OBSERVED,
    LOGIN,
    ME_LIMITED,
    ME_ORIGIN,
    HashRate,
    Result,
    Run,
)

# The targets of docs/benchmarks.md: /users/me (as the web client calls it, with Origin, rate
# limits off) against the bare endpoint; login's server CPU beyond one raw hash, and its p95.
TARGET_ME_RATIO = 0.60
TARGET_ME_P99_MS = 20.0
TARGET_LOGIN_BEYOND_HASH_MS = 2.0
TARGET_LOGIN_P95_MS = 100.0
# The target cell of a row shown for comparison, which has no target of its own.
NO_TARGET = "—"


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
                f"{hashes.cpu_ms_per_hash * 1000:,.0f} (per hash)",
                hashes.cpu.text() if hashes.cpu else "n/a",
                "",
            )
        )
    print_table(header, rows)

    print()
    print("## Targets")
    print()
    print_table(("measure", "value", "target", ""), target_rows(run, hashes))


def target_rows(run: Run, hashes: HashRate | None) -> list[tuple[str, str, str, str]]:
    """The targets, each followed by the same measure as deployed (rate limits on) or by the
    figures it is computed from."""
    checks = []
    bare, me, limited, login_result = (
        run.results.get(k) for k in (BARE, ME_ORIGIN, ME_LIMITED, LOGIN)
    )
    if bare and me:
        checks.append(
            ratio_row("users/me ÷ bare (req/s), Origin, rate limits off", me, bare, judged=True)
        )
        if limited:
            checks.append(
                ratio_row("the same, rate limits on (as deployed)", limited, bare, judged=False)
            )
        checks.append(
            (
                f"users/me p99 at {me.connections} connections, Origin, rate limits off",
                f"{me.p99_ms:.2f} ms",
                f"≤ {TARGET_ME_P99_MS:.0f} ms",
                mark(me.p99_ms <= TARGET_ME_P99_MS),
            )
        )
        if limited:
            checks.append(
                (
                    "the same, rate limits on (as deployed)",
                    f"{limited.p99_ms:.2f} ms",
                    NO_TARGET,
                    "",
                )
            )
        observed = run.results.get(BARE_OBSERVED)
        if observed:
            checks.append(
                ratio_row(
                    "the floor: bare with production observability ÷ bare (req/s)",
                    observed,
                    bare,
                    judged=False,
                )
            )
        checks.append(
            (
                f"the floor: bare Flask's p99 at {bare.connections} connections",
                f"{bare.p99_ms:.2f} ms",
                NO_TARGET,
                "",
            )
        )
    if login_result and hashes:
        beyond = login_result.cpu_ms_beyond(hashes)
        login_cpu = login_result.cpu_us_per_request
        if beyond is not None and login_cpu is not None:
            checks.append(
                (
                    "login work beyond the hash: server CPU per login - per raw hash = "
                    f"{login_cpu / 1000:.2f} - {hashes.cpu_ms_per_hash:.2f} ms",
                    f"{beyond:.2f} ms",
                    f"≤ {TARGET_LOGIN_BEYOND_HASH_MS:.0f} ms",
                    mark(beyond <= TARGET_LOGIN_BEYOND_HASH_MS and login_result.error_count == 0),
                )
            )
        floor = run.results.get(BARE_LOGIN)
        floor_beyond = floor.cpu_ms_beyond(hashes) if floor else None
        if floor_beyond is not None:
            checks.append(
                (
                    "the floor: bare login (select, verify, insert, commit, sign) beyond the hash",
                    f"{floor_beyond:.2f} ms",
                    NO_TARGET,
                    "",
                )
            )
        ratio = login_result.rps / hashes.rate if hashes.rate else 0.0
        checks.append(
            (
                f"login ÷ raw hash rate = {login_result.rps:,.1f} / {hashes.rate:,.1f}",
                f"{ratio:.1%}",
                NO_TARGET,
                "",
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
    return checks


def ratio_row(measure: str, me: Result, bare: Result, *, judged: bool) -> tuple[str, str, str, str]:
    """`me` against the bare endpoint; `judged`: the target applies (rate limits off)."""
    ratio = me.rps / bare.rps if bare.rps else 0.0
    if not judged:
        target, verdict = NO_TARGET, ""
    elif not (bare.balanced and me.balanced):
        target, verdict = f"≥ {TARGET_ME_RATIO:.0%}", "n/a: one worker held most connections"
    else:
        target = f"≥ {TARGET_ME_RATIO:.0%}"
        verdict = mark(ratio >= TARGET_ME_RATIO and me.error_count == 0)
    return (f"{measure} = {me.rps:,.1f} / {bare.rps:,.1f}", f"{ratio:.1%}", target, verdict)


def print_sweep(runs: list[Run]) -> None:
    print()
    print(
        "## Workers x threads (GET /api/v1/users/me with Origin vs GET /bare, "
        "rate limits off, same settings)"
    )
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
        bare, me = run.results[BARE], run.results[ME_ORIGIN]
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
        runs,
        key=lambda r: (r.results[ME_ORIGIN].p99_ms <= TARGET_ME_P99_MS, r.results[ME_ORIGIN].rps),
    )
    print()
    print(
        f"best for users/me: {best.workers} x {best.threads} "
        f"({best.results[ME_ORIGIN].rps:,.1f} req/s, p99 {best.results[ME_ORIGIN].p99_ms:.2f} ms)"
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
