"""Schema evolution (issue 15): reading old events through upcasters, beside reading today's.

    python -m benchmarks.schema [--quick]

``run(quick)`` returns one dict per measurement (see ``benchmarks/timetravel.py``). Two
stores of the same N events (10,000; quick: 1,000) in 100 streams of one aggregate type:
one written with today's class ``Deposited`` version 2 (``account``, ``amount``,
``currency``), one written with version 1 (``account_id`` instead of ``account``) and read
through one rename upcaster. Each is measured where its events are in Parquet files
(flushed) and where they are still in the log (recovered on open, decoded from CBOR):

1. ``read_all``, every event decoded. Budget: the upcast store at least 70% of the plain
   store's events/s.
2. Recovery: a fresh ``Repository`` gets every aggregate (100 replays of N/100 events).
   Budget: as 1.

Each repetition opens the store afresh (nothing decoded is cached between them) and
times only the reads.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import eventador as ev  # noqa: E402
from benchmarks.common import log, perf, result  # noqa: E402

TYPE = "bench.schema.Deposited"
STREAMS = 100


def _v1() -> type[ev.Event]:
    class Deposited(ev.Event, event_type=TYPE):
        account_id: str
        amount: float
        currency: str

    return Deposited


def _v2() -> type[ev.Event]:
    class Deposited(ev.Event, event_type=TYPE, version=2):
        account: str
        amount: float
        currency: str

    return Deposited


class Balance(ev.State):
    total: float = 0.0


class Account(ev.AggregateRoot[Balance]):
    aggregate_type = "bench.schema.Account"

    @property
    def initial_state(self) -> Balance:
        return Balance()

    def handle_command(self, state: Balance, command: Any) -> list[ev.Event]:
        return []

    def apply_event(self, state: Balance, event: ev.Event) -> Balance:
        return state.copy_with(total=state.total + event.amount)  # type: ignore[attr-defined]


def _write(path: Path, version: int, n: int, *, flushed: bool) -> None:
    cls = _v1() if version == 1 else _v2()
    field = "account_id" if version == 1 else "account"
    per = n // STREAMS
    with ev.open_store(path, durability="batch", flush_every=10 * n) as store:
        for s in range(STREAMS):
            sid = f"acc-{s:03d}"
            events = [cls(**{field: sid, "amount": float(i), "currency": "EUR"}) for i in range(per)]
            store.append(sid, events, stream_type=Account.aggregate_type)
        if flushed:
            store.flush()


def _read_all(path: Path) -> float:
    with ev.open_store(path, read_only=True) as store:
        t0 = perf()
        n = sum(1 for _ in store.read_all())
        seconds = perf() - t0
    return n / seconds


def _recover(path: Path) -> float:
    with ev.open_store(path, read_only=True) as store:
        repo = ev.Repository(store, Account)
        t0 = perf()
        total = sum(repo.get(f"acc-{s:03d}").total for s in range(STREAMS))
        seconds = perf() - t0
    assert total > 0
    return seconds * 1e3


def _alternate(fn: Callable[[Path], float], plain: Path, old: Path, reps: int) -> tuple[list[float], list[float]]:
    """`fn` of each store, taking turns (so a busy moment of the machine hits both), after a warm-up."""
    fn(plain), _upcast(fn, old)
    pairs = [(fn(plain), _upcast(fn, old)) for _ in range(reps)]
    return [p for p, _ in pairs], [o for _, o in pairs]


def _upcast(fn: Callable[[Path], float], path: Path) -> float:
    ev.upcaster(TYPE, 1, ev.Rename("account_id", "account"))
    try:
        return fn(path)
    finally:
        ev.upcasters.remove(TYPE)


def run(quick: bool, *, reps: int | None = None) -> list[dict[str, Any]]:
    """Both scenarios, flushed and in the log; quick: 1,000 events, nothing judged."""
    reps = reps or (3 if quick else 7)
    n = 1_000 if quick else 10_000
    out: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="ev-bench-schema-"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the class is redefined on purpose
            for where, flushed in (("Parquet", True), ("log", False)):
                plain, old = root / f"plain-{where}", root / f"old-{where}"
                _v1()
                _write(old, 1, n, flushed=flushed)
                _v2()
                _write(plain, 2, n, flushed=flushed)
                ev.upcasters.remove(TYPE)
                log(f"  schema: {n:,} events in the {where}, today's version and version 1 in turn")
                plain_read, old_read = _alternate(_read_all, plain, old, reps)
                plain_recover, old_recover = _alternate(_recover, plain, old, reps)
                out += _pair(f"read_all, {n:,} events in the {where}", plain_read, old_read, "events/s", quick)
                out += _pair(
                    f"recovery of {STREAMS} aggregates, {n:,} events in the {where}",
                    plain_recover, old_recover, "ms", quick,
                )
    finally:
        ev.upcasters.remove(TYPE)
        shutil.rmtree(root, ignore_errors=True)
    return out


def _pair(what: str, plain: list[float], old: list[float], unit: str, quick: bool) -> list[dict[str, Any]]:
    """The plain row, the upcast row, and the ratio with its >= 70% budget."""
    p, o = statistics.median(plain), statistics.median(old)
    ratio = o / p if unit == "events/s" else p / o  # speed of the upcast read as a share of the plain one
    passed = None if quick else ratio >= 0.7
    return [
        result(f"{what}, today's version", plain, unit),
        result(f"{what}, version 1 through a rename upcaster", old, unit),
        result(
            f"{what}: upcast speed / plain speed", [ratio], "x", ">= 0.7", passed=passed,
            note=f"median {o:,.1f} against {p:,.1f} {unit}",
        ),
    ]


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=1, default=str))
