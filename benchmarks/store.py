"""eventador's event store, through its public API only (`import eventador as ev`).

Three parts, each runnable alone with ``--only``:

* ``writes``: durable appends (one writer, eight writer threads, 100 events per call,
  many streams), then reading that many-streams store back with ``read_all`` and its
  bytes on disk per event;
* ``reads``: ``read_stream`` of short and long streams in a store of >= 1M events,
  after flush, close and reopen;
* ``sql``: ``SELECT sum(amount) FROM Deposited`` over 10M events; and the same sum over
  10M events stored at schema version 1, whose summed field a ``Rename`` upcaster has
  renamed since (the typed view applies it in SQL).

The big stores of ``reads`` and ``sql`` are set up with large appends and
``durability="none"``; outside ``--quick`` they are kept under ``benchmarks/.cache/``,
keyed by size and by a hash of the store's source, and reused.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import statistics
import threading
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import eventador as ev
from benchmarks.common import NOTE, Context, dir_bytes, fmt, log, pct, perf, perf_ns, repeat, source_hash

GROUP = "eventador"
ROOT = Path(__file__).resolve().parent.parent
# The files whose change can change what a store holds on disk: a cached store built
# by another version of them is rebuilt, not trusted.


class Opened(ev.Event):
    account_id: str


class Deposited(ev.Event):
    account_id: str
    amount: float
    currency: str
    note: str


def unavailable() -> str | None:
    """Why the eventador group cannot run yet, or None when it can."""
    if not callable(getattr(ev, "open_store", None)):
        return "eventador.open_store is not available yet"
    return None


def run(ctx: Context) -> None:
    parts = ctx.parts or frozenset({"writes", "reads", "sql"})
    if "writes" in parts:
        log("== eventador: durable appends")
        _guard(ctx, "single", lambda: _single(ctx))
        _guard(ctx, "threads", lambda: _threads(ctx))
        _guard(ctx, "threads", lambda: _threads(ctx, "none"))
        batched_dir = _guard(ctx, "batched", lambda: _batched(ctx))
        many_dir = _guard(ctx, "many", lambda: _many(ctx))
        _guard(ctx, "disk_writes", lambda: _disk_writes(ctx))
        if batched_dir is not None:
            _guard(ctx, "bytes", lambda: _bytes(ctx, batched_dir, ctx.sizes.batched, "batched", "1 stream"))
        if many_dir is not None:
            n = ctx.sizes.read_all_events
            _guard(ctx, "bytes", lambda: _bytes(ctx, many_dir, n, "many", f"{ctx.sizes.aggregates:,} streams"))
            _guard(ctx, "read_all", lambda: _read_all(ctx, many_dir))
        else:
            ctx.results.errors.setdefault("read_all", "the many-streams store was not built")
    if "reads" in parts:
        log("== eventador: read_stream in a big store")
        _guard(ctx, "read_stream", lambda: _read_stream(ctx))
    if "sql" in parts:
        log("== eventador: SQL aggregate over a big store")
        _guard(ctx, "sql", lambda: _sql(ctx))
        _guard(ctx, "sql_renamed", lambda: _sql_renamed(ctx))


def _guard(ctx: Context, key: str, fn: Callable[[], Any]) -> Any:
    """Runs one scenario; a failure is recorded (and shown in the table), not fatal."""
    try:
        return fn()
    except Exception as exc:
        ctx.results.errors[key] = f"{type(exc).__name__}: {exc}"
        log(f"  ERROR in eventador scenario {key!r}:\n{traceback.format_exc()}")
        return None


def _deposit(ctx: Context, sid: str, i: int) -> Deposited:
    p = ctx.payloads
    return Deposited(account_id=sid, amount=p.amount(i), currency=p.currency(i), note=NOTE)


def _deposits(ctx: Context, sid: str, start: int, count: int) -> list[Deposited]:
    p = ctx.payloads
    return [
        Deposited(account_id=sid, amount=p.amount(i), currency=p.currency(i), note=NOTE)
        for i in range(start, start + count)
    ]


# --------------------------------------------------------------------------
# writes
# --------------------------------------------------------------------------


def _single(ctx: Context) -> None:
    n, sid = ctx.sizes.single, "acc-000000"
    p50s: list[float] = []
    p99s: list[float] = []

    def once(r: int) -> float:
        path = ctx.path(f"ev-single-{r}")
        lat = []
        with ev.open_store(path, durability="fsync") as store:
            version = 0
            t0 = perf()
            for i in range(n):
                events = [_deposit(ctx, sid, i)]
                s0 = perf_ns()
                version = store.append(sid, events, expected_version=version)
                lat.append(perf_ns() - s0)
            dt = perf() - t0
        assert version == n, (version, n)
        shutil.rmtree(path)
        p50s.append(statistics.median(lat) / 1e3)
        p99s.append(pct(lat, 99) / 1e3)
        return n / dt

    ctx.results.add(
        "ev_single",
        GROUP,
        f"single-event appends, fsync, 1 writer ({n:,})",
        "events/s",
        repeat(ctx.reps, once),
        better="higher",
        note=f"append p50 {fmt(statistics.median(p50s))} us, p99 {fmt(statistics.median(p99s))} us",
    )


def _threads(ctx: Context, durability: str = "fsync") -> None:
    """Eight writer threads. With durability "none" it is a reference: what the threads
    reach with no fsync at all, the ceiling the GIL and thread wakeups leave."""
    w, per = ctx.sizes.writers, ctx.sizes.per_writer
    shared: list[float] = []

    def once(r: int) -> float:
        path = ctx.path(f"ev-threads-{durability}-{r}")
        errors: list[BaseException] = []
        barrier = threading.Barrier(w + 1)
        with ev.open_store(path, durability=durability) as store:

            def writer(t: int) -> None:
                sid = f"acc-{t:06d}"
                version = 0
                barrier.wait()
                try:
                    for i in range(per):
                        version = store.append(sid, [_deposit(ctx, sid, i)], expected_version=version)
                    assert version == per, (version, per)
                except BaseException as exc:
                    errors.append(exc)

            pool = [threading.Thread(target=writer, args=(t,)) for t in range(w)]
            for th in pool:
                th.start()
            fsyncs = store.info()["fsyncs"]
            barrier.wait()
            t0 = perf()
            for th in pool:
                th.join()
            dt = perf() - t0
            shared.append(w * per / max(1, store.info()["fsyncs"] - fsyncs))
        if errors:
            raise errors[0]
        shutil.rmtree(path)
        return w * per / dt

    runs = repeat(ctx.reps, once)
    ctx.results.add(
        "ev_threads" if durability == "fsync" else f"ev_threads_{durability}",
        GROUP,
        f"{w} writer threads, single-event appends, {durability} ({w} x {per:,})",
        "events/s",
        runs,
        better="higher",
        note=f"{statistics.median(shared):.1f} appends per fsync" if durability == "fsync" else "reference: no fsync",
    )


def _batched(ctx: Context) -> str:
    n, batch, sid = ctx.sizes.batched, ctx.sizes.batch, "acc-000000"
    kept = ctx.path(f"ev-batched-{ctx.reps - 1}")

    def once(r: int) -> float:
        path = ctx.path(f"ev-batched-{r}")
        with ev.open_store(path, durability="fsync") as store:
            version = 0
            t0 = perf()
            for b in range(n // batch):
                version = store.append(sid, _deposits(ctx, sid, b * batch, batch), expected_version=version)
            dt = perf() - t0
            store.flush()
        assert version == n, (version, n)
        if path != kept:
            shutil.rmtree(path)
        return n / dt

    ctx.results.add(
        "ev_batched",
        GROUP,
        f"appends of {batch} events, fsync ({n:,} events, 1 stream)",
        "events/s",
        repeat(ctx.reps, once),
        better="higher",
        note="incl. creating the event objects",
    )
    return kept


def _many(ctx: Context) -> str:
    aggs, per = ctx.sizes.aggregates, ctx.sizes.per_aggregate
    kept = ctx.path(f"ev-many-{ctx.reps - 1}")

    def once(r: int) -> float:
        path = ctx.path(f"ev-many-{r}")
        k = 0
        with ev.open_store(path, durability="fsync") as store:
            t0 = perf()
            for a in range(aggs):
                sid = f"acc-{a:06d}"
                events: list[ev.Event] = [Opened(account_id=sid)]
                events += _deposits(ctx, sid, k, per - 1)
                k += per - 1
                store.append(sid, events, expected_version=0)
            dt = perf() - t0
            store.flush()
        if path != kept:
            shutil.rmtree(path)
        return aggs * per / dt

    ctx.results.add(
        "ev_many",
        GROUP,
        f"many streams ({aggs:,} x {per} events, 1 append each), fsync",
        "events/s",
        repeat(ctx.reps, once),
        better="higher",
    )
    return kept


SMALL_FLUSH = 1_000  # events per flush in the disk-writes scenario


def _written_bytes() -> int | None:
    """This process's bytes written to storage so far (Linux: write_bytes of /proc/self/io,
    counted as page-cache pages are dirtied), or None where the kernel does not tell."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _disk_writes(ctx: Context) -> None:
    """Bytes written to disk per byte logged, with small flushes: the log's preallocated zeros
    and its frames, the Parquet files and their compaction, the catalog and the manifest."""
    flushes = 4 if ctx.quick else 20
    batch, sid = ctx.sizes.batch, "acc-000000"

    def once(r: int) -> float:
        path = ctx.path(f"ev-disk-writes-{r}")
        before = _written_bytes()
        with ev.open_store(path, durability="fsync", flush_every=SMALL_FLUSH) as store:
            version = 0
            for b in range(flushes * SMALL_FLUSH // batch):
                version = store.append(sid, _deposits(ctx, sid, b * batch, batch), expected_version=version)
            logged = store.info()["log_bytes"]
        after = _written_bytes()
        shutil.rmtree(path)
        if before is None or after is None or after == before:
            return math.nan
        return (after - before) / logged

    ratios = repeat(ctx.reps, once)
    if any(math.isnan(r) for r in ratios):
        log("  disk writes not measured: this system does not count them (no /proc/self/io, or a tmpfs)")
        return
    ctx.results.add(
        "ev_disk_writes",
        GROUP,
        f"bytes written to disk per byte logged ({flushes} flushes of {SMALL_FLUSH:,} events, "
        f"appends of {batch}, fsync)",
        "x",
        ratios,
        better="lower",
        note="write_bytes of /proc/self/io from opening to closing (a page each fsync rewrites counts again); "
        "bytes logged: the log's frames, the events as the store first writes them. Measured on Linux 6.18 "
        "ext4, per byte logged: frames 1.0 + pages each fsync rewrites 0.5, the log's preallocated zeros 1.1, "
        "Parquet flushes 0.5, compaction 0.6, catalog, manifest and opening 0.2; the file system's journal "
        "(written by a kernel thread) is not counted: see docs/architecture.md, Log segments",
    )


def _bytes(ctx: Context, path: str, events: int, key: str, shape: str) -> None:
    _report_bytes(ctx, dir_bytes(path), events, key, shape)


def _report_bytes(ctx: Context, sizes: dict[str, int], events: int, key: str, shape: str) -> None:
    parts = ", ".join(f"{k} {v:,} B" for k, v in sorted(sizes.items()) if k != "total")
    ctx.results.add(
        f"ev_bytes_{key}",
        GROUP,
        f"bytes on disk per event ({events:,} events, {shape})",
        "B/event",
        [sizes["total"] / events],
        better="lower",
        note=f"after flush + close: {parts}",
    )


def _read_all(ctx: Context, path: str) -> None:
    total = ctx.sizes.read_all_events

    def read(store: Any) -> int:
        count, last = 0, 0
        for rec in store.read_all():
            rec.event  # noqa: B018  (decode the typed event, as a reader would)
            count += 1
            last = rec.position
        assert count == total and last == total, (count, last, total)
        return count

    with ev.open_store(path) as store:
        t0 = perf()
        read(store)  # warm-up
        first = perf() - t0

        def once(r: int) -> float:
            t0 = perf()
            count = read(store)
            return count / (perf() - t0)

        ctx.results.add(
            "ev_read_all",
            GROUP,
            f"read_all() of {total:,} events, touching .event",
            "events/s",
            repeat(ctx.reps, once),
            better="higher",
            note=f"after flush, close, reopen; first pass {total / first:,.0f} events/s",
        )


# --------------------------------------------------------------------------
# big stores: built once, maybe cached
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BigStore:
    path: str
    events: int
    info: dict[str, Any]


def _big_store(ctx: Context, kind: str, events: int, build: Callable[[str], dict[str, Any]]) -> BigStore:
    """The store `kind` of `events` events: from the cache when it is there, else built.

    `build(path)` writes the store (and closes it) and returns facts to keep with it.
    """
    if ctx.cache_dir is None:
        path = ctx.path(f"ev-{kind}")
        info = _timed_build(path, build)
        info["cached"] = False
        return BigStore(path, events, info)

    cache = Path(ctx.cache_dir)
    entry = cache / f"{kind}-{events}-{source_hash()}"
    meta = entry / "meta.json"
    if meta.exists() and not ctx.rebuild_cache:
        info = json.loads(meta.read_text())
        if info.get("events") == events:
            info["cached"] = True
            return BigStore(str(entry / "store"), events, info)
    # Stores built by an older source, or half-built ones, only take disk space.
    for stale in cache.glob(f"{kind}-{events}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = cache / f"{entry.name}.building"
    tmp.mkdir(parents=True)
    info = _timed_build(str(tmp / "store"), build)
    info["events"] = events
    info["built_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (tmp / "meta.json").write_text(json.dumps(info, indent=2))
    tmp.rename(entry)
    info["cached"] = False
    return BigStore(str(entry / "store"), events, info)


def _timed_build(path: str, build: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    t0 = perf()
    info = build(path)
    info["build_seconds"] = round(perf() - t0, 2)
    info["bytes"] = dir_bytes(path)  # as left by flush + close, before any reopen
    return info


def _setup_line(ctx: Context, what: str, big: BigStore, layout: str) -> None:
    secs = big.info["build_seconds"]
    how = f"built in {secs:.1f} s ({big.events / secs:,.0f} events/s incl. flush + close), durability='none', {layout}"
    if big.info.get("cached"):
        how = f"reused from cache {big.path} (it was {how})"
    elif ctx.cache_dir is not None:
        how += f"; cached at {big.path}"
    ctx.results.add_setup(what, how)


# --------------------------------------------------------------------------
# reads: read_stream in a store of >= 1M events
# --------------------------------------------------------------------------


def _read_layout(ctx: Context) -> tuple[list[tuple[str, int]], list[str], list[str]]:
    """The streams of the read store (id, length) and the ones to read, short and long.

    Long streams are spread through the id space; each measured read is of a different
    stream, so no read is served by whatever the previous read left in a cache.
    """
    sz = ctx.sizes
    small, large = sz.stream_small, sz.stream_large
    n_large = max(ctx.reps, sz.reads_large)
    n_small = max(max(ctx.reps, sz.reads_small) + 1, (sz.read_store - n_large * large + small - 1) // small)
    total_streams = n_small + n_large
    large_at = {round((j + 0.5) * total_streams / n_large) for j in range(n_large)}
    streams = [(f"acc-{i:06d}", large if i in large_at else small) for i in range(total_streams)]
    smalls = [sid for sid, n in streams if n == small]
    larges = [sid for sid, n in streams if n == large]
    want = max(ctx.reps, sz.reads_small) + 1  # +1: the warm-up read
    step = len(smalls) / want
    picked = [smalls[int((j + 0.5) * step)] for j in range(want)]
    return streams, picked, larges


def _build_read_store(ctx: Context, streams: list[tuple[str, int]], rounds: int) -> Callable[[str], dict[str, Any]]:
    def build(path: str) -> dict[str, Any]:
        k = 0
        with ev.open_store(path, durability="none") as store:
            # Interleaved arrival: every stream gets a quarter of its events per round.
            for rnd in range(rounds):
                for sid, n in streams:
                    chunk = n // rounds
                    store.append(sid, _deposits(ctx, sid, k, chunk), expected_version=rnd * chunk)
                    k += chunk
            store.flush()
        return {"layout": f"{len(streams):,} streams"}

    return build


def _read_stream(ctx: Context) -> None:
    sz = ctx.sizes
    rounds = 4
    streams, picked, larges = _read_layout(ctx)
    total = sum(n for _, n in streams)
    big = _big_store(ctx, "read", total, _build_read_store(ctx, streams, rounds))
    n_small = sum(1 for _, n in streams if n == sz.stream_small)
    _setup_line(
        ctx,
        f"read_stream store ({total:,} events)",
        big,
        f"{n_small:,} streams of {sz.stream_small:,} + {len(larges)} of {sz.stream_large:,} events, "
        f"written in {rounds} interleaved rounds of appends of {sz.stream_small // rounds:,} / "
        f"{sz.stream_large // rounds:,} events",
    )
    _report_bytes(ctx, big.info["bytes"], total, "read_store", f"{len(streams):,} streams")

    def read(store: Any, sid: str, size: int) -> float:
        t0 = perf()
        recs = store.read_stream(sid)
        for rec in recs:
            rec.event  # noqa: B018  (decode the typed event)
        dt = perf() - t0
        assert len(recs) == size and recs[0].version == 1 and recs[-1].version == size, (sid, len(recs))
        assert recs[-1].event.account_id == sid
        return dt * 1e3

    t0 = perf()
    with ev.open_store(big.path) as store:
        open_ms = (perf() - t0) * 1e3
        first_ms = read(store, picked[0], sz.stream_small)
        for size, targets, key in (
            (sz.stream_small, picked[1:], "small"),
            (sz.stream_large, larges, "large"),
        ):
            vals = repeat(len(targets), functools.partial(_nth_read, read, store, targets, size))
            per_event = fmt(statistics.median(vals) * 1e3 / size)
            note = f"{len(targets)} different streams, each read once; {per_event} us/event"
            if key == "small":
                note += f"; store opened in {open_ms:,.0f} ms, first read after open {first_ms:.1f} ms"
            ctx.results.add(
                f"ev_read_stream_{size}",
                GROUP,
                f"read_stream, {size:,} events, in a store of {total:,} (touching .event)",
                "ms",
                vals,
                better="lower",
                note=note,
            )


def _nth_read(read: Callable[[Any, str, int], float], store: Any, targets: list[str], size: int, r: int) -> float:
    return read(store, targets[r], size)


# --------------------------------------------------------------------------
# sql: sum over 10M events
# --------------------------------------------------------------------------


def _build_sql_store(ctx: Context, events: int, per: int) -> Callable[[str], dict[str, Any]]:
    def build(path: str) -> dict[str, Any]:
        amounts: list[float] = []
        with ev.open_store(path, durability="none") as store:
            for s in range(events // per):
                sid = f"acc-{s:06d}"
                batch = _deposits(ctx, sid, s * per, per)
                amounts.append(math.fsum(e.amount for e in batch))
                store.append(sid, batch, expected_version=0)
                if s % 100 == 99:
                    log(f"  ... {(s + 1) * per:,} / {events:,} events")
            store.flush()
        return {"expected_sum": math.fsum(amounts)}

    return build


def _sql(ctx: Context) -> None:
    n, per = ctx.sizes.sql_events, ctx.sizes.sql_per_append
    big = _big_store(ctx, "sql", n, _build_sql_store(ctx, n, per))
    _setup_line(ctx, f"SQL store ({n:,} events)", big, f"{n // per:,} appends of {per:,} events, 1 stream each")
    _report_bytes(ctx, big.info["bytes"], n, "sql_store", f"{n // per:,} streams")
    expected = big.info["expected_sum"]
    query = "SELECT sum(amount) FROM Deposited"
    _timed_sums(ctx, big.path, n, expected, query, "Deposited", "ev_sql_sum", "")
    try:
        _duckdb_reference(ctx, big.path, n, expected)
    except Exception as exc:  # a reference only: it never fails the run
        log(f"  reference skipped: {type(exc).__name__}: {exc}")


def _timed_sums(
    ctx: Context, path: str, n: int, expected: float, query: str, view: str, key: str, note: str
) -> None:
    """Opens the store at `path`, checks `view` holds `n` events, and times `query` (a sum
    that must come out as `expected`): the first run after opening, then the repetitions."""

    def once(store: Any) -> float:
        t0 = perf()
        rows = store.sql(query).fetchall()
        dt = perf() - t0
        got = rows[0][0]
        assert math.isclose(got, expected, rel_tol=1e-9), (got, expected)
        return n / dt

    t0 = perf()
    with ev.open_store(path) as store:
        open_ms = (perf() - t0) * 1e3
        (count,) = store.sql(f"SELECT count(*) FROM {view}").fetchall()[0]
        assert count == n, (count, n)
        first = once(store)
        vals = repeat(max(ctx.reps, 5), lambda r: once(store))
    ctx.results.add(
        key,
        GROUP,
        f'store.sql("{query}").fetchall() over {n:,} events{note}',
        "events/s",
        vals,
        better="higher",
        note=f"store opened in {open_ms:,.0f} ms; first query after open {first:,.0f} events/s",
    )


# The renamed-field store: events written by version 1 of bench.Deposited, whose `value`
# version 2 calls `amount`. Its Parquet files hold version 1's columns.
RENAMED_TYPE = "bench.Deposited"


def _renamed_class(version: int, amount: str) -> Any:
    """bench.Deposited at `version`, its float field called `amount`: one class defined
    again, as a notebook cell run again would."""
    fields = {"account_id": str, amount: float, "currency": str, "note": str}
    return types.new_class(
        "BenchDeposited", (ev.Event,), {"event_type": RENAMED_TYPE, "version": version},
        lambda ns: ns.update(__annotations__=fields),
    )


def _build_renamed_store(ctx: Context, events: int, per: int) -> Callable[[str], dict[str, Any]]:
    def build(path: str) -> dict[str, Any]:
        stored_deposited = _renamed_class(1, "value")
        p = ctx.payloads
        amounts: list[float] = []
        with ev.open_store(path, durability="none") as store:
            for s in range(events // per):
                sid = f"acc-{s:06d}"
                batch = [
                    stored_deposited(account_id=sid, value=p.amount(i), currency=p.currency(i), note=NOTE)
                    for i in range(s * per, (s + 1) * per)
                ]
                amounts.append(math.fsum(e.value for e in batch))
                store.append(sid, batch, expected_version=0)
                if s % 100 == 99:
                    log(f"  ... {(s + 1) * per:,} / {events:,} events")
            store.flush()
        return {"expected_sum": math.fsum(amounts)}

    return build


def _sql_renamed(ctx: Context) -> None:
    n, per = ctx.sizes.sql_events, ctx.sizes.sql_per_append
    big = _big_store(ctx, "sql-v1", n, _build_renamed_store(ctx, n, per))
    _setup_line(ctx, f"SQL store at version 1 ({n:,} events)", big, f"{n // per:,} appends of {per:,} events")
    ev.upcaster(RENAMED_TYPE, 1, ev.Rename("value", "amount"))
    _renamed_class(2, "amount")  # today's class

    query = f'SELECT sum(amount) FROM "{RENAMED_TYPE}"'
    note = " stored at version 1, `amount` renamed from `value` by an upcaster"
    _timed_sums(ctx, big.path, n, big.info["expected_sum"], query, f'"{RENAMED_TYPE}"', "ev_sql_sum_renamed", note)


def _duckdb_reference(ctx: Context, path: str, n: int, expected: float) -> None:
    """What DuckDB alone does over the same Parquet files: the ceiling for row 7 on this machine.

    Best effort: it looks for the store's Parquet files and an amount column by name, and
    says so on stderr when it cannot find them (the store's layout is its own business).
    """
    import duckdb

    files = sorted(str(f) for f in Path(path).rglob("*.parquet"))
    if not files:
        log("  reference skipped: no Parquet files in the SQL store")
        return
    con = duckdb.connect()
    try:
        src = "read_parquet([" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "])"
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
        amount = next((c for c in cols if c == "amount" or c.endswith(".amount")), None)
        if amount is None:
            log(f"  reference skipped: no amount column among {cols}")
            return
        where = " WHERE event_type = 'Deposited'" if "event_type" in cols else ""
        query = f'SELECT sum("{amount}") FROM {src}{where}'
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]  # type: ignore[index]

        def once(r: int) -> float:
            t0 = perf()
            got = con.execute(query).fetchall()[0][0]
            dt = perf() - t0
            assert math.isclose(got, expected, rel_tol=1e-9), (got, expected)
            return n / dt

        once(0)  # warm-up, like the store's first query
        ctx.results.add(
            "ref_duckdb_sum",
            "machine",
            f"reference: DuckDB alone, sum over the SQL store's {len(files)} Parquet files ({n:,} rows)",
            "events/s",
            repeat(max(ctx.reps, 5), once),
            better="higher",
            note=f'read_parquet(...) sum("{amount}"){where}; DuckDB threads={threads}',
        )
    finally:
        con.close()
