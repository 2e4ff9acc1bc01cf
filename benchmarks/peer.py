"""The peer: the `eventsourcing` library (9.x) with its SQLite persistence, on files.

The same scenarios as the peer baseline (shared/bench/peer_baseline.py), rewritten for
this runner and fed the same random payloads as the eventador scenarios: single-event
commits, eight writer threads, commits of 100 events, many aggregates, repository.get of
a short and a long aggregate with and without snapshots, reading the whole notification
log back as domain events, and bytes on disk per event.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import statistics
import threading
from typing import Any

from benchmarks.common import NOTE, Context, fmt, log, pct, perf, perf_ns, repeat

GROUP = "peer"


def _domain() -> tuple[type, type, type, type]:
    """The peer's aggregate and applications, defined only when the peer group runs."""
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Account(Aggregate):
        @event("Opened")
        def __init__(self, account_id: str):
            self.account_id = account_id
            self.balance = 0.0

        @event("Deposited")
        def deposit(self, account_id: str, amount: float, currency: str, note: str) -> None:
            self.balance += amount

    class Bank(Application):
        log_section_size = 1000  # allow pages of 1,000 from notification_log

    class SnapBank(Application):
        log_section_size = 1000
        snapshotting_intervals = {Account: 100}  # noqa: RUF012  (the library's own API)

    return Account, Bank, SnapBank, Application


def _app(cls: type, path: str) -> Any:
    return cls(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path})


def _rm_db(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


def _db_bytes(path: str) -> int:
    return sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))


