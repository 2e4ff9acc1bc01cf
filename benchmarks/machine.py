"""The machine's own limits, measured in the same run: how fast can it commit 128 B durably?

The eventador write budgets are relative to these numbers (an fsync-per-commit log cannot
beat the disk's fsync rate with one writer), so they are measured next to the scenarios,
on the same file system, not copied from an older run.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable

from benchmarks.common import Context, fmt, log, pct, perf, perf_ns, repeat

GROUP = "machine"
RECORD = b"e" * 127 + b"\n"


def run(ctx: Context) -> None:
    log("== machine: 128 B appends + fsync / fdatasync")
    n = ctx.sizes.fsync_commits
    for key, name, sync in (("fsync", "os.fsync", os.fsync), ("fdatasync", "os.fdatasync", os.fdatasync)):
        _sync_loop(ctx, key, name, sync, n)


def _sync_loop(ctx: Context, key: str, name: str, sync: Callable[[int], None], n: int) -> None:
    p50s: list[float] = []
    p99s: list[float] = []

    def once(r: int) -> float:
        path = ctx.path(f"machine-{key}-{r}.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
        lat = []
        try:
            t0 = perf()
            for _ in range(n):
                s0 = perf_ns()
                os.write(fd, RECORD)
                sync(fd)
                lat.append(perf_ns() - s0)
            dt = perf() - t0
        finally:
            os.close(fd)
            os.remove(path)
        p50s.append(statistics.median(lat) / 1e3)
        p99s.append(pct(lat, 99) / 1e3)
        return n / dt

    rates = repeat(ctx.reps, once)
    ctx.results.add(
        f"machine_{key}_rate",
        GROUP,
        f"append 128 B + {name}, {n:,} times, 1 thread",
        "commits/s",
        rates,
        better="higher",
        note=f"latency p50 {fmt(statistics.median(p50s))} us, p99 {fmt(statistics.median(p99s))} us",
    )
