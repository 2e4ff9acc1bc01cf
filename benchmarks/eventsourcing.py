"""eventsourcing applications on eventador beside eventsourcing's own SQLite module (issue 18).

    python -m benchmarks.eventsourcing [--quick]

``run(quick)`` returns one dict per measurement (see ``benchmarks/timetravel.py``): a row for
each side and a ratio row. The peer is ``PERSISTENCE_MODULE=eventsourcing.sqlite`` with
``SQLITE_DBNAME`` a file in a temporary folder (the library's own pragmas: WAL, synchronous
at SQLite's default); ours is ``PERSISTENCE_MODULE=eventador.ext.eventsourcing`` with
``EVENTADOR_PATH`` a temporary folder and ``EVENTADOR_DURABILITY=fsync``. Both recorders
come from ``InfrastructureFactory.construct``, as an application makes them; each write
repetition has a fresh database / store, and the two sides take turns.

1. eventsourcing's ``test_concurrent_throughput`` (``ApplicationRecorderTestCase``): 4 worker
   threads, a warm-up of 4 jobs, then 10 jobs of one ``insert_events`` of 50 events of a new
   originator each, timed as the test times it (pool start to pool end). Events/s. Budget:
   ours at least 2x SQLite's.
2. Its single-insert timing (``test_performance``): one StoredEvent of a new originator per
   ``insert_events``, 10 to warm up, 100 timed. µs per insert. Budget: ours no slower.
3. ``select_notifications(start, limit=10)`` on a store of 1M events (quick: 10,000),
   written through ``insert_events`` in calls of 10,000 events (10 of each of 1,000
   originators), closed and opened again: random starts, and a follower paging on from a
   random start; warm (each page read once before). ms per call. Budget: ours under 1 ms,
   with the store's default column cache (also reported with a larger cache, named so).
4. ``repository.get`` of an aggregate of 1,000 events, no snapshots, warm. ms per get.
   Budget: ours at least 3x faster. Beside it, unjudged: the recorder's ``select_events``
   of those events alone (what the persistence module does; the rest, turning stored
   events into domain events and folding them, is eventsourcing's own on both sides), and
   the same get in eventsourcing's in-memory (POPO) recorder: no storage at all, the floor
   that no backend can go under.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from timeit import timeit
from typing import Any
from uuid import UUID, uuid4

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder would be first on sys.path and this file would stand in for
# the eventsourcing package: import from the project's root instead.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eventsourcing.application import Application  # noqa: E402
from eventsourcing.domain import Aggregate, event  # noqa: E402
from eventsourcing.persistence import ApplicationRecorder, InfrastructureFactory, StoredEvent  # noqa: E402
from eventsourcing.utils import Environment  # noqa: E402

from benchmarks.common import log, perf, result  # noqa: E402
from eventador.store.cache import DEFAULT_BYTES, set_cache_size  # noqa: E402

PAGE = 10
LARGER_CACHE = 1 << 30
BUILD_BATCH = 10_000  # events per insert_events while building the big store
PER_ORIGINATOR = 10
SIDES = ("eventador", "peer")


class Counter(Aggregate):
    """An aggregate whose every event carries a little state."""

    @event("Started")
    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0

    @event("Added")
    def add(self, amount: int, note: str) -> None:
        self.total += amount


class Counters(Application[UUID]):
    pass


def _env(side: str, where: Path) -> dict[str, str]:
    if side == "eventador":
        return {
            "PERSISTENCE_MODULE": "eventador.ext.eventsourcing",
            "EVENTADOR_PATH": str(where),
            "EVENTADOR_DURABILITY": "fsync",
        }
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(where / "events.db")}


@contextmanager
def _recorder(side: str, where: Path) -> Iterator[ApplicationRecorder]:
    """A fresh application recorder of `side` in `where`, as an application named Bench makes it."""
    where.mkdir(parents=True, exist_ok=True)
    factory = InfrastructureFactory.construct(Environment("Bench", _env(side, where)))
    try:
        yield factory.application_recorder()
    finally:
        factory.close()


def _stored(originator: UUID, version: int) -> StoredEvent:
    return StoredEvent(originator_id=originator, originator_version=version, topic="topic", state=b"state")


def _peer_pragmas(root: Path) -> str:
    """The durability the peer runs with, read from the library's own connection."""
    with _recorder("peer", root / "pragmas") as recorder:
        recorder.insert_events([_stored(uuid4(), 1)])
        with recorder.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
            cursor.execute("PRAGMA journal_mode")
            journal = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            sync = cursor.fetchone()[0]
    level = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, sync)
    return f"SQLite journal_mode={journal}, synchronous={level}"


