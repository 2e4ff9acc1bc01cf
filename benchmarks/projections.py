"""Projections: SqlProjection rebuilds, Python Projection rebuilds (beside the peer), live lag.

``run(quick)`` returns one dict per measurement: name, value (the median), unit, budget
(the budget in words), passed (None when quick: quick mode judges nothing), and
details (min, max, sizes, the peer's figure). Runnable alone::

    python -m benchmarks.projections [--quick]

Scenarios:

1. ``SqlProjection`` rebuild over 10M events (quick: 100k) of 1,000 account streams:
   balance per account (``sum(amount), count(*) GROUP BY stream_id``, upserted), one
   columnar pass, blue/green swap included. Budget: >= 20M events/s. Beside it, the same
   grouped by the payload column ``account_id`` (reported, no budget).
2. Python ``Projection`` rebuild over 1M events (quick: 50k) of five types, interested
   in one (200k handled), trivial handler. Budget: >= 1M events/s (log events per
   second; the handled rate is reported too). Beside it, the peer (eventsourcing +
   SQLite): its notification log read in pages of 1,000, filtered by topic before
   mapping (its best case), mapped to domain events, the same trivial handler.
3. Live lag: one event appended to a store of 1M events (quick: 20k) is reflected in a
   running incremental ``SqlProjection`` (its table and checkpoint committed) within
   50 ms, median of 40.

Big stores are built with appends of 10,000 events, ``durability="none"``, and kept
under ``benchmarks/.cache/projections-*`` keyed by size and by a hash of the store's
source (quick mode builds afresh in a temporary folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import eventador as ev
from benchmarks.common import source_hash
from eventador.projections import Projection, ProjectionRunner, SqlProjection

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache"
PER_APPEND = 10_000
CURRENCIES = ("EUR", "USD", "GBP", "CHF")


class PDeposited(ev.Event, event_type="bench.projections.Deposited"):
    account_id: str
    amount: float
    currency: str
    note: str


class T1(ev.Event, event_type="bench.projections.T1"):
    account_id: str
    amount: float


class T2(ev.Event, event_type="bench.projections.T2"):
    account_id: str
    amount: float


class T3(ev.Event, event_type="bench.projections.T3"):
    account_id: str
    amount: float


class T4(ev.Event, event_type="bench.projections.T4"):
    account_id: str
    amount: float


class T5(ev.Event, event_type="bench.projections.T5"):
    account_id: str
    amount: float


FIVE: tuple[type[ev.Event], ...] = (T1, T2, T3, T4, T5)

BALANCES = SqlProjection(
    "bench_balances",
    setup_sql="CREATE TABLE bench_balances (account_id VARCHAR PRIMARY KEY, balance DOUBLE, deposits BIGINT)",
    apply_sql="""
        INSERT INTO bench_balances
        SELECT stream_id, sum(amount), count(*) FROM new_bench_projections_Deposited GROUP BY stream_id
        ON CONFLICT (account_id) DO UPDATE SET
            balance = balance + excluded.balance, deposits = deposits + excluded.deposits
    """,
)
# The same read model grouped by a payload column (account_id == the stream here): the
# store writes typed string columns without a dictionary, so grouping by one costs more.
BALANCES_BY_FIELD = SqlProjection(
    "bench_balances_by_field",
    setup_sql="CREATE TABLE bench_balances_by_field (account_id VARCHAR PRIMARY KEY, balance DOUBLE, deposits BIGINT)",
    apply_sql="""
        INSERT INTO bench_balances_by_field
        SELECT account_id, sum(amount), count(*) FROM new_bench_projections_Deposited GROUP BY account_id
        ON CONFLICT (account_id) DO UPDATE SET
            balance = balance + excluded.balance, deposits = deposits + excluded.deposits
    """,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _store_dir(kind: str, events: int, quick: bool, build: Callable[[Path], None]) -> Iterator[Path]:
    """A store of `events` events built by `build`: cached (full runs) or temporary (quick)."""
    if quick:
        with tempfile.TemporaryDirectory(prefix=f"ev-bench-{kind}-") as tmp:
            path = Path(tmp) / "store"
            build(path)
            yield path
        return
    path = CACHE / f"projections-{kind}-{events}-{source_hash()}"
    if not (path / "BUILT").exists():
        for stale in CACHE.glob(f"projections-{kind}-{events}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        started = time.perf_counter()
        build(path)
        (path / "BUILT").write_text(f"{time.perf_counter() - started:.1f} s\n")
        log(f"  built {kind} store of {events:,} events in {time.perf_counter() - started:.0f} s: {path}")
    yield path


def _deposits(events: int) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        with ev.open_store(path, durability="none") as store:
            for s in range(events // PER_APPEND):
                sid = f"acc-{s:06d}"
                store.append(sid, [
                    PDeposited(account_id=sid, amount=float((s * 7 + i) % 10_000) / 100,
                               currency=CURRENCIES[i % 4], note="x")
                    for i in range(PER_APPEND)
                ])
                if s % 100 == 99:
                    log(f"  ... {(s + 1) * PER_APPEND:,} / {events:,} events")
            store.flush()

    return build


def _five_types(events: int) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        with ev.open_store(path, durability="none") as store:
            for s in range(events // PER_APPEND):
                sid = f"acc-{s:06d}"
                store.append(sid, [FIVE[i % 5](account_id=sid, amount=float(i)) for i in range(PER_APPEND)])
            store.flush()

    return build


def _result(name: str, values: list[float], unit: str, budget: str, ok: Callable[[float], bool], quick: bool,
            **details: Any) -> dict[str, Any]:
    median = statistics.median(values)
    log(f"  {name}: median {median:,.1f} {unit} (min {min(values):,.1f}, max {max(values):,.1f})")
    return {
        "name": name,
        "value": median,
        "unit": unit,
        "budget": budget,
        "passed": None if quick else ok(median),
        "details": {"min": min(values), "max": max(values), "reps": len(values), **details},
    }


# -- 1. SqlProjection rebuild --------------------------------------------------------------------


def sql_rebuild(quick: bool, reps: int) -> list[dict[str, Any]]:
    n = 100_000 if quick else 10_000_000
    log(f"== projections: SqlProjection rebuild over {n:,} events")
    out = []
    with _store_dir("sql", n, quick, _deposits(n)) as path, ev.open_store(path, durability="none") as store:
        assert store.last_position == n
        files = store.info()["files"]
        for projection, label, budget in (
            (BALANCES, "balance per account stream (GROUP BY stream_id, upsert)", ">= 20M events/s"),
            (BALANCES_BY_FIELD, "the same by a payload column (GROUP BY account_id)", "reported (no budget)"),
        ):
            with ProjectionRunner(store, [projection], progress=False) as runner:
                started = time.perf_counter()
                runner.run_until_caught_up()  # the first build, or nothing when the cache has it
                first = time.perf_counter() - started
                values = []
                for _ in range(reps):
                    gc.collect()
                    started = time.perf_counter()
                    runner.rebuild(projection.name)
                    values.append(n / (time.perf_counter() - started))
                count, deposits = store.sql(f"SELECT count(*), sum(deposits) FROM {projection.name}").fetchall()[0]
                assert (count, deposits) == (n // PER_APPEND, n), (count, deposits)
            result = _result(
                f"SqlProjection rebuild, {n:,} events: {label}, blue/green swap included",
                values, "events/s", budget, lambda v: v >= 20e6, quick,
                events=n, parquet_files=files, first_catch_up_s=round(first, 3),
            )
            if projection is not BALANCES:
                result["passed"] = None  # reported, not judged
            out.append(result)
    return out


# -- 2. Python Projection rebuild, beside the peer --------------------------------------------------


class CountT3(Projection[int]):
    """A trivial handler: counts the events of one type of five."""

    projection_id = "bench-count-t3"
    interested_event_types = (T3,)

    def __init__(self) -> None:
        self.count = 0

    @property
    def read_model(self) -> int:
        return self.count

    def handle(self, event: ev.Event) -> bool:
        self.count += 1
        return True

    def reset(self) -> None:
        self.count = 0


def python_rebuild(quick: bool, reps: int) -> list[dict[str, Any]]:
    n = 50_000 if quick else 1_000_000
    log(f"== projections: Python Projection rebuild over {n:,} events, 1 type of 5")
    with _store_dir("python", n, quick, _five_types(n)) as path, ev.open_store(path, durability="none") as store:
        projection = CountT3()
        with ProjectionRunner(store, [projection], progress=False) as runner:
            runner.run_until_caught_up()
            values = []
            for _ in range(reps):
                gc.collect()
                started = time.perf_counter()
                runner.rebuild(projection.projection_id)
                values.append(n / (time.perf_counter() - started))
                assert projection.count == n // 5, projection.count
    peer = _peer_projection(n if quick else 200_000, reps)
    handled = [v / 5 for v in values]
    result = _result(
        f"Python Projection rebuild, {n:,} events of 5 types, interested in 1 (trivial handler)",
        values, "events/s", ">= 1M events/s (log events; handled = 1/5 of them)", lambda v: v >= 1e6, quick,
        events=n, handled_per_s=statistics.median(handled),
        peer_events_per_s=peer["median"] if peer else None, peer_events=peer["events"] if peer else None,
        ratio_to_peer=(statistics.median(values) / peer["median"]) if peer else None,
        peer_note=peer["note"] if peer else "eventsourcing is not installed",
    )
    if not peer:
        return [result]
    log(f"  peer (eventsourcing + SQLite, {peer['events']:,} events): median {peer['median']:,.0f} events/s; "
        f"eventador is {result['details']['ratio_to_peer']:.1f}x")
    return [result, {
        "name": f"the peer's projection processing, {peer['events']:,} events of 5 types, interested in 1",
        "side": "peer",
        "value": peer["median"],
        "unit": "events/s",
        "budget": "",
        "passed": None,
        "details": {"min": peer["min"], "max": peer["max"], "note": peer["note"]},
    }]


def _peer_projection(n: int, reps: int) -> dict[str, Any] | None:
    """The peer: read its notification log (pages of 1,000), skip other topics, map, handle."""
    try:
        from eventsourcing.application import Application
        from eventsourcing.domain import Aggregate, event
    except ImportError:
        return None

    class Account(Aggregate):
        @event("Opened")
        def __init__(self, account_id: str) -> None:
            self.account_id = account_id

        @event("T1")
        def t1(self, amount: float) -> None: ...

        @event("T2")
        def t2(self, amount: float) -> None: ...

        @event("T3")
        def t3(self, amount: float) -> None: ...

        @event("T4")
        def t4(self, amount: float) -> None: ...

        @event("T5")
        def t5(self, amount: float) -> None: ...

    class Bank(Application):
        log_section_size = 1000

    with tempfile.TemporaryDirectory(prefix="ev-bench-peer-") as tmp:
        db = os.path.join(tmp, "peer.sqlite")
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": db}
        app = Bank(env=env)
        per = 1_000
        log(f"  building the peer's log of {n:,} events (saves of {per:,})")
        for a in range(max(1, n // per)):
            account = Account(account_id=f"acc-{a:06d}")
            for i in range(per - 1):
                (account.t1, account.t2, account.t3, account.t4, account.t5)[i % 5](amount=float(i))
            app.save(account)
        app.close()
        app = Bank(env=env)
        to_event = app.mapper.to_domain_event
        wanted = Account.T3.__qualname__  # the topic ends with it

        def once() -> tuple[int, int, float]:
            count = handled = 0
            start = 1
            started = time.perf_counter()
            while True:
                page = app.notification_log.select(start, 1000)
                if not page:
                    break
                for nt in page:
                    if nt.topic.endswith(wanted):
                        to_event(nt)
                        handled += 1
                count += len(page)
                start = page[-1].id + 1
            return count, handled, time.perf_counter() - started

        once()  # warm the page cache
        values = []
        for _ in range(reps):
            gc.collect()
            count, handled, seconds = once()
            values.append(count / seconds)
        app.close()
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "events": count,
        "note": f"notification log pages of 1,000, topic filter before mapping, {handled:,} handled",
    }


# -- 3. Live lag -----------------------------------------------------------------------------------


def live_lag(quick: bool, samples: int) -> dict[str, Any]:
    n = 20_000 if quick else 1_000_000
    log(f"== projections: live lag of a SqlProjection over a store of {n:,} events")
    with _store_dir("sql", n, quick, _deposits(n)) as cached, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        shutil.copytree(cached, path)  # this scenario appends: keep the cached store as it was
        with ev.open_store(path, durability="none") as store:
            return _live_lag(store, n, quick, samples)


def _live_lag(store: ev.EventStore, n: int, quick: bool, samples: int) -> dict[str, Any]:
    runner = ProjectionRunner(store, [BALANCES], progress=False)
    runner.run_until_caught_up()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(runner.run())
        started.set()
        await task

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait()
    assert runner.wait_for_position(store.last_position, timeout=60)
    lags: list[float] = []
    try:
        for i in range(samples + 3):
            time.sleep(0.01)  # let the runner go back to waiting, as between real appends
            t0 = time.perf_counter()
            store.append("acc-live", [PDeposited(account_id="acc-live", amount=1.0, currency="EUR", note="x")])
            assert runner.wait_for_position(store.last_position, timeout=10)
            if i >= 3:  # the first ones warm the caches
                lags.append((time.perf_counter() - t0) * 1e3)
    finally:
        asyncio.run_coroutine_threadsafe(runner.stop(), loop).result()
        thread.join()
        loop.close()
        runner.close()
    reflected = store.sql("SELECT deposits FROM bench_balances WHERE account_id = 'acc-live'").fetchall()
    assert reflected and reflected[0][0] >= samples
    return _result(
    f"live lag: append -> reflected in a running SqlProjection (store of {n:,} events)",
    lags, "ms", "<= 50 ms median", lambda v: v <= 50, quick,
    p90=sorted(lags)[int(len(lags) * 0.9)], samples=len(lags),
    )


def run(quick: bool) -> list[dict[str, Any]]:
    """Every projection benchmark; quick: small sizes, nothing judged (passed is None)."""
    reps = 3 if quick else 5
    out = []
    out.extend(sql_rebuild(quick, reps))
    out.extend(python_rebuild(quick, reps))
    out.append(live_lag(quick, 15 if quick else 40))
    return out


if __name__ == "__main__":
    import json

    results = run("--quick" in sys.argv)
    print(json.dumps(results, indent=1, default=str))
