"""Publishing to the lake (issue 19): what a Delta commit per flush costs beside the flush.

    python -m benchmarks.lake [--quick]

``run(quick)`` returns one dict per measurement (see ``benchmarks/timetravel.py``). A store
with a lake (a local path, then S3 on a real SeaweedFS server started here) takes FLUSHES
flushes of N events each (50,000; quick: 2,000) in 1,000 streams, events with an int, a
Decimal and a text field. Each flush is timed (``store.flush()``, durability "fsync"), and
so is the publish that follows it in the publisher's thread (reading the new file, turning
it into the lake's schema with ``payload_json``, the Delta commit: ``lake.last_seconds``).
Each also without ``payload_json`` (``LakeTarget(payload_json=False)``), to show what it costs.
Budget: publishing at most 10% of the flush time (median of the flushes), with and without S3.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import eventador as ev  # noqa: E402
from benchmarks.common import log, perf, result  # noqa: E402

BUDGET = 0.10
STREAMS = 1_000


class BenchLakeDeposited(ev.Event, event_type="bench.lake.Deposited"):
    amount: int
    fee: Decimal
    note: str


def _flushes(path: Path, target: ev.LakeTarget, n: int, flushes: int) -> tuple[list[float], list[float]]:
    """(flush seconds, publish seconds) of each flush."""
    flush_s, publish_s = [], []
    with ev.open_store(path, lake=target, flush_every=10 * n) as store:
        lake = store.lake
        assert lake is not None
        for f in range(flushes):
            events = [
                (f"acc-{i % STREAMS}", [BenchLakeDeposited(amount=i, fee=Decimal("0.25"), note="n")])
                for i in range(f * n, (f + 1) * n)
            ]
            store.append_many(events)
            t0 = perf()
            store.flush()
            flush_s.append(perf() - t0)
            lake.sync()  # waits for the thread's publish of this flush (or does it)
            publish_s.append(lake.last_seconds)
    return flush_s, publish_s


def _measure(name: str, path: Path, target: ev.LakeTarget, n: int, flushes: int, quick: bool) -> list[dict[str, Any]]:
    flush_s, publish_s = _flushes(path, target, n, flushes)
    shares = [p / f for p, f in zip(publish_s, flush_s, strict=True)]
    share = statistics.median(shares)
    return [
        result(f"{name}: flush of {n:,} events", [s * 1e3 for s in flush_s], "ms"),
        result(f"{name}: publish of the flush", [s * 1e3 for s in publish_s], "ms"),
        result(
            f"{name}: publish / flush", [s * 100 for s in shares], "%", f"<= {BUDGET:.0%}",
            passed=None if quick else share <= BUDGET,
        ),
    ]


def run(quick: bool, *, reps: int | None = None) -> list[dict[str, Any]]:
    """Local and S3 lakes; quick: 2,000 events a flush, nothing judged."""
    n = 2_000 if quick else 50_000
    flushes = reps or (3 if quick else 5)
    out: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="ev-bench-lake-"))
    try:
        target = ev.LakeTarget(str(root / "lake"), max_lag=None)
        out += _measure("local lake", root / "local", target, n, flushes, quick)
        plain = ev.LakeTarget(str(root / "lake-plain"), max_lag=None, payload_json=False)
        out += _measure("local lake, no payload_json", root / "local-plain", plain, n, flushes, quick)
        from eventador.testing.seaweed import WeedServer

        server = WeedServer(root)
        try:
            server.start()
        except RuntimeError as exc:
            log(f"  S3: skipped, the SeaweedFS server did not start: {exc}")
            return out
        try:
            for name, with_json in (("S3 lake (SeaweedFS)", True), ("S3 lake, no payload_json", False)):
                s3 = ev.LakeTarget(
                    f"s3://{server.bucket()}/events", storage_options=server.storage_options, max_lag=None,
                    payload_json=with_json,
                )
                out += _measure(name, root / f"s3-{with_json}", s3, n, flushes, quick)
        finally:
            server.kill()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run("--quick" in sys.argv), indent=1))