def _fsyncs(recorder: ApplicationRecorder) -> int:
    """fsyncs of our store's log so far (0 for the peer: SQLite does not count them). A
    counter read: ``store.info()`` would run a query just before the timed window."""
    store = getattr(recorder, "store", None)
    return int(store.fsyncs) if store is not None else 0


JOBS_PER_FSYNC: list[float] = []  # ours, per repetition of the timed part of test_concurrent_throughput


def _concurrent_throughput(recorder: ApplicationRecorder) -> float:
    """eventsourcing's test_concurrent_throughput: events/s of 10 jobs of 50 events on 4 threads."""
    num_events_per_job, num_jobs, num_workers = 50, 10, 4

    def insert_events() -> None:
        originator = uuid4()
        recorder.insert_events([_stored(originator, i) for i in range(num_events_per_job)])

    with ThreadPoolExecutor(max_workers=num_workers) as executor:  # warm-up
        for future in [executor.submit(insert_events) for _ in range(num_workers)]:
            future.result()
    fsyncs = _fsyncs(recorder)
    with ThreadPoolExecutor(max_workers=num_workers) as executor:
        started = perf()
        for future in [executor.submit(insert_events) for _ in range(num_jobs)]:
            future.result()
    ended = perf()
    if fsyncs := _fsyncs(recorder) - fsyncs:
        JOBS_PER_FSYNC.append(num_jobs / fsyncs)
    return num_jobs * num_events_per_job / (ended - started)


def _single_inserts(recorder: ApplicationRecorder) -> float:
    """eventsourcing's test_performance: µs per insert_events of one new originator's first event."""

    def insert() -> None:
        recorder.insert_events([_stored(uuid4(), 1)])

    timeit(insert, number=10)
    number = 100
    return 1e6 * timeit(insert, number=number) / number


def _writes(root: Path, fn: Callable[[ApplicationRecorder], float], reps: int) -> dict[str, list[float]]:
    """`fn` of a fresh recorder of each side, taking turns, `reps` times."""
    values: dict[str, list[float]] = {side: [] for side in SIDES}
    for rep in range(reps):
        for side in SIDES:
            with _recorder(side, root / f"{fn.__name__}-{side}-{rep}") as recorder:
                values[side].append(fn(recorder))
    return values


