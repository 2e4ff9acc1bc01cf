"""Time travel and real event logs (issue 6): fleet states as of a point, ``as_of`` SQL, importing BPI 2012.

    python -m benchmarks.timetravel [--quick]

``run(quick)`` returns one dict per measurement (name, value = the median, unit, budget,
min, max, reps, side, note, passed: None when quick, which judges nothing). Scenarios:

1. ``Repository.states(as_of=T)`` for 10,000 aggregates over 1,000,000 events (quick: 200
   aggregates, 20,000 events). Each aggregate (a small bank account) has 100 events,
   written with ``store.append_many(..., stream_type=...)`` in 10 interleaved rounds of
   10 events per aggregate, so every stream is spread over the whole log; a snapshot at
   versions 40 and 80 of every aggregate (``encode_snapshot`` + ``store.snapshots.save``, as
   the Repository takes them). T is the middle of the log (position 500,000: every
   aggregate at version 50), so ``states`` starts from the version-40 snapshot and folds 10
   events per aggregate. Budget: <= 1 s median. Beside it, ``states()`` now (snapshot 80 +
   20 events) and both again over a copy of the store without snapshots (every event folded).
   At most 3 repetitions: each call takes seconds.
2. ``SELECT count(*), sum(amount) FROM Deposited`` over the store group's 10M-event SQL
   store (quick: 100k; the same builder and the same ``benchmarks/.cache`` entry as
   ``benchmarks/store.py``), through ``store.sql`` and through ``store.as_of(T).sql`` with T
   at half the positions, and at the datetime when the middle event was recorded. Budget:
   the ``as_of`` median <= 2x the plain median. ``as_of`` at the last position (every event:
   the filter's cost alone) and a reused past view are reported too.
3. Importing BPI Challenge 2012 (``data/bpic2012.xes.gz``; quick:
   ``roadtraffic100traces.xes``) end to end: ``ev.read_xes``, then ``open_store`` on a fresh
   folder, ``store.import_dataframe`` and ``store.close()``. Budget: <= 10 s median. The read
   and the import (open + import + close) phases are reported separately. Skipped when the
   data folder is absent.
   Data: BPI Challenge 2012, B.F. van Dongen (2012), 4TU.ResearchData,
   DOI 10.4121/uuid:3926db30-f712-4394-aebc-75976070e91f (4TU.ResearchData General Terms
   of Use); see ``data/README.md``.

The store of scenario 1 is built once and kept under ``benchmarks/.cache/timetravel-states-*``
(git-ignored), keyed by size and by ``benchmarks.common.source_hash`` plus the snapshot
encoding (quick mode builds afresh in a temporary folder).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import eventador as ev  # noqa: E402
from benchmarks.common import Context, Payloads, Results, Sizes, log, result, source_hash  # noqa: E402
from eventador.aggregates import AggregateRoot  # noqa: E402
from eventador.aggregates.repository import Repository  # noqa: E402
from eventador.aggregates.snapshots import SnapshotConfig, encode_snapshot, snapshot_fingerprint  # noqa: E402

perf = time.perf_counter
CACHE = ROOT / "benchmarks" / ".cache"
DATA = ROOT / "data"  # the real logs ship with the repository (data/README.md)
KIND = "BenchTimeTravelAccount"
PER_AGGREGATE = 100
ROUNDS = 10  # each aggregate gets PER_AGGREGATE // ROUNDS events per round
SNAPSHOT_EVERY = 40
BASE = datetime(2026, 1, 1, tzinfo=UTC)
BPIC = (
    "BPI Challenge 2012, B.F. van Dongen (2012), 4TU.ResearchData, "
    "DOI 10.4121/uuid:3926db30-f712-4394-aebc-75976070e91f"
)


# -- the domain: a small bank account -----------------------------------------------------------


class Opened(ev.Event, event_type="bench.timetravel.Opened"):
    account_id: str


class Deposited(ev.Event, event_type="bench.timetravel.Deposited"):
    account_id: str
    amount: float


class Withdrawn(ev.Event, event_type="bench.timetravel.Withdrawn"):
    account_id: str
    amount: float


class AccountState(ev.State):
    account_id: str = ""
    balance: float = 0.0
    deposits: int = 0


class Account(AggregateRoot[AccountState]):
    aggregate_type = KIND
    snapshot_config = SnapshotConfig(event_count_threshold=SNAPSHOT_EVERY)

    @property
    def initial_state(self) -> AccountState:
        return AccountState(account_id=self.persistence_id)

    def handle_command(self, state: AccountState, command: ev.Command) -> list[ev.Event]:
        raise NotImplementedError("the benchmark writes the events in bulk")

    def apply_event(self, state: AccountState, event: ev.Event) -> AccountState:
        if isinstance(event, Deposited):
            return state.copy_with(balance=state.balance + event.amount, deposits=state.deposits + 1)
        if isinstance(event, Withdrawn):
            return state.copy_with(balance=state.balance - event.amount)
        return state


def _event(a: int, sid: str, version: int) -> ev.Event:
    """Aggregate a's event at `version`: Opened, then deposits, a withdrawal every 10th."""
    if version == 1:
        return Opened(account_id=sid)
    if version % 10 == 0:
        return Withdrawn(account_id=sid, amount=float(version % 7 + 1))
    return Deposited(account_id=sid, amount=float((a * 31 + version) % 100))


