"""Pages of the log and the newest events of a stream (issue 18): reads that decode only what they return.

    python -m benchmarks.pages [--quick]

``run(quick)`` returns one dict per measurement (see ``benchmarks/timetravel.py``). One store
of N events (1M; quick: 20,000), written as event-sourced applications write: one event per
append, to a random one of many short streams (N/10 streams), or (a tenth of the appends) to
one of 10 long streams; flushed into Parquet files (sorted by stream, so the events of a
range of positions are spread through each file), then opened afresh.

1. ``read_all(from_position=p, limit=10)`` at random p: what eventsourcing's
   ``select_notifications(start, limit=10)`` asks. Warm: the same pages were read once
   before and their row groups are in the store's cache, sized to hold them
   (``set_cache_size(256 MiB)``: random pages of 1M events touch every row group of every
   file, about 150 MB). Budget: under 1 ms. Beside it: a page read with nothing in the
   cache but the files' position indexes (cold), and random pages with the default 64 MiB
   cache, which holds a part of them.
2. A follower paging through the log, ``limit=10`` at a time from a random start (default
   cache: one file's row groups fit).
3. The newest event of a long stream, ``read_stream(s, reverse=True, limit=1)``, beside
   reading the whole stream for it (what the "latest snapshot" read cost before).
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import eventador as ev  # noqa: E402
from benchmarks.common import log, perf, result  # noqa: E402
from eventador.store.cache import DEFAULT_BYTES, column_cache, set_cache_size  # noqa: E402

PAGE = 10
WARM_CACHE = 1 << 30
LONG_STREAMS = 10


class Ticked(ev.Event, event_type="bench.pages.Ticked"):
    account_id: str
    amount: float
    note: str


def _write(path: Path, n: int) -> None:
    rnd = random.Random(18)
    short = max(1, n // 10)
    with ev.open_store(path, durability="none") as store:
        for start in range(0, n, 1_000):
            appends = []
            for i in range(start, min(n, start + 1_000)):
                sid = f"long-{rnd.randrange(LONG_STREAMS)}" if rnd.random() < 0.1 else f"acc-{rnd.randrange(short):07d}"
                appends.append((sid, [Ticked(account_id=sid, amount=float(i), note="x")]))
            store.append_many(appends)
        store.flush()


def _per_call_ms(calls: list[Any]) -> list[float]:
    times = []
    for call in calls:
        t0 = perf()
        call()
        times.append((perf() - t0) * 1e3)
    return times


def _page(store: ev.EventStore, p: int) -> Any:
    def read() -> None:
        page = list(store.read_all(from_position=p, limit=PAGE))
        assert page[0].position == p and len(page) == PAGE

    return read


def run(quick: bool, *, reps: int | None = None) -> list[dict[str, Any]]:
    reps = reps or (2 if quick else 5)
    n = 20_000 if quick else 1_000_000
    pages = 50 if quick else 300
    out: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="ev-bench-pages-"))
    try:
        path = root / "store"
        t0 = perf()
        _write(path, n)
        log(f"  pages: {n:,} events written and flushed in {perf() - t0:.1f} s")
        rnd = random.Random(7)
        with ev.open_store(path, read_only=True) as store:
            starts = [rnd.randrange(1, n - PAGE) for _ in range(pages)]
            list(store.read_all(from_position=n // 2, limit=1))  # open the files' position indexes
            for segment in store.state().segments:
                segment.rows_by_position()
            default: list[float] = []
            for _ in range(reps):
                default += _per_call_ms([_page(store, p) for p in starts])
            cold = []
            for p in starts[: pages // 10]:
                column_cache.clear()
                for segment in store.state().segments:
                    segment.rows_by_position()  # kept in the cache too: built again, untimed
                cold += _per_call_ms([_page(store, p)])
            set_cache_size(WARM_CACHE)
            try:
                _per_call_ms([_page(store, p) for p in starts])
                warm: list[float] = []
                for _ in range(reps):
                    warm += _per_call_ms([_page(store, p) for p in starts])
            finally:
                set_cache_size(DEFAULT_BYTES)
            median = statistics.median(warm)
            out.append(result(
                f"read_all(from_position=p, limit={PAGE}), random p, {n:,} events, warm", warm, "ms", "< 1",
                passed=None if quick else median < 1.0,
                note=f"{pages} pages, each read {reps} times after a first read, cache of {WARM_CACHE >> 20} MiB; "
                f"~{PAGE} row groups each",
            ))
            out.append(result(
                f"the same, cold: nothing in the cache but the files' position indexes ({n:,} events)", cold, "ms",
                note=f"{len(cold)} pages; each of their ~{PAGE} row groups decoded from Parquet",
            ))
            out.append(result(
                f"the same, random p, default cache of {DEFAULT_BYTES >> 20} MiB ({n:,} events)", default, "ms",
                note="random pages touch every row group of every file: a cache too small for them decodes most again",
            ))
            follower: list[float] = []
            for _ in range(reps):
                p = rnd.randrange(1, n - PAGE * pages)
                follower += _per_call_ms([_page(store, p + k * PAGE) for k in range(pages)])
            out.append(result(
                f"a follower paging through the log, limit={PAGE}, {n:,} events", follower, "ms",
                note=f"{pages} consecutive pages from a random start, {reps} times",
            ))
            newest_ms, whole_ms = [], []
            for _ in range(reps):
                for s in range(LONG_STREAMS):
                    sid = f"long-{s}"
                    t0 = perf()
                    [newest] = store.read_stream(sid, reverse=True, limit=1)
                    newest_ms.append((perf() - t0) * 1e3)
                    t0 = perf()
                    whole = store.read_stream(sid)
                    whole_ms.append((perf() - t0) * 1e3)
                    assert whole[-1] == newest
            length = len(whole)
            out.append(result(
                f"newest event of a stream of ~{length:,}: read_stream(reverse=True, limit=1)", newest_ms, "ms",
            ))
            out.append(result(f"the same event by reading the whole stream (~{length:,} events)", whole_ms, "ms"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=1, default=str))
