"""Publishing to the lake (issue 19): what a Delta commit per flush costs beside the flush.

    python -m benchmarks.lake [--quick]

``run(quick)`` returns one dict per measurement (see ``benchmarks/timetravel.py``). A store
with a lake (a local path, then S3 on a real SeaweedFS server started here) takes FLUSHES
flushes of N events each (50,000; quick: 2,000) in 1,000 streams, events with an int, a
Decimal and a text field. Each flush is timed (``store.flush()``, durability "fsync"), and
so is the publish that follows it in the publisher's thread (``lake.last_seconds``): the
store's own data file, written by the flush in the lake's layout, added to the table as it
is (a hard link locally, one upload to S3) with its statistics and one Delta commit. Each
also without ``payload_json`` (``LakeTarget(payload_json=False)``), to show what it costs.
Budget: publishing at most 10% of the flush time (median of the flushes), with and without
S3. Since the flush now does part of the lake's work (the lake's columns beside the store's,
``lake.layout_seconds``), that share is judged too, with the same budget: (lake columns +
publish) / (flush - lake columns), what the lake adds to a flush without it. Beside them,
unjudged, where a publish's time goes (``lake.last_parts``, the first publish left out: it
adds the events' columns to the table, a file of its own).

The publisher has its own thread (pyarrow and delta-rs release the GIL), so the writer does
not wait for a publish: what it pays is measured apart. The same appends and flushes (10
flushes of 50,000 events) run in a store with a lake and in one without, taking turns (3
each), the ``sync`` that waits for the last publish included; the writer's slowdown is the
ratio of the median times minus one. Budget: at most 10%. With S3 the SeaweedFS server runs
on the same 2 cores: its own CPU during the writer's turns is reported beside (a share of the
writer's time), since in a deployment the object store's CPU is not the writer's.

Figures: docs/scaling.md, section 4.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import eventador as ev  # noqa: E402
from benchmarks.common import log, perf, result  # noqa: E402
from eventador.store.segments import FileSegment  # noqa: E402

BUDGET = 0.10
STREAMS = 1_000
WRITER_FLUSHES = 10  # the writer's run, with a lake and without


class BenchLakeDeposited(ev.Event, event_type="bench.lake.Deposited"):
    amount: int
    fee: Decimal
    note: str


def _batches(n: int, flushes: int) -> list[list[tuple[str, list[ev.Event]]]]:
    """The events of each flush: n each in `STREAMS` streams."""
    def event(i: int) -> ev.Event:
        return BenchLakeDeposited(amount=i, fee=Decimal("0.25"), note="n")

    return [[(f"acc-{i % STREAMS}", [event(i)]) for i in range(f * n, (f + 1) * n)] for f in range(flushes)]


def _flushes(
    path: Path, target: ev.LakeTarget, n: int, flushes: int
) -> tuple[list[float], list[float], list[dict[str, float]], bytes]:
    """(flush seconds, publish seconds, the publish's parts in seconds) of each flush, and the
    last data file's bytes; the flush's lake columns are among the parts, as ``layout``."""
    flush_s, publish_s, parts = [], [], []
    with ev.open_store(path, lake=target, flush_every=10 * n) as store:
        lake = store.lake
        assert lake is not None
        for events in _batches(n, flushes):
            store.append_many(events)
            t0 = perf()
            store.flush()
            flush_s.append(perf() - t0)
            lake.sync()  # waits for the thread's publish of this flush (or does it)
            publish_s.append(lake.last_seconds)
            parts.append({**lake.last_parts, "layout": lake.layout_seconds})
        last = store.state().segments[-1]
        body = last.path.read_bytes() if isinstance(last, FileSegment) else b""
    return flush_s, publish_s, parts, body


def _floor(server: Any, bucket: str, body: bytes, turns: int) -> tuple[float, float]:
    """Median seconds of the object store's least for a publish: one PUT of the data file
    `body`, and one PUT of a commit's size (1.5 KB), through pyarrow's S3 client."""
    files = server.filesystem()

    def put(name: str, data: bytes) -> float:
        t0 = perf()
        with files.open_output_stream(f"{bucket}/floor/{name}") as out:
            out.write(data)
        return perf() - t0

    whole = [put(f"file-{i}", body) for i in range(turns)]
    small = [put(f"commit-{i}.json", b"x" * 1500) for i in range(turns)]
    return statistics.median(whole), statistics.median(small)


def _writer_seconds(path: Path, target: ev.LakeTarget | None, batches: list[list[tuple[str, list[ev.Event]]]]) -> float:
    """Seconds of the writer's appends and flushes of `batches`, and (with a lake) of the
    ``sync`` that waits for the last publish."""
    n = len(batches[0])
    with ev.open_store(path, lake=target, flush_every=10 * n) as store:
        t0 = perf()
        for events in batches:
            store.append_many(events)
            store.flush()
        if store.lake is not None:
            store.lake.sync()
        return perf() - t0


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) process `pid` has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _slowdown(
    name: str, root: Path, target: Callable[[int], ev.LakeTarget], n: int, flushes: int, reps: int, quick: bool,
    server_pid: int | None = None,
) -> list[dict[str, Any]]:
    """The writer with a lake against the writer without one, taking turns (medians); with
    `server_pid`, also the CPU the object store's server spent meanwhile on this machine's cores."""
    batches = _batches(n, flushes)
    plain, lake, server = [], [], []
    for rep in range(reps):
        plain.append(_writer_seconds(root / f"writer-{rep}", None, batches))
        before = _cpu_seconds(server_pid) if server_pid else 0.0
        lake.append(_writer_seconds(root / f"writer-lake-{rep}", target(rep), batches))
        if server_pid:
            server.append((_cpu_seconds(server_pid) - before) / lake[-1] * 100)
    slowdown = statistics.median(lake) / statistics.median(plain) - 1
    events = n * flushes
    extra = [
        result(
            f"the S3 server's own CPU meanwhile, {name}", server, "% of the writer's time",
            note="the object store runs on the writer's 2 cores here (elsewhere in a deployment)",
        )
    ] if server else []
    return [
        *extra,
        result(f"writer, no lake (beside the {name}): {flushes} flushes of {n:,} events", [events / s for s in plain],
               "events/s"),
        result(f"writer, {name}", [events / s for s in lake], "events/s"),
        result(
            f"writer's slowdown, {name}", [(w / p - 1) * 100 for w, p in zip(lake, plain, strict=True)], "%",
            f"<= {BUDGET:.0%}", passed=None if quick else slowdown <= BUDGET, value=slowdown * 100,
        ),
    ]


_PARTS = [
    ("the add action's statistics", ("stats",)),
    ("upload (locally a hard link) and Delta commit", ("upload", "commit")),
]


def _measure(
    name: str, path: Path, target: ev.LakeTarget, n: int, flushes: int, quick: bool, server: Any = None,
) -> list[dict[str, Any]]:
    """The flushes and publishes of a store with `target`; with `server` (S3), the object
    store's own floor beside them."""
    flush_s, publish_s, parts, body = _flushes(path, target, n, flushes)
    shares = [p / f for p, f in zip(publish_s, flush_s, strict=True)]
    # What the lake adds to a flush without it: the lake's columns in the flush, and the publish.
    layouts = [p["layout"] for p in parts]
    totals = [(lay + p) / (f - lay) for lay, p, f in zip(layouts, publish_s, flush_s, strict=True)]
    # Not the first publish, which adds the events' columns to the table (one write_deltalake).
    later = [(p, f) for p, f in zip(parts, flush_s, strict=True) if "write and commit" not in p]

    def part_share(names: tuple[str, ...]) -> list[float]:
        return [sum(p.get(k, 0.0) for k in names) / f * 100 for p, f in later]

    floor = []
    if server is not None:  # what the object store asks of any publish that adds a file and commits it
        whole, small = _floor(server, target.uri.removeprefix("s3://").split("/")[0], body, max(flushes, 3))
        log(f"  {name}: one PUT of the {len(body):,}-byte data file {whole * 1e3:.1f} ms, one 1.5 KB PUT "
            f"{small * 1e3:.1f} ms")
        floor = [result(f"{name}: the object store's floor (one PUT of the file, one small PUT) / flush",
                        [(whole + small) / f * 100 for f in flush_s], "%")]
    return [
        result(f"{name}: flush of {n:,} events", [s * 1e3 for s in flush_s], "ms"),
        result(f"{name}: publish of the flush", [s * 1e3 for s in publish_s], "ms"),
        result(f"{name}: the flush's lake columns / flush", [lay / f * 100 for lay, f in zip(layouts, flush_s,
                                                                                            strict=True)], "%"),
        *(result(f"{name}: publish's {label} / flush", part_share(keys), "%") for label, keys in _PARTS),
        result(
            f"{name}: publish / flush", [s * 100 for s in shares], "%", f"<= {BUDGET:.0%}",
            passed=None if quick else statistics.median(shares) <= BUDGET,
        ),
        result(
            f"{name}: (lake columns + publish) / (flush - lake columns)", [t * 100 for t in totals], "%",
            f"<= {BUDGET:.0%}", passed=None if quick else statistics.median(totals) <= BUDGET,
        ),
        *floor,
    ]


def run(quick: bool, *, reps: int | None = None) -> list[dict[str, Any]]:
    """Local and S3 lakes; quick: 2,000 events a flush, nothing judged."""
    n = 2_000 if quick else 50_000
    flushes = reps or (3 if quick else 5)
    turns, writer_flushes = (1, 3) if quick else (3, WRITER_FLUSHES)
    out: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="ev-bench-lake-"))
    try:
        target = ev.LakeTarget(str(root / "lake"), max_lag=None)
        out += _measure("local lake", root / "local", target, n, flushes, quick)
        plain = ev.LakeTarget(str(root / "lake-plain"), max_lag=None, payload_json=False)
        out += _measure("local lake, no payload_json", root / "local-plain", plain, n, flushes, quick)
        out += _slowdown(
            "local lake", root, lambda rep: ev.LakeTarget(str(root / f"lake-writer-{rep}"), max_lag=None),
            n, writer_flushes, turns, quick,
        )
        from eventador.testing.seaweed import WeedServer

        server = WeedServer(root)
        try:
            server.start()
        except RuntimeError as exc:
            log(f"  S3: skipped, the SeaweedFS server did not start: {exc}")
            return out
        try:
            bucket = server.bucket()

            def s3(prefix: str, *, with_json: bool = True) -> ev.LakeTarget:
                return ev.LakeTarget(
                    f"s3://{bucket}/{prefix}", storage_options=server.storage_options, max_lag=None,
                    payload_json=with_json,
                )

            for name, with_json in (("S3 lake (SeaweedFS)", True), ("S3 lake, no payload_json", False)):
                out += _measure(name, root / f"s3-{with_json}", s3(f"events-{with_json}", with_json=with_json),
                                n, flushes, quick, server)
            out += _slowdown("S3 lake (SeaweedFS)", root, lambda rep: s3(f"writer-{rep}"), n, writer_flushes,
                             turns, quick, server_pid=server.process.pid if server.process else None)
        finally:
            server.kill()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run("--quick" in sys.argv), indent=1))
