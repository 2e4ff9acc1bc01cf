"""Aggregates, persistent actors and snapshots: recovery time, command throughput, memory.

    python benchmarks/aggregates.py [--quick] [--reps N] [--json PATH]

``run(quick)`` returns one dict per measurement (name, value, unit, budget, plus
min/max/reps/side/note); ``benchmarks/run.py`` can wire it in. Scenarios:

1. recovery of an aggregate with 1,000 and 10,000 events (no snapshot) in a big store
   (1M events; flushed, closed and reopened, so reads come from Parquet), as an actor's
   ``start()`` and as a cold ``Repository.get``; the store's ``read_stream`` of the same
   stream is reported too, to show what the store's share is. Like the peer's, these recover
   one stream again and again (its row groups stay in the store's cache, as the peer's pages
   stay in SQLite's); five other streams of each size, each recovered once right after the
   store opens, give the figure with nothing cached;
2. the same with a snapshot every 100 events (1,050 and 10,050 events: a snapshot
   and 50 events);
3. commands per second through 1,000 aggregate actors on a store on disk with
   ``durability="fsync"`` (and, as a reference, in memory): 20 commands each, told at once,
   so they queue and each actor writes its queue in one append. As a reference too: one
   command in flight per actor (ask, answer, ask), where only actors share appends;
4. memory per idle persistent actor: 100,000 counters spawned in one ActorSystem;
5. the peer (``eventsourcing`` on SQLite) ``repository.get`` of 1,000 / 10,000 events,
   with and without a snapshot every 100, side by side with 1 and 2.

Nothing here judges: the budgets are printed next to the values.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import eventador as ev  # noqa: E402
from eventador.aggregates import AggregateRoot, PersistentActor  # noqa: E402
from eventador.aggregates.repository import Repository  # noqa: E402
from eventador.aggregates.snapshots import SnapshotConfig  # noqa: E402

perf = time.perf_counter
CURRENCIES = ("EUR", "USD", "GBP", "CHF")
KIND = "BenchAccount"
COLD_STREAMS = 5  # streams of each size recovered once, right after the store opens


# -- the domain: the peer baseline's account --------------------------------------------------


class Opened(ev.Event, event_type="bench.agg.Opened"):
    account_id: str


class Deposited(ev.Event, event_type="bench.agg.Deposited"):
    account_id: str
    amount: float
    currency: str
    note: str


class Deposit(ev.Command):
    amount: float


class AccountState(ev.State):
    account_id: str = ""
    balance: float = 0.0


class BenchAccount(AggregateRoot[AccountState]):
    aggregate_type = KIND

    @property
    def initial_state(self) -> AccountState:
        return AccountState(account_id=self.persistence_id)

    def handle_command(self, state: AccountState, command: ev.Command) -> list[ev.Event]:
        assert isinstance(command, Deposit)
        if state.version == 0:
            return [Opened(account_id=self.persistence_id),
                    Deposited(account_id=self.persistence_id, amount=command.amount, currency="EUR", note="x")]
        return [Deposited(account_id=self.persistence_id, amount=command.amount, currency="EUR", note="x")]

    def apply_event(self, state: AccountState, event: ev.Event) -> AccountState:
        if isinstance(event, Deposited):
            return state.copy_with(balance=state.balance + event.amount)
        return state


class SnapBenchAccount(BenchAccount):
    aggregate_type = KIND
    snapshot_config = SnapshotConfig(event_count_threshold=100)


class Incremented(ev.Event, event_type="bench.agg.Incremented"):
    by: int


class Counter(PersistentActor):
    """The smallest useful persistent actor: one int of state."""

    value = 0

    async def command_handler(self, command: Any) -> int:
        await self.persist_event(Incremented(by=int(command)))
        return self.value

    def event_handler(self, event: ev.Event) -> None:
        if isinstance(event, Incremented):
            self.value += event.by


# -- helpers ------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _result(name: str, values: list[float], unit: str, budget: str, *, side: str = "eventador",
            note: str = "") -> dict[str, Any]:
    s = sorted(values)
    return {
        "name": name,
        "value": statistics.median(s),
        "unit": unit,
        "budget": budget,
        "min": s[0],
        "max": s[-1],
        "reps": len(s),
        "side": side,
        "note": note,
    }


def _timed(reps: int, fn: Callable[[], object]) -> list[float]:
    """Milliseconds of `reps` calls of fn, after one untimed warm-up call."""
    fn()
    out = []
    for _ in range(reps):
        gc.collect()
        t0 = perf()
        fn()
        out.append((perf() - t0) * 1e3)
    return out


def _deposits(sid: str, start: int, count: int, rng: random.Random) -> list[ev.Event]:
    return [
        Deposited(account_id=sid, amount=round(rng.random() * 10_000, 2), currency=CURRENCIES[(start + i) % 4],
                  note="x")
        for i in range(count)
    ]


# -- 1 and 2: recovery ----------------------------------------------------------------------------


def _build_big_store(path: str, fill: int, targets: dict[str, int], rounds: int = 4) -> None:
    """`fill` events in streams of 100, and the target streams, interleaved in `rounds` rounds."""
    rng = random.Random(20260101)
    with ev.open_store(path, durability="none") as store:
        per_round = fill // rounds
        filled = {sid: 0 for sid in targets}
        for r in range(rounds):
            for k in range(0, per_round, 100):
                sid = f"fill-{(r * per_round + k) // 100:07d}"
                store.append(sid, _deposits(sid, k, 100, rng), stream_type="Filler")
            for sid, size in targets.items():
                share = size // rounds if r < rounds - 1 else size - filled[sid]
                batch: list[ev.Event] = _deposits(sid, filled[sid], share, rng)
                if filled[sid] == 0:
                    batch[0] = Opened(account_id=sid)
                for i in range(0, len(batch), 1000):
                    store.append(sid, batch[i : i + 1000], stream_type=KIND)
                filled[sid] += share


def _build_snapshot_streams(path: str, sizes: list[int]) -> dict[int, str]:
    ids = {}
    rng = random.Random(7)
    with ev.open_store(path, durability="none") as store:
        repo = Repository(store, SnapBenchAccount)
        for size in sizes:
            sid = f"snap-{size}"
            # The first command writes Opened + Deposited: size - 1 commands make `size` events.
            for _ in range(size - 1):
                repo.execute(sid, Deposit(amount=round(rng.random() * 100, 2)))
            assert store.stream_version(sid) == size, store.stream_version(sid)
            ids[size] = sid
    return ids


def recovery(tmp: str, quick: bool, reps: int) -> list[dict[str, Any]]:
    small, large = (100, 1_000) if quick else (1_000, 10_000)
    fill = 20_000 if quick else 1_000_000
    path = os.path.join(tmp, "big")
    _log(f"recovery: building a store of {fill:,} events + streams of {small:,} and {large:,}")
    t0 = perf()
    # Named to sort far apart, among the fillers: no two share a row group.
    spacing = fill // 100 // (2 * COLD_STREAMS + 1)
    cold = {
        size: [f"fill-{(2 * k + j + 1) * spacing:07d}-cold" for k in range(COLD_STREAMS)]
        for j, size in enumerate((small, large))
    }
    targets = {f"agg-{small}": small, f"agg-{large}": large}
    targets.update({sid: size for size, sids in cold.items() for sid in sids})
    _build_big_store(path, fill, targets)
    snap_ids = _build_snapshot_streams(path, [small + 50, large + 50])
    _log(f"recovery: built in {perf() - t0:.1f} s")
    out: list[dict[str, Any]] = []
    budgets = {small: "<= 4 ms" if small == 1_000 else "(quick)", large: "<= 30 ms" if large == 10_000 else "(quick)"}
    with ev.open_store(path, durability="none") as store:
        for size, sids in cold.items():
            # Each stream once, first thing after opening: nothing of it is in the row-group cache.
            def cold_get(sids: list[str] = sids, size: int = size) -> list[float]:
                times = []
                for sid in sids:
                    gc.collect()
                    t0 = perf()
                    assert Repository(store, BenchAccount).get(sid).version == size
                    times.append((perf() - t0) * 1e3)
                return times

            out.append(_result(f"aggregate recovery, {size:,} events, no snapshot (cold Repository.get, "
                               f"{COLD_STREAMS} streams read once each)", cold_get(), "ms", "-"))
        for size in (small, large):
            sid = f"agg-{size}"
            n = max(reps, 15 if size == small else 5)
            read = _timed(n, lambda sid=sid: store.read_stream(sid))  # type: ignore[misc]
            out.append(_result(f"read_stream of the {size:,}-event stream (the store's share)", read, "ms", "-"))

            out.append(_result(f"aggregate recovery, {size:,} events, no snapshot (actor start())",
                               _actor_starts(store, sid, size, n), "ms", budgets[size]))

            def get(sid: str = sid, size: int = size) -> None:
                assert Repository(store, BenchAccount).get(sid).version == size

            out.append(_result(f"aggregate recovery, {size:,} events, no snapshot (cold Repository.get)",
                               _timed(n, get), "ms", budgets[size]))
        for size, sid in snap_ids.items():
            n = max(reps, 15)
            assert len(store.snapshots.list(sid)) >= 1
            out.append(_result(f"aggregate recovery, {size:,} events, snapshot every 100 (actor start())",
                               _actor_starts(store, sid, size, n, cls=SnapBenchAccount), "ms",
                               "<= 1 ms" if not quick else "(quick)"))

            def get_snap(sid: str = sid, size: int = size) -> None:
                assert Repository(store, SnapBenchAccount).get(sid).version == size

            out.append(_result(f"aggregate recovery, {size:,} events, snapshot every 100 (cold Repository.get)",
                               _timed(n, get_snap), "ms", "<= 1 ms" if not quick else "(quick)"))
    shutil.rmtree(path, ignore_errors=True)
    return out


def _actor_starts(store: ev.EventStore, sid: str, size: int, reps: int, cls: type[BenchAccount] = BenchAccount
                  ) -> list[float]:
    async def main() -> list[float]:
        times = []
        for r in range(reps + 1):
            actor = cls(persistence_id=sid, event_store=store)
            gc.collect()
            t0 = perf()
            await actor.start()
            elapsed = (perf() - t0) * 1e3
            assert actor.sequence_number == size
            if r:
                times.append(elapsed)
        return times

    return asyncio.run(main())


# -- 3: commands per second through many actors -----------------------------------------------------


def throughput(tmp: str, quick: bool, reps: int) -> list[dict[str, Any]]:
    actors, per_actor = (50, 4) if quick else (1_000, 20)
    out = []
    cases = (("fsync", True), ("memory", True), ("fsync", False))
    for durability, queued in cases:
        rates = []
        for r in range(max(1, min(reps, 3))):
            path = None if durability == "memory" else os.path.join(tmp, f"tp-{r}")
            store = ev.open_store(path, durability="fsync") if path else ev.open_store()
            rates.append(asyncio.run(_drive(store, actors, per_actor, queued=queued)))
            store.close()
            if path:
                shutil.rmtree(path, ignore_errors=True)
        where = "on disk, durability=fsync" if durability == "fsync" else "in memory (reference: no I/O)"
        how = "commands told at once" if queued else "one command in flight per actor (reference)"
        out.append(_result(f"commands/s through {actors:,} aggregate actors, {where}, {how}", rates,
                           "commands/s", ">= 20,000/s" if durability == "fsync" and queued and not quick else "-",
                           note=f"{actors * per_actor:,} commands, one event each"))
    return out


async def _drive(store: ev.EventStore, actors: int, per_actor: int, *, queued: bool = True) -> float:
    """Commands/s through `actors` aggregates. `queued`: each actor's commands are told at
    once and queue in its mailbox (each actor writes its queue in one append); otherwise
    each actor has one command in flight at a time (ask, answer, ask again)."""
    async with ev.ActorSystem(passivation_interval=None) as system:
        refs = []
        for i in range(actors):
            sid = f"acc-{i:05d}"
            refs.append(await system.spawn(sid, lambda sid=sid: BenchAccount(persistence_id=sid, event_store=store),
                                           supervisor=ev.Supervisor.resume()))
        # The first command of each account writes two events: do it before timing.
        await asyncio.gather(*(ref.ask(Deposit(amount=1.0), timeout=None) for ref in refs))
        t0 = perf()
        if queued:
            for _ in range(per_actor - 1):
                for ref in refs:
                    ref.tell(Deposit(amount=1.0))
            await asyncio.gather(*(ref.ask(Deposit(amount=1.0), timeout=None) for ref in refs))
        else:
            async def one_at_a_time(ref: ev.ActorRef) -> None:
                for _ in range(per_actor):
                    await ref.ask(Deposit(amount=1.0), timeout=None)

            await asyncio.gather(*map(one_at_a_time, refs))
        elapsed = perf() - t0
    for i in (0, actors - 1):
        assert store.stream_version(f"acc-{i:05d}") == per_actor + 2
    return actors * per_actor / elapsed


# -- 4: memory per idle persistent actor ---------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(quick: bool) -> list[dict[str, Any]]:
    n = 2_000 if quick else 100_000
    store = ev.open_store()

    async def main() -> tuple[float, float]:
        async with ev.ActorSystem(passivation_interval=None) as system:
            gc.collect()
            before = _rss()
            for i in range(n):
                sid = f"c-{i:06d}"
                await system.spawn(sid, lambda sid=sid: Counter(persistence_id=sid, event_store=store))
            gc.collect()
            per_actor = (_rss() - before) / n
            probe = Counter(persistence_id="c-000000", event_store=store)
            await probe.start()
            own = sys.getsizeof(probe) + sys.getsizeof(probe.__dict__)
            await system.lookup("c-000001").ask(1)  # type: ignore[union-attr]
            return per_actor, own

    per_actor, own = asyncio.run(main())
    store.close()
    return [
        _result(f"memory per idle persistent actor ({n:,} counters spawned, RSS growth / n)", [per_actor], "bytes",
                "<= 2,048 B" if not quick else "(quick)",
                note="includes the actor system's cell, task, mailbox and ref"),
        _result("of which the PersistentActor instance itself (object + __dict__)", [own], "bytes", "-"),
    ]


# -- 5: the peer -----------------------------------------------------------------------------------------


def peer(tmp: str, quick: bool, reps: int) -> list[dict[str, Any]]:
    try:
        from eventsourcing.application import Application
        from eventsourcing.domain import Aggregate, event
    except ImportError:
        return []

    class Account(Aggregate):  # type: ignore[misc]
        @event("Opened")  # type: ignore[misc]
        def __init__(self, account_id: str) -> None:
            self.account_id = account_id
            self.balance = 0.0

        @event("Deposited")  # type: ignore[misc]
        def deposit(self, account_id: str, amount: float, currency: str, note: str) -> None:
            self.balance += amount

    class Bank(Application):  # type: ignore[misc]
        pass

    class SnapBank(Application):  # type: ignore[misc]
        snapshotting_intervals = {Account: 100}  # noqa: RUF012

    small, large = (100, 1_000) if quick else (1_000, 10_000)
    rng = random.Random(20260101)
    out = []
    for cls, label, extra in ((Bank, "no snapshot", 0), (SnapBank, "snapshot every 100", 50)):
        db = os.path.join(tmp, f"peer-{cls.__name__}.db")
        app = cls(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": db})
        ids = {}
        for size in (small, large):
            total = size + extra
            acc = Account(f"acc-{total}")
            for v in range(2, total + 1):
                acc.deposit(acc.account_id, round(rng.random() * 10_000, 2), CURRENCIES[v % 4], "x")
                if v % 100 == 0:
                    app.save(acc)
            app.save(acc)
            ids[total] = acc.id
        for total, agg_id in ids.items():
            n = max(reps, 15 if total < large else 5)
            vals = _timed(n, lambda agg_id=agg_id, app=app: app.repository.get(agg_id))  # type: ignore[misc]
            out.append(_result(f"peer repository.get, {total:,} events, {label}", vals, "ms", "-", side="peer"))
        app.close()
    return out


# -- the whole run ---------------------------------------------------------------------------------------


def run(quick: bool, *, reps: int = 5) -> list[dict[str, Any]]:
    """Returns every measurement of this module, eventador's and the peer's."""
    tmp = tempfile.mkdtemp(prefix="eventador-bench-aggregates-")
    try:
        results = []
        results += recovery(tmp, quick, reps)
        results += peer(tmp, quick, reps)
        _log("throughput")
        results += throughput(tmp, quick, reps)
        _log("memory")
        results += memory(quick)
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _table(results: list[dict[str, Any]]) -> str:
    lines = ["| scenario | side | median | [min – max] | unit | budget |", "|---|---|---:|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['side']} | {r['value']:,.3f} | [{r['min']:,.3f} – {r['max']:,.3f}] | {r['unit']} "
            f"| {r['budget']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the scenarios run, judges nothing")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", help="also write the results as JSON to this path")
    args = parser.parse_args()
    results = run(args.quick, reps=args.reps)
    print(_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