def run(ctx: Context) -> None:
    Account, Bank, SnapBank, _ = _domain()
    res, sz, pay, reps = ctx.results, ctx.sizes, ctx.payloads, ctx.reps
    log("== peer: eventsourcing, SQLite file")

    # How durable the peer is: read back from the library's own connection.
    path = ctx.path("peer-pragma.db")
    app = _app(Bank, path)
    app.save(Account("acc-0"))
    with app.recorder.datastore.transaction(commit=False) as cur:
        cur.execute("PRAGMA journal_mode")
        journal = cur.fetchone()[0]
        cur.execute("PRAGMA synchronous")
        sync = cur.fetchone()[0]
    app.close()
    _rm_db(path)
    res.meta["peer_sqlite"] = {
        "journal_mode": journal,
        "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, sync),
        "sqlite_version": sqlite3.sqlite_version,
    }
    log(f"  peer SQLite: journal_mode={journal} synchronous={res.meta['peer_sqlite']['synchronous']}")

    # 1. single-event commits ------------------------------------------------
    n = sz.single
    p50s: list[float] = []
    p99s: list[float] = []

    def single(r: int) -> float:
        path = ctx.path(f"peer-single-{r}.db")
        app = _app(Bank, path)
        acc = Account("acc-000000")
        app.save(acc)
        lat = []
        t0 = perf()
        for i in range(n):
            acc.deposit("acc-000000", pay.amount(i), pay.currency(i), NOTE)
            s0 = perf_ns()
            app.save(acc)
            lat.append(perf_ns() - s0)
        dt = perf() - t0
        app.close()
        _rm_db(path)
        p50s.append(statistics.median(lat) / 1e3)
        p99s.append(pct(lat, 99) / 1e3)
        return n / dt

    res.add(
        "peer_single",
        GROUP,
        f"single-event commits ({n:,} x app.save of 1 event)",
        "events/s",
        repeat(reps, single),
        better="higher",
        note=f"app.save p50 {fmt(statistics.median(p50s))} us, p99 {fmt(statistics.median(p99s))} us",
    )

    # 2. writer threads, each its own aggregate ------------------------------
    w, per = sz.writers, sz.per_writer

    def threads(r: int) -> float:
        path = ctx.path(f"peer-threads-{r}.db")
        app = _app(Bank, path)
        accounts = [Account(f"acc-{t:06d}") for t in range(w)]
        for acc in accounts:
            app.save(acc)
        barrier = threading.Barrier(w + 1)
        errors: list[BaseException] = []

        def writer(t: int) -> None:
            acc = accounts[t]
            sid = f"acc-{t:06d}"
            barrier.wait()
            try:
                for i in range(per):
                    acc.deposit(sid, pay.amount(i), pay.currency(i), NOTE)
                    app.save(acc)
            except BaseException as exc:
                errors.append(exc)

        pool = [threading.Thread(target=writer, args=(t,)) for t in range(w)]
        for th in pool:
            th.start()
        barrier.wait()
        t0 = perf()
        for th in pool:
            th.join()
        dt = perf() - t0
        app.close()
        _rm_db(path)
        if errors:
            raise errors[0]
        return w * per / dt

    res.add(
        "peer_threads",
        GROUP,
        f"{w} writer threads, single-event commits ({w} x {per:,})",
        "events/s",
        repeat(reps, threads),
        better="higher",
    )

    # 3. commits of 100 events ----------------------------------------------
    n, batch = sz.batched, sz.batch
    kept: dict[str, str] = {}

    def batched(r: int) -> float:
        path = ctx.path(f"peer-batched-{r}.db")
        app = _app(Bank, path)
        acc = Account("acc-000000")
        app.save(acc)
        t0 = perf()
        for b in range(n // batch):
            for i in range(b * batch, (b + 1) * batch):
                acc.deposit("acc-000000", pay.amount(i), pay.currency(i), NOTE)
            app.save(acc)
        dt = perf() - t0
        app.close()
        if r == reps - 1:
            kept["batched"] = path
        else:
            _rm_db(path)
        return n / dt

    res.add(
        "peer_batched",
        GROUP,
        f"commits of {batch} events ({n:,} events, 1 aggregate)",
        "events/s",
        repeat(reps, batched),
        better="higher",
        note="incl. the command methods that create the events",
    )

    # 4. many aggregates ----------------------------------------------------
    aggs, per_agg = sz.aggregates, sz.per_aggregate

    def many(r: int) -> float:
        path = ctx.path(f"peer-many-{r}.db")
        app = _app(Bank, path)
        k = 0
        t0 = perf()
        for a in range(aggs):
            sid = f"acc-{a:06d}"
            acc = Account(sid)
            for _ in range(per_agg - 1):
                acc.deposit(sid, pay.amount(k), pay.currency(k), NOTE)
                k += 1
            app.save(acc)
        dt = perf() - t0
        app.close()
        if r == reps - 1:
            kept["many"] = path
        else:
            _rm_db(path)
        return aggs * per_agg / dt

    res.add(
        "peer_many",
        GROUP,
        f"many aggregates ({aggs:,} x {per_agg} events, 1 commit each)",
        "events/s",
        repeat(reps, many),
        better="higher",
    )

    # 5. repository.get ------------------------------------------------------
    _recovery(ctx, Account, Bank, SnapBank)

    # 6. read the whole log back as domain events ---------------------------
    app = _app(Bank, kept["many"])  # re-opened, as a reader process would
    total = aggs * per_agg
    to_event = app.mapper.to_domain_event

    def read_all(want_sum: bool) -> tuple[int, float]:
        count, start, amount = 0, 1, 0.0
        while True:
            page = app.notification_log.select(start, 1000)
            if not page:
                break
            for nt in page:
                e = to_event(nt)
                if want_sum and type(e).__name__ == "Deposited":
                    amount += e.amount
            count += len(page)
            start = page[-1].id + 1
        return count, amount

    read_all(False)  # warm-up (page cache)

    def timed_read(want_sum: bool) -> float:
        t0 = perf()
        count, _ = read_all(want_sum)
        dt = perf() - t0
        assert count == total, (count, total)
        return count / dt

    res.add(
        "peer_read_all",
        GROUP,
        f"read all {total:,} events decoded (notification log, pages of 1,000)",
        "events/s",
        repeat(reps, lambda r: timed_read(False)),
        better="higher",
    )
    res.add(
        "peer_sum_python",
        GROUP,
        f"sum(amount) in Python over the decoded log ({total:,} events)",
        "events/s",
        repeat(reps, lambda r: timed_read(True)),
        better="higher",
        note="the peer has no query over payload fields: a sum reads every event back",
    )
    app.close()

    # 7. bytes on disk per event ---------------------------------------------
    for name, path, count, shape in (
        ("many", kept["many"], total, f"{aggs:,} aggregates"),
        ("batched", kept["batched"], n + 1, "1 aggregate"),
    ):
        size = _db_bytes(path)
        con = sqlite3.connect(path)
        rows, state_len = con.execute("SELECT count(*), avg(length(state)) FROM stored_events").fetchone()
        con.close()
        assert rows == count, (rows, count)
        res.add(
            f"peer_bytes_{name}",
            GROUP,
            f"bytes on disk per event ({count:,} events, {shape})",
            "B/event",
            [size / count],
            better="lower",
            note=f"{size:,} B after close; avg JSON state {state_len:.0f} B",
        )
        _rm_db(path)


def _recovery(ctx: Context, Account: type, Bank: type, SnapBank: type) -> None:
    res, sz, pay = ctx.results, ctx.sizes, ctx.payloads
    small, large = sz.stream_small, sz.stream_large
    reps_for = {small: max(ctx.reps, sz.reads_small), large: max(ctx.reps, sz.reads_large)}

    def build(app: Any, size: int, save_every: int) -> Any:
        sid = f"acc-{size:06d}"
        acc = Account(sid)  # the creation event is version 1
        for v in range(2, size + 1):
            acc.deposit(sid, pay.amount(v), pay.currency(v), NOTE)
            if v % save_every == 0:
                app.save(acc)
        app.save(acc)
        return acc.id

    def measure(app: Any, agg_id: Any, size: int, nrep: int) -> list[float]:
        assert app.repository.get(agg_id).version == size  # warm-up

        def once(r: int) -> float:
            t0 = perf()
            app.repository.get(agg_id)
            return (perf() - t0) * 1e3

        return repeat(nrep, once)

    path = ctx.path("peer-recovery.db")
    app = _app(Bank, path)
    ids = {size: build(app, size, min(1000, size)) for size in (small, large)}
    for size in (small, large):
        vals = measure(app, ids[size], size, reps_for[size])
        res.add(
            f"peer_get_{size}",
            GROUP,
            f"repository.get, {size:,} events, no snapshot",
            "ms",
            vals,
            better="lower",
            note=f"{fmt(statistics.median(vals) * 1e3 / size)} us/event",
        )
    app.close()
    _rm_db(path)

    path = ctx.path("peer-recovery-snap.db")
    app = _app(SnapBank, path)
    ids = {size: build(app, size + 50, 100) for size in (small, large)}
    for size in (small, large):
        vals = measure(app, ids[size], size + 50, reps_for[size])
        res.add(
            f"peer_get_snap_{size}",
            GROUP,
            f"repository.get, {size + 50:,} events, snapshot every 100 (1 snapshot + 50 events)",
            "ms",
            vals,
            better="lower",
        )
    app.close()
    _rm_db(path)
