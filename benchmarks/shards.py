"""Sharded writers (issue 19): appends per second from one shard to two, one process per shard.

    python -m benchmarks.shards [--quick]

``run(quick)`` returns one dict per measurement (see ``benchmarks/timetravel.py``). N
single-event appends (120,000; quick: 4,000) of one event type to 1,000 streams, with
``durability="batch"`` and a flush every 20,000 events per shard, written:

1. by one process into a store of one shard;
2. by two processes into a store of two shards (``ev.open_shard``), N/2 each, each to the
   streams its shard holds;
3. by two threads of one process into the same two shards (``ev.open_sharded``), for
   comparison: the appends share one interpreter.

Events/s is N over the time from the moment every writer is ready (its store open) to the
last one's last append; making each event is inside the timed loop, as in the store's rows.
Budget: 2 over 1 at least 1.6x on 2 cores, which needs both cores free: the CPU time the
writers use per event is reported beside, as other work on the machine does not change it
(two shards scale while it stays the same).
Closing (the final flush) is not timed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import eventador as ev  # noqa: E402
from benchmarks.common import result  # noqa: E402

ACCOUNTS = [f"acc-{i}" for i in range(1_000)]
FLUSH_EVERY = 20_000


class Deposited(ev.Event, event_type="bench.shards.Deposited"):
    account: str
    amount: float


def _append(store: ev.ShardedStore, shard: int, n: int) -> None:
    """`n` single-event appends to the streams of `shard`, round robin (each event made in the loop)."""
    streams = [a for a in ACCOUNTS if store.shard_of(a) == shard]
    append = store.append
    for i in range(n):
        stream = streams[i % len(streams)]
        append(stream, Deposited(account=stream, amount=float(i)))


def _worker(root: str, shard: int, n: int, ready: Any, go: Any, done: Any) -> None:
    """One process: open its shard, get ready, append on the signal, report (start, end, CPU seconds)."""
    store = ev.open_shard(root, shard, durability="batch", flush_every=FLUSH_EVERY)
    try:
        ready.put(shard)
        go.wait()
        started, cpu = time.monotonic(), time.process_time()
        _append(store, shard, n)
        done.put((started, time.monotonic(), time.process_time() - cpu))
    finally:
        store.close()


def _processes(root: Path, shards: int, n: int) -> tuple[float, float]:
    """Events/s of `shards` processes writing n/shards events each into their own shard, and
    events per CPU second (their CPU time summed: what the machine's load does not change)."""
    ev.open_sharded(root, shards=shards).close()
    ctx = mp.get_context("spawn")
    ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=_worker, args=(str(root), s, n // shards, ready, go, done)) for s in range(shards)]
    for w in workers:
        w.start()
    for _ in workers:
        ready.get(timeout=120)
    go.set()
    spans = [done.get(timeout=600) for _ in workers]
    for w in workers:
        w.join(timeout=120)
        if w.exitcode != 0:
            raise RuntimeError(f"a shard writer exited with {w.exitcode}")
    total = n // shards * shards
    return total / (max(end for _, end, _ in spans) - min(start for start, _, _ in spans)), total / sum(
        cpu for _, _, cpu in spans
    )


def _threads(root: Path, shards: int, n: int) -> float:
    """Events/s of `shards` threads of this process, each writing its own shard."""
    with ev.open_sharded(root, shards=shards, durability="batch", flush_every=FLUSH_EVERY) as store:
        threads = [threading.Thread(target=_append, args=(store, s, n // shards)) for s in range(shards)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return (n // shards * shards) / (time.monotonic() - started)


def run(quick: bool, *, reps: int | None = None) -> list[dict[str, Any]]:
    """The three ways of writing, alternated per repetition; quick: 4,000 events, nothing judged."""
    reps = reps or (1 if quick else 3)
    n = 4_000 if quick else 120_000
    one, two, threads, one_cpu, two_cpu = [], [], [], [], []
    base = Path(tempfile.mkdtemp(prefix="ev-bench-shards-"))
    try:
        for rep in range(reps):
            for runs, cpus, shards in ((one, one_cpu, 1), (two, two_cpu, 2)):
                rate, per_cpu = _processes(base / f"{shards}-{rep}", shards, n)
                runs.append(rate)
                cpus.append(per_cpu)
            threads.append(_threads(base / f"threads-{rep}", 2, n))
            for path in base.iterdir():
                shutil.rmtree(path, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ratio = statistics.median(two) / statistics.median(one)
    what = f"{n:,} single-event appends, durability batch"
    return [
        result(f"{what}: 1 shard, 1 process", one, "events/s"),
        result(f"{what}: 2 shards, 2 processes", two, "events/s"),
        result(f"{what}: 2 shards, 2 threads of 1 process", threads, "events/s"),
        result(f"{what}: 1 shard, per CPU second of its process", one_cpu, "events/s"),
        result(f"{what}: 2 shards, per CPU second of the 2 processes", two_cpu, "events/s"),
        result(
            "2 shards in 2 processes / 1 shard", [ratio], "x", ">= 1.6", passed=None if quick else ratio >= 1.6,
            note=f"{statistics.median(two):,.0f} against {statistics.median(one):,.0f} events/s",
        ),
    ]


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=1, default=str))