def _build(side: str, where: Path, n: int) -> float:
    """`n` events through insert_events (10 each of 1,000 originators a call); returns seconds."""
    t0 = perf()
    with _recorder(side, where) as recorder:
        for _ in range(0, n, BUILD_BATCH):
            events = []
            for _ in range(BUILD_BATCH // PER_ORIGINATOR):
                originator = uuid4()
                events += [_stored(originator, v) for v in range(1, PER_ORIGINATOR + 1)]
            recorder.insert_events(events)
    return perf() - t0


def _pages_ms(recorder: ApplicationRecorder, starts: list[int]) -> list[float]:
    times = []
    for start in starts:
        t0 = perf()
        page = recorder.select_notifications(start, limit=PAGE)
        times.append((perf() - t0) * 1e3)
        assert page[0].id == start and len(page) == PAGE
    return times


def _notifications(root: Path, n: int, reps: int, quick: bool) -> list[dict[str, Any]]:
    rnd = random.Random(18)
    pages = 50 if quick else 300
    random_starts = [rnd.randrange(1, n - PAGE) for _ in range(pages)]
    follower_starts = [rnd.randrange(1, n - PAGE * pages) for _ in range(reps)]
    built: dict[str, float] = {}
    measured: dict[str, list[float]] = {}
    for side in SIDES:
        where = root / f"notifications-{side}"
        built[side] = _build(side, where, n)
        log(f"  eventsourcing: {n:,} events through {side}'s insert_events in {built[side]:.1f} s")
        with _recorder(side, where) as recorder:
            caches = [("default", DEFAULT_BYTES)] + ([("larger", LARGER_CACHE)] if side == "eventador" else [])
            for cache, size in caches:
                set_cache_size(size)
                try:
                    _pages_ms(recorder, random_starts)  # warm: every page read once before
                    times = [t for _ in range(reps) for t in _pages_ms(recorder, random_starts)]
                    measured[f"random {side} {cache}"] = times
                finally:
                    set_cache_size(DEFAULT_BYTES)
            follower = [start + k * PAGE for start in follower_starts for k in range(pages)]
            _pages_ms(recorder, follower)
            measured[f"follower {side} default"] = _pages_ms(recorder, follower)
    out = []
    build_note = f"store built in {built['eventador']:.1f} s (peer {built['peer']:.1f} s)"
    for what, label, how in (
        ("random", "random start", f"{pages} random starts, each read once before, then {reps} times"),
        ("follower", "a follower paging on", f"{reps} followers of {pages} pages from random starts, read once before"),
    ):
        name = f"select_notifications(start, limit={PAGE}), {label}, {n:,} events, warm"
        ours, peer = measured[f"{what} eventador default"], measured[f"{what} peer default"]
        out.append(result(
            f"{name}, default cache {DEFAULT_BYTES >> 20} MiB", ours, "ms", "< 1",
            passed=None if quick else statistics.median(ours) < 1.0,
            note=f"{how}; {build_note}"
            + ("; random pages touch every row group of every file (about 150 MB decoded at 1M events): "
               "with a 64 MiB cache most pages decoded one again from Parquet (2.6 ms)" if what == "random" else ""),
        ))
        if what == "random":
            larger = measured["random eventador larger"]
            out.append(result(
                f"{name}, cache {LARGER_CACHE >> 20} MiB (set_cache_size)", larger, "ms", "< 1",
                passed=None if quick else statistics.median(larger) < 1.0,
            ))
        out.append(result(name, peer, "ms", side="peer"))
        out.append(_ratio(name, ours, peer, "ms", "", quick, None))
    return out


def _repository_get(root: Path, size: int, reps: int, quick: bool) -> list[dict[str, Any]]:
    gets: dict[str, list[float]] = {}
    selects: dict[str, list[float]] = {}
    apps = {}
    ids = {}
    for side in SIDES:
        where = root / f"get-{side}"
        where.mkdir()
        app = apps[side] = Counters(env=_env(side, where))
        counter = Counter(name="c")
        for i in range(1, size):
            counter.add(i, "x")
        app.save(counter)
        ids[side] = counter.id
        assert app.repository.get(counter.id).total == size * (size - 1) // 2  # warm
        gets[side], selects[side] = [], []
    try:
        for _ in range(reps):
            for side in SIDES:  # taking turns
                app, originator = apps[side], ids[side]
                t0 = perf()
                app.repository.get(originator)
                gets[side].append((perf() - t0) * 1e3)
                t0 = perf()
                found = app.recorder.select_events(originator)
                selects[side].append((perf() - t0) * 1e3)
                assert len(found) == size
    finally:
        for app in apps.values():
            app.close()
    name = f"repository.get of an aggregate of {size:,} events, no snapshots, warm"
    memory = _memory_get(size, reps)
    select = f"of which the recorder's select_events of its {size:,} stored events"
    ours_get, ours_select = statistics.median(gets["eventador"]), statistics.median(selects["eventador"])
    ceiling = statistics.median(gets["peer"]) / (ours_get - ours_select)
    return [
        result(name, gets["eventador"], "ms"),
        result(name, gets["peer"], "ms", side="peer"),
        _ratio(
            name, gets["eventador"], gets["peer"], "ms", ">= 3", quick, 3.0,
            also=f"; were select_events free, at most {ceiling:.2f}x: the rest is eventsourcing's mapper and fold",
        ),
        result(
            f"{name}, in eventsourcing's own memory (POPO) recorder", memory, "ms", side="peer",
            note="no storage at all: what no backend can beat",
        ),
        result(select, selects["eventador"], "ms"),
        result(select, selects["peer"], "ms", side="peer"),
        _ratio(select, selects["eventador"], selects["peer"], "ms", "", quick, None),
    ]


def _memory_get(size: int, reps: int) -> list[float]:
    """ms of repository.get of the same aggregate in eventsourcing's in-memory recorder: the
    mapper's decoding and the fold alone, the floor under every backend."""
    app = Counters(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    try:
        counter = Counter(name="c")
        for i in range(1, size):
            counter.add(i, "x")
        app.save(counter)
        app.repository.get(counter.id)  # warm
        times = []
        for _ in range(reps):
            t0 = perf()
            app.repository.get(counter.id)
            times.append((perf() - t0) * 1e3)
        return times
    finally:
        app.close()


def _ratio(
    name: str, ours: list[float], peer: list[float], unit: str, budget: str, quick: bool, least: float | None,
    also: str = "",
) -> dict[str, Any]:
    """How many times the peer's speed ours is (ratio of the medians), judged against `least`."""
    o, p = statistics.median(ours), statistics.median(peer)
    ratio = o / p if unit == "events/s" else p / o
    passed = None if quick or least is None else ratio >= least
    return result(
        f"{name}: eventador speed / peer speed", [ratio], "x", budget, passed=passed, side="ratio",
        note=f"median {o:,.4g} against {p:,.4g} {unit}{also}",
    )


def run(quick: bool, *, reps: int | None = None) -> list[dict[str, Any]]:
    """The four scenarios, both sides; quick: small sizes, one repetition of the writes, nothing judged."""
    write_reps = reps or (1 if quick else 61)  # each rep is milliseconds: many, for a steady median
    read_reps = reps or (2 if quick else 5)
    n = 10_000 if quick else 1_000_000
    out: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="ev-bench-eventsourcing-"))
    try:
        pragmas = _peer_pragmas(root)
        log("  eventsourcing: test_concurrent_throughput, each side in turn, fresh stores, fsync")
        JOBS_PER_FSYNC.clear()
        rates = _writes(root, _concurrent_throughput, write_reps)
        name = "test_concurrent_throughput: 4 threads, 10 jobs of insert_events(50 events), fsync"
        out += [
            result(
                name, rates["eventador"], "events/s",
                note=f"inserts per fsync of the log (group commit): median {statistics.median(JOBS_PER_FSYNC):.2f}; "
                "SQLite fsyncs each",
            ),
            result(name, rates["peer"], "events/s", side="peer", note=pragmas),
            _ratio(name, rates["eventador"], rates["peer"], "events/s", ">= 2", quick, 2.0),
        ]
        log("  eventsourcing: single inserts (test_performance), each side in turn, fresh stores, fsync")
        micros = _writes(root, _single_inserts, write_reps)
        name = "single inserts: insert_events(1 event of a new originator), fsync"
        out += [
            result(name, micros["eventador"], "µs"),
            result(name, micros["peer"], "µs", side="peer", note=pragmas),
            _ratio(name, micros["eventador"], micros["peer"], "µs", ">= 1", quick, 1.0),
        ]
        out += _notifications(root, n, read_reps, quick)
        out += _repository_get(root, 1_000, 3 if quick else 30, quick)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=1, default=str))