def _expected(a: int) -> tuple[list[float], list[int]]:
    """Balance and deposits of aggregate a after each version (index = version); whole numbers, exact."""
    balance, deposits = [0.0], [0]
    for version in range(1, PER_AGGREGATE + 1):
        b, d = balance[-1], deposits[-1]
        if version % 10 == 0:
            b -= float(version % 7 + 1)
        elif version > 1:
            b += float((a * 31 + version) % 100)
            d += 1
        balance.append(b)
        deposits.append(d)
    return balance, deposits


def _occurred(a: int, version: int) -> datetime:
    """When aggregate a's event at `version` occurred: its round's day, a seconds in."""
    return BASE + timedelta(days=(version - 1) // (PER_AGGREGATE // ROUNDS), seconds=a)


def _sid(a: int) -> str:
    return f"acc-{a:05d}"


# -- helpers ------------------------------------------------------------------------------------


def _result(
    name: str,
    values: list[float],
    unit: str,
    budget: str = "",
    *,
    quick: bool,
    ok: Callable[[float], bool] | None = None,
    note: str = "",
    side: str = "eventador",
    value: float | None = None,
) -> dict[str, Any]:
    median = statistics.median(values) if value is None else value
    passed = None if quick or ok is None else ok(median)
    return result(name, values, unit, budget, passed=passed, note=note, side=side, value=median)


def _skipped(name: str, unit: str, budget: str, why: str) -> dict[str, Any]:
    log(f"  {name}: skipped, {why}")
    return {
        "name": f"{name} (skipped: {why})",
        "value": None,
        "unit": unit,
        "budget": budget,
        "side": "eventador",
        "note": why,
        "passed": None,
    }


def _ms(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = perf()
    out = fn()
    return (perf() - t0) * 1e3, out


# -- 1. fleet time travel: Repository.states(as_of=T) ----------------------------------------------


def _cache_key() -> str:
    """The store's source hash, plus what decides whether a cached snapshot still decodes."""
    h = hashlib.sha256(source_hash().encode())
    h.update((ROOT / "eventador" / "snapshots.py").read_bytes())
    h.update(snapshot_fingerprint(AccountState, snapshot_version=Account.snapshot_version).encode())
    return h.hexdigest()[:12]


def _build_states_store(root: Path, aggregates: int) -> dict[str, Any]:
    """root/nosnap: the events only; root/snap: a copy of it plus snapshots at 40 and 80."""
    per_round = PER_AGGREGATE // ROUNDS
    chunk = max(1, 10_000 // per_round)  # aggregates per append_many: 10,000 events
    t0 = perf()
    with ev.open_store(root / "nosnap", durability="none") as store:
        for r in range(ROUNDS):
            versions = range(r * per_round + 1, (r + 1) * per_round + 1)
            for lo in range(0, aggregates, chunk):
                group = range(lo, min(aggregates, lo + chunk))
                store.append_many(
                    [(_sid(a), [_event(a, _sid(a), v) for v in versions]) for a in group],
                    expected_version=r * per_round,
                    occurred_at=[_occurred(a, versions[0]) for a in group],
                    stream_type=KIND,
                )
            log(f"  ... round {r + 1} / {ROUNDS}: {(r + 1) * per_round * aggregates:,} events")
        store.flush()
    events_s = perf() - t0
    shutil.copytree(root / "nosnap", root / "snap")
    t0 = perf()
    taken = BASE + timedelta(days=365)
    with ev.open_store(root / "snap", durability="none") as store:
        for a in range(aggregates):
            sid = _sid(a)
            balance, deposits = _expected(a)
            for version in range(SNAPSHOT_EVERY, PER_AGGREGATE + 1, SNAPSHOT_EVERY):
                state = AccountState(
                    account_id=sid,
                    balance=balance[version],
                    deposits=deposits[version],
                    version=version,
                    last_modified=_occurred(a, version),
                )
                store.snapshots.save(
                    encode_snapshot(
                        sid,
                        version,
                        state,
                        taken_at=taken,
                        config=Account.snapshot_config,
                        snapshot_version=Account.snapshot_version,
                    )
                )
            if a % 2_000 == 1_999:
                log(f"  ... snapshots of {a + 1:,} / {aggregates:,} aggregates (one catalog insert each)")
    return {"events_seconds": round(events_s, 1), "snapshots_seconds": round(perf() - t0, 1)}


@contextlib.contextmanager
def _states_store(quick: bool, aggregates: int) -> Iterator[tuple[Path, str]]:
    """The folder holding the 'snap' and 'nosnap' stores, and how it came to be."""
    events = aggregates * PER_AGGREGATE
    if quick:
        with tempfile.TemporaryDirectory(prefix="ev-bench-timetravel-") as tmp:
            info = _build_states_store(Path(tmp), aggregates)
            yield Path(tmp), f"built in {info['events_seconds'] + info['snapshots_seconds']:.1f} s"
        return
    entry = CACHE / f"timetravel-states-{events}-{_cache_key()}"
    meta = entry / "meta.json"
    if meta.exists():
        info = json.loads(meta.read_text())
        yield (
            entry,
            (
                f"reused from {entry.relative_to(ROOT)} (built in {info['events_seconds']} s + "
                f"{info['snapshots_seconds']} s of snapshots)"
            ),
        )
        return
    for stale in CACHE.glob(f"timetravel-states-{events}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    building = CACHE / f"{entry.name}.building"
    building.mkdir(parents=True)
    log(f"  building the time-travel store: {aggregates:,} aggregates x {PER_AGGREGATE} events")
    info = _build_states_store(building, aggregates)
    (building / "meta.json").write_text(json.dumps(info, indent=2))
    building.rename(entry)
    yield (
        entry,
        (
            f"built in {info['events_seconds']} s + {info['snapshots_seconds']} s of snapshots, "
            f"cached at {entry.relative_to(ROOT)}"
        ),
    )


def _check_states(frame: Any, aggregates: int, version: int) -> None:
    assert len(frame) == aggregates, (len(frame), aggregates)
    assert frame.index[0] == _sid(0) and frame.index[-1] == _sid(aggregates - 1)
    for a in (0, 1, aggregates // 2, aggregates - 1):
        balance, deposits = _expected(a)
        row = frame.loc[_sid(a)]
        got = (row["version"], row["balance"], row["deposits"], row["last_modified"])
        want = (version, balance[version], deposits[version], _occurred(a, version))
        assert got == want, (a, got, want)
    assert set(frame["version"]) == {version}, set(frame["version"])
    total = sum(_expected(a)[0][version] for a in range(aggregates))
    assert math.isclose(frame["balance"].sum(), total, rel_tol=1e-12), (frame["balance"].sum(), total)


def fleet_states(quick: bool, reps: int) -> list[dict[str, Any]]:
    reps = min(reps, 3)  # each full-size call takes seconds
    aggregates = 200 if quick else 10_000
    events = aggregates * PER_AGGREGATE
    log(f"== timetravel: Repository.states over {aggregates:,} aggregates, {events:,} events")
    out = []
    with _states_store(quick, aggregates) as (folder, how):
        log(f"  store: {how}")
        half = events // 2  # after round 5 of 10: every aggregate at version 50
        at_half = half // aggregates
        for kind, label in (("snap", "snapshots at 40 and 80 of each"), ("nosnap", "no snapshots")):
            # Not read_only: a read-only store does not see the snapshots on disk (its
            # store.snapshots is an empty in-memory one), so states() would fold every event.
            with ev.open_store(folder / kind, durability="none") as store:
                if kind == "snap":
                    assert store.snapshots.latest(_sid(0), max_version=at_half) is not None, "no snapshots found"
                assert store.last_position == events, (store.last_position, events)
                repo = Repository(store, Account)
                for as_of, version, what in (
                    (half, at_half, f"as_of=T (position {half:,})"),
                    (None, PER_AGGREGATE, "now"),
                ):
                    call = functools.partial(repo.states, as_of=as_of)
                    first_ms, frame = _ms(call)
                    _check_states(frame, aggregates, version)
                    values = [_ms(call)[0] / 1e3 for _ in range(reps)]
                    judged = kind == "snap" and as_of is not None
                    note = f"first call after open {first_ms / 1e3:.2f} s"
                    if judged:
                        note += f"; store {how}"
                    out.append(
                        _result(
                            f"Repository.states({what}), {aggregates:,} aggregates over {events:,} events, {label}",
                            values,
                            "s",
                            "<= 1 s" if judged else "reported (no budget)",
                            quick=quick,
                            ok=(lambda v: v <= 1.0) if judged else None,
                            note=note,
                        )
                    )
    return out


# -- 2. as_of SQL vs plain SQL over the store group's 10M events -------------------------------------


def as_of_sql(quick: bool, reps: int) -> list[dict[str, Any]]:
    from benchmarks import store as store_group  # its Deposited is the SQL store's event type

    sizes = Sizes.quick() if quick else Sizes()
    n, per = sizes.sql_events, sizes.sql_per_append
    log(f"== timetravel: as_of SQL over {n:,} events")
    with tempfile.TemporaryDirectory(prefix="ev-bench-timetravel-sql-") as tmp:
        ctx = Context(
            run_dir=tmp,
            sizes=sizes,
            reps=reps,
            quick=quick,
            results=Results(),
            payloads=Payloads(100_003 if quick else 1_000_003),  # as run.py: the cached store's contents
            cache_dir=None if quick else str(CACHE),
        )
        big = store_group._big_store(ctx, "sql", n, store_group._build_sql_store(ctx, n, per))
        how = (
            "reused from the store group's cache"
            if big.info.get("cached")
            else f"built in {big.info['build_seconds']:.0f} s" + ("" if quick else " (now cached)")
        )
        log(f"  SQL store of {n:,} events: {how}")
        expected_all = big.info["expected_sum"]
        expected_half = math.fsum(ctx.payloads.amount(i) for i in range(n // 2))
        return _as_of_sql(big.path, n, reps, quick, expected_all, expected_half, how)


def _as_of_sql(
    path: str, n: int, reps: int, quick: bool, expected_all: float, expected_half: float, how: str
) -> list[dict[str, Any]]:
    query = "SELECT count(*), sum(amount) FROM Deposited"
    half = n // 2
    with ev.open_store(path) as store:  # as the store group opens it
        (us,) = store.sql("SELECT epoch_us(recorded_at) FROM events WHERE position = ?", [half]).fetchall()[0]
        when = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=us)
        at_when = store.as_of(when).position
        assert at_when >= half, (at_when, half)  # one append's events share their recorded time

        def check(rows: list[tuple[Any, ...]], count: int, total: float | None) -> None:
            assert rows[0][0] == count, (rows, count)
            if total is not None:
                assert math.isclose(rows[0][1], total, rel_tol=1e-9), (rows, total)

        reused = store.as_of(half)
        variants: dict[str, tuple[Callable[[], Any], int, float | None]] = {
            "plain": (lambda: store.sql(query).fetchall(), n, expected_all),
            "half": (lambda: store.as_of(half).sql(query).fetchall(), half, expected_half),
            "when": (
                lambda: store.as_of(when).sql(query).fetchall(),
                at_when,
                expected_half if at_when == half else None,
            ),
            "end": (lambda: store.as_of(store.last_position).sql(query).fetchall(), n, expected_all),
            "reused": (lambda: reused.sql(query).fetchall(), half, expected_half),
        }
        firsts = {}
        for key, (fn, count, total) in variants.items():  # warm-up, and the answers checked
            ms, rows = _ms(fn)
            check(rows, count, total)
            firsts[key] = ms
        times: dict[str, list[float]] = {key: [] for key in variants}
        for _ in range(reps):  # interleaved, so a noisy minute hits every variant alike
            for key, (fn, _count, _total) in variants.items():
                times[key].append(_ms(fn)[0])
    plain = statistics.median(times["plain"])
    out = [
        _result(
            f'store.sql("{query}").fetchall(), {n:,} events (no as_of)',
            times["plain"],
            "ms",
            "reference",
            quick=quick,
            note=f"{n / plain * 1e3:,.0f} events/s; store {how}",
        )
    ]
    for key, label, judged in (
        ("half", f"store.as_of({half:,}).sql(...): half the positions", True),
        (
            "when",
            f"store.as_of(<recorded time of position {half:,}>).sql(...): a datetime point (position {at_when:,})",
            True,
        ),
        ("end", "store.as_of(last_position).sql(...): every event, the filter alone", True),
        ("reused", f"the as_of({half:,}) view made once, .sql(...) again", False),
    ):
        ratios = [t / p for t, p in zip(times[key], times["plain"], strict=True)]
        median = statistics.median(times[key])
        out.append(
            _result(
                f"{label}, {n:,} events",
                times[key],
                "ms",
                "ratio below",
                quick=quick,
                note=f"first call {firsts[key]:,.0f} ms",
            )
        )
        out.append(
            _result(
                f"ratio: {label.split(':')[0]} / the plain query (median / median; min - max: paired per rep)",
                ratios,
                "x",
                "<= 2x" if judged else "reported (no budget)",
                quick=quick,
                ok=(lambda v: v <= 2.0) if judged else None,
                value=median / plain,
            )
        )
    return out


# -- 3. importing a real event log -------------------------------------------------------------------


def import_log(quick: bool, reps: int) -> list[dict[str, Any]]:
    name = "roadtraffic100traces.xes" if quick else "bpic2012.xes.gz"
    source = DATA / name
    label = f"import {name} end to end: ev.read_xes + open_store + import_dataframe + close"
    budget = "<= 10 s"
    log(f"== timetravel: importing {source}")
    if not source.is_file():
        return [_skipped(label, "s", budget, f"{source} not found")]
    reads, imports, totals = [], [], []
    shape: tuple[int, int] = (0, 0)
    written = streams = 0
    with tempfile.TemporaryDirectory(prefix="ev-bench-import-") as tmp:
        for r in range(reps + 1):  # the first run warms the page cache and the imports: not counted
            gc.collect()
            t0 = perf()
            df = ev.read_xes(source)
            t1 = perf()
            store = ev.open_store(Path(tmp) / f"store-{r}")
            written = store.import_dataframe(df, stream_type="Case", progress=False)
            store.close()
            t2 = perf()
            assert written == len(df), (written, len(df))
            if r == 0:
                with ev.open_store(Path(tmp) / "store-0", read_only=True) as check:
                    streams = check.sql("SELECT count(DISTINCT stream_id) FROM events").fetchall()[0][0]
                    assert check.last_position == written
                shape = df.shape
            else:
                reads.append(t1 - t0)
                imports.append(t2 - t1)
                totals.append(t2 - t0)
            del df
            shutil.rmtree(Path(tmp) / f"store-{r}", ignore_errors=True)
    what = f"{written:,} events in {streams:,} cases, DataFrame {shape[0]:,} x {shape[1]}"
    attribution = f"data: {BPIC}" if not quick else "data: Road Traffic Fine Management (100 traces), 4TU.ResearchData"
    return [
        _result(
            label,
            totals,
            "s",
            budget,
            quick=quick,
            ok=lambda v: v <= 10.0,
            note=f"{what}; durability='fsync' (the default); {attribution}",
        ),
        _result(f"read phase: ev.read_xes({name})", reads, "s", "reported (no budget)", quick=quick),
        _result(
            "import phase: open_store + import_dataframe + close",
            imports,
            "s",
            "reported (no budget)",
            quick=quick,
            note=f"{written / statistics.median(imports):,.0f} events/s",
        ),
    ]


# -- all ---------------------------------------------------------------------------------------------


def run(quick: bool, *, reps: int | None = None) -> list[dict[str, Any]]:
    """Every time-travel benchmark; quick: tiny sizes, nothing judged (passed is None)."""
    reps = reps or (3 if quick else 5)
    out: list[dict[str, Any]] = []
    out += fleet_states(quick, reps)
    out += as_of_sql(quick, reps)
    out += import_log(quick, reps)
    return out


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=1, default=str))
