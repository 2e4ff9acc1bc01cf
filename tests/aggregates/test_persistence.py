"""Persistent actors and aggregate roots: recovery (also in a new process), stashing during
recovery, supervision, two incarnations of one id, passivation, all-or-nothing batches,
and the fields the framework sets. Nothing sleeps to wait: tests wait on asks, events
and futures, under a deadline."""

from __future__ import annotations

import asyncio
import gc
import pickle
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

import eventador as ev
from eventador import AggregateRoot, ManualClock, PersistentActor, SnapshotConfig
from eventador.store.aio import THREADS, run_blocking
from tests.support.aggregate_domain import (
    BankAccountAggregate,
    CounterActor,
    CounterIncrementedEvent,
    DepositMoneyCommand,
    IncrementCommand,
    Ledger,
    LedgerState,
    OpenAccountCommand,
    Post,
    Status,
    WithdrawMoneyCommand,
)
from tests.support.aio import run
from tests.support.spy import ReadSpy

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, tzinfo=UTC)




def inc(value: int, pid: str = "counter-1") -> IncrementCommand:
    return IncrementCommand(aggregate_id=pid, value=value)


class Boom(Exception):
    """A failure on purpose."""


class RecordingSleep:
    """Stands in for asyncio.sleep in the ActorSystem: records each delay, returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


# -- recovery ---------------------------------------------------------------------------------

CHILD = """
import asyncio, os, pickle, sys
from decimal import Decimal
import eventador as ev
from tests.support.aggregate_domain import (BankAccountAggregate, DepositMoneyCommand, Ledger, OpenAccountCommand, Post,
                                    Freeze)

async def main():
    store = ev.open_store(sys.argv[1])  # durability="fsync"
    async with ev.ActorSystem() as system:
        ledger = await system.spawn("ledger", lambda: Ledger(persistence_id="ledger-1", event_store=store))
        account = await system.spawn("acc", lambda: BankAccountAggregate(persistence_id="acc-1", event_store=store))
        await account.ask(OpenAccountCommand(account_id="acc-1", initial_balance=10.0))
        for i in range(37):
            state = await ledger.ask(Post(amount=Decimal(i) / 4, memo=f"m{i % 3}"))
            account.tell(DepositMoneyCommand(account_id="acc-1", amount=0.25 * i))
        final = await account.ask(DepositMoneyCommand(account_id="acc-1", amount=1.0))
        frozen = await ledger.ask(Freeze(reason="audit"))
    sys.stdout.buffer.write(pickle.dumps((frozen, final, len(store.snapshots.list("ledger-1")))))
    sys.stdout.flush()
    os._exit(0)  # no close(): the process just ends, as after a crash once everything was acknowledged

asyncio.run(main())
"""


def test_recovery_in_a_new_process_equals_the_state_before_the_restart(tmp_path: Path) -> None:
    path = tmp_path / "store"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], cwd=ROOT, capture_output=True, timeout=120, check=False
    )
    assert child.returncode == 0, child.stderr.decode()
    ledger_before, account_before, snapshots = pickle.loads(child.stdout)
    assert ledger_before.status is Status.FROZEN and ledger_before.version == 38
    assert snapshots == 2  # Ledger snapshots every 5 events, keeps 2

    async def recover() -> tuple[LedgerState, Any]:
        with ev.open_store(path) as store:
            assert [s.version for s in store.snapshots.list("ledger-1")] == [30, 35]
            ledger = Ledger(persistence_id="ledger-1", event_store=store)
            account = BankAccountAggregate(persistence_id="acc-1", event_store=store)
            await ledger.start()
            await account.start()
            return ledger.state, account.state

    ledger_after, account_after = run(recover())
    assert ledger_after == ledger_before
    assert account_after == account_before
    assert account_after.balance == 10.0 + sum(0.25 * i for i in range(37)) + 1.0


def test_recovery_reads_the_events_after_the_snapshot_in_one_read() -> None:
    async def main() -> None:
        store = ev.open_store()
        config = SnapshotConfig(event_count_threshold=40)
        counter = CounterActor(persistence_id="counter-1", event_store=store, snapshot_config=config)
        for _ in range(95):
            await counter.on_message(inc(1))
        spy = ReadSpy(store)
        recovered = CounterActor(persistence_id="counter-1", event_store=store)
        await recovered.start()
        assert spy.calls == [("counter-1", 81)]
        assert (recovered.value, recovered.applied, recovered.sequence_number) == (95, 15, 95)

    run(main())


def test_recovering_a_new_stream_reads_nothing() -> None:
    async def main() -> None:
        store = ev.open_store()
        spy = ReadSpy(store)
        counter = CounterActor(persistence_id="fresh", event_store=store)
        await counter.start()
        assert spy.calls == [] and counter.sequence_number == 0 and counter.is_recovered

    run(main())


def test_start_is_idempotent_and_concurrent_calls_recover_once(tmp_path: Path) -> None:
    async def main() -> None:
        with ev.open_store(tmp_path / "store") as store:
            store.append("counter-1", [CounterIncrementedEvent(aggregate_id="counter-1", value=2)] * 3)
            spy = ReadSpy(store)
            counter = CounterActor(persistence_id="counter-1", event_store=store)
            await asyncio.gather(counter.start(), counter.start(), counter.start())
            await counter.start()
            assert len(spy.calls) == 1
            assert counter.value == 6

    run(main())


def test_a_failed_recovery_is_retried_by_the_next_start() -> None:
    async def main() -> None:
        store = ev.open_store()
        store.append("counter-1", CounterIncrementedEvent(aggregate_id="counter-1", value=2))
        read = store.replay
        failures = [ev.StoreError("disk went away")]

        def flaky(stream_id: str, **kwargs: Any) -> Any:
            if failures:
                raise failures.pop()
            return read(stream_id, **kwargs)

        store.replay = flaky  # type: ignore[method-assign]
        counter = CounterActor(persistence_id="counter-1", event_store=store)
        with pytest.raises(ev.StoreError):
            await counter.start()
        assert not counter.is_recovered
        assert await counter.on_message("get") == 2

    run(main())


def test_messages_sent_during_recovery_wait_and_are_handled_after_it_in_order(tmp_path: Path) -> None:
    store = ev.open_store(tmp_path / "store")  # on disk: recovery reads run in the store's threads
    store.append("counter-1", [CounterIncrementedEvent(aggregate_id="counter-1", value=10)] * 40)
    entered, gate = threading.Event(), threading.Event()
    read = store.replay

    def slow_read(stream_id: str, **kwargs: Any) -> Any:
        entered.set()
        assert gate.wait(10), "the test never opened the gate"
        return read(stream_id, **kwargs)

    store.replay = slow_read  # type: ignore[method-assign]

    async def main() -> None:
        async with ev.ActorSystem() as system:
            spawning = asyncio.ensure_future(
                system.spawn("counter", lambda: CounterActor(persistence_id="counter-1", event_store=store))
            )
            assert await asyncio.to_thread(entered.wait, 10)  # recovery is under way, off the loop
            ref = system.lookup("counter")
            assert ref is not None
            for value in (1, 2, 3, 4, 5):
                ref.tell(inc(value))
            answer = asyncio.ensure_future(ref.ask("get"))
            assert not spawning.done() and not answer.done()
            gate.set()
            await spawning
            assert await answer == 400 + 15

    try:
        run(main())
        values = [e.value for e in read("counter-1").events]  # type: ignore[attr-defined]
        assert values == [10] * 40 + [1, 2, 3, 4, 5]
    finally:
        gate.set()
        store.close()


# -- failures, supervision, concurrency ---------------------------------------------------------


class FlakyCounter(CounterActor):
    """'boom' persists an increment of 1, then fails."""

    async def command_handler(self, command: Any) -> Any:
        if command == "boom":
            await self.persist_event(CounterIncrementedEvent(aggregate_id=self.persistence_id, value=1))
            raise Boom("after persisting")
        return await super().command_handler(command)


def test_a_supervised_restart_after_backoff_recovers_what_was_persisted() -> None:
    sleep = RecordingSleep()
    built: list[FlakyCounter] = []
    store = ev.open_store()

    def factory() -> FlakyCounter:
        built.append(FlakyCounter(persistence_id="counter-1", event_store=store))
        return built[-1]

    async def main() -> None:
        async with ev.ActorSystem(sleep=sleep) as system:
            ref = await system.spawn("c", factory, supervisor=ev.Supervisor.restart(max_restarts=5, backoff=(0.1, 1.0)))
            assert await ref.ask(inc(5)) == 5
            for _ in range(2):
                with pytest.raises(Boom):
                    await ref.ask("boom")
            assert await ref.ask("get") == 7
            assert ref.metrics().restarts == 2

    run(main())
    assert sleep.delays == pytest.approx([0.1, 0.2])
    assert len(built) == 3 and built[-1].applied == 3


def test_two_incarnations_of_one_id_the_loser_gets_a_concurrency_error_then_catches_up() -> None:
    async def main() -> None:
        store = ev.open_store()
        first = CounterActor(persistence_id="counter-1", event_store=store)
        second = CounterActor(persistence_id="counter-1", event_store=store)
        await first.start()
        await second.start()
        await first.on_message(inc(5))
        with pytest.raises(ev.ConcurrencyError) as caught:
            await second.on_message(inc(100))
        assert (caught.value.expected, caught.value.actual) == (0, 1)
        assert second.value == 0  # nothing of the refused command was applied
        assert await second.on_message("get") == 5  # caught up before handling the next message
        assert await second.on_message(inc(1)) == 6
        assert [r.event.value for r in store.read_stream("counter-1")] == [5, 1]  # type: ignore[attr-defined]

    run(main())


def test_an_aggregate_that_lost_a_race_catches_up_and_then_succeeds() -> None:
    async def main() -> None:
        store = ev.open_store()
        mine = BankAccountAggregate(persistence_id="acc-1", event_store=store)
        theirs = BankAccountAggregate(persistence_id="acc-1", event_store=store)
        await mine.on_message(OpenAccountCommand(account_id="acc-1", initial_balance=10.0))
        await theirs.on_message(DepositMoneyCommand(account_id="acc-1", amount=5.0))
        with pytest.raises(ev.ConcurrencyError):
            await mine.on_message(DepositMoneyCommand(account_id="acc-1", amount=1.0))
        state = await mine.on_message(DepositMoneyCommand(account_id="acc-1", amount=1.0))
        assert (state.balance, state.version) == (16.0, 3)

    run(main())


def test_under_an_actor_system_the_loser_is_restarted_and_recovers_the_winners_events() -> None:
    store = ev.open_store()

    async def main() -> None:
        async with ev.ActorSystem() as system:
            ref = await system.spawn("c", lambda: CounterActor(persistence_id="counter-1", event_store=store))
            other = CounterActor(persistence_id="counter-1", event_store=store)
            await other.on_message(inc(7))  # another incarnation wins the race
            with pytest.raises(ev.ConcurrencyError):
                await ref.ask(inc(1))
            assert ref.metrics().restarts == 1
            assert await ref.ask("get") == 7
            assert await ref.ask(inc(1)) == 8

    run(main())


def test_passivation_stops_an_idle_actor_and_its_next_message_recovers_the_state() -> None:
    clock = ManualClock()
    store = ev.open_store()
    built: list[CounterActor] = []

    def factory() -> CounterActor:
        built.append(CounterActor(persistence_id="counter-1", event_store=store))
        return built[-1]

    async def main() -> None:
        async with ev.ActorSystem(clock=clock, passivation_interval=None) as system:
            ref = await system.spawn("c", factory, passivate_after=30.0)
            await ref.ask(inc(5))
            await ref.ask(inc(3))
            assert await system.passivate_idle() == []
            clock.advance(seconds=31)
            assert await system.passivate_idle() == ["c"]
            assert ref.metrics().state == "passivated"
            assert await ref.ask("get") == 8
            assert ref.metrics().state == "running"

    run(main())
    assert len(built) == 2 and built[1].applied == 2


def test_many_aggregate_actors_on_an_fsync_store_persist_every_command(tmp_path: Path) -> None:
    async def main(store: ev.EventStore) -> None:
        async with ev.ActorSystem() as system:
            refs = [
                await system.spawn(
                    f"acc-{i}",
                    lambda i=i: BankAccountAggregate(persistence_id=f"acc-{i}", event_store=store),  # type: ignore[misc]
                )
                for i in range(20)
            ]
            await asyncio.gather(*(r.ask(OpenAccountCommand(account_id=r.name, initial_balance=0.0)) for r in refs))
            for _ in range(9):
                for r in refs:
                    r.tell(DepositMoneyCommand(account_id=r.name, amount=1.0))
            states = await asyncio.gather(*(r.ask(DepositMoneyCommand(account_id=r.name, amount=1.0)) for r in refs))
            assert {(s.balance, s.version) for s in states} == {(10.0, 11)}

    with ev.open_store(tmp_path / "store", durability="fsync") as store:
        run(main(store))
    with ev.open_store(tmp_path / "store") as store:
        assert all(store.stream_version(f"acc-{i}") == 11 for i in range(20))


# -- commands and batches -------------------------------------------------------------------------


class Stamped(ev.Event, event_type="persist.Stamped"):
    at: datetime


class Stamp(ev.Command):
    times: list[datetime]


class StampState(ev.State):
    count: int = 0


class Stamper(AggregateRoot[StampState]):
    """Persists one Stamped per time; its apply_event sets last_modified from the event."""

    aggregate_type = "bank.Stamper"

    @property
    def initial_state(self) -> StampState:
        return StampState()

    def handle_command(self, state: StampState, command: ev.Command) -> list[ev.Event]:
        assert isinstance(command, Stamp)
        return [Stamped(at=t) for t in command.times]

    def apply_event(self, state: StampState, event: ev.Event) -> StampState:
        assert isinstance(event, Stamped)
        if event.at.year < 2000:
            raise ValueError("cannot apply events from before 2000")
        return state.copy_with(count=state.count + 1, last_modified=event.at)


def test_a_batch_from_one_command_is_stored_all_or_nothing() -> None:
    async def main() -> None:
        store = ev.open_store()
        stamper = Stamper(persistence_id="s-1", event_store=store)
        await stamper.on_message(Stamp(times=[T0]))
        with pytest.raises(ev.SerializationError):  # the second event has a naive datetime
            await stamper.on_message(Stamp(times=[T0, datetime(2026, 1, 2)]))
        assert store.stream_version("s-1") == 1
        assert stamper.state.count == 1 and stamper.sequence_number == 1
        state = await stamper.on_message(Stamp(times=[T0, T0 + timedelta(days=1)]))
        assert (state.count, state.version, store.stream_version("s-1")) == (3, 3, 3)

    run(main())


def test_an_event_apply_event_cannot_apply_is_never_stored() -> None:
    async def main() -> None:
        store = ev.open_store()
        stamper = Stamper(persistence_id="s-1", event_store=store)
        with pytest.raises(ValueError, match="before 2000"):
            await stamper.on_message(Stamp(times=[T0, datetime(1999, 1, 1, tzinfo=UTC)]))
        assert store.stream_version("s-1") == 0 and stamper.state == StampState()

    run(main())


def test_a_rejected_command_stores_nothing_and_a_resumed_actor_keeps_serving() -> None:
    async def main() -> None:
        store = ev.open_store()
        async with ev.ActorSystem() as system:
            ref = await system.spawn(
                "acc",
                lambda: BankAccountAggregate(persistence_id="acc-1", event_store=store),
                supervisor=ev.Supervisor.resume(),
            )
            await ref.ask(OpenAccountCommand(account_id="acc-1", initial_balance=10.0))
            with pytest.raises(ev.CommandRejected, match="insufficient funds"):
                await ref.ask(WithdrawMoneyCommand(account_id="acc-1", amount=50.0))
            state = await ref.ask(WithdrawMoneyCommand(account_id="acc-1", amount=4.0))
            assert (state.balance, state.version, store.stream_version("acc-1")) == (6.0, 2, 2)
            assert ref.metrics().restarts == 0

    run(main())


def test_the_framework_sets_version_and_last_modified_after_commands_and_recovery() -> None:
    clock = ManualClock(T0)

    async def main() -> None:
        store = ev.open_store(clock=clock)
        ledger = Ledger(persistence_id="l-1", event_store=store)
        first = await ledger.on_message(Post(amount=Decimal(3), memo="a"))
        clock.advance(seconds=60)
        second = await ledger.on_message(Post(amount=Decimal(4), memo="b"))
        assert (first.version, first.last_modified) == (1, T0)
        assert (second.version, second.last_modified) == (2, T0 + timedelta(seconds=60))
        recovered = Ledger(persistence_id="l-1", event_store=store)
        await recovered.start()
        assert recovered.state == second

    run(main())


def test_a_last_modified_set_by_apply_event_is_kept_after_commands_and_recovery() -> None:
    clock = ManualClock(T0)
    when = datetime(2025, 6, 1, tzinfo=UTC)

    async def main() -> None:
        store = ev.open_store(clock=clock)
        stamper = Stamper(persistence_id="s-1", event_store=store)
        state = await stamper.on_message(Stamp(times=[T0, when]))
        assert (state.version, state.last_modified) == (2, when)
        recovered = Stamper(persistence_id="s-1", event_store=store)
        await recovered.start()
        assert recovered.state == state

    run(main())


def test_every_append_records_the_aggregate_type_as_stream_type() -> None:
    async def main() -> ev.EventStore:
        store = ev.open_store()
        await Stamper(persistence_id="s-1", event_store=store).on_message(Stamp(times=[T0, T0]))
        await Ledger(persistence_id="l-1", event_store=store).on_message(Post(amount=Decimal(1)))
        await CounterActor(persistence_id="c-1", event_store=store).on_message(inc(1))
        return store

    store = run(main())
    rows = store.sql("SELECT stream_id, stream_type, count(*) FROM events GROUP BY ALL ORDER BY 1").fetchall()
    assert rows == [("c-1", "CounterActor", 1), ("l-1", "Ledger", 1), ("s-1", "bank.Stamper", 2)]


def test_persist_events_of_nothing_appends_nothing() -> None:
    async def main() -> None:
        store = ev.open_store()
        counter = CounterActor(persistence_id="c-1", event_store=store)
        assert await counter.persist_events([]) == 0
        assert store.stream_version("c-1") == 0

    run(main())


class AsyncCounter(PersistentActor):
    """Its event_handler is a coroutine function: persist and recovery await it."""

    total = 0

    async def command_handler(self, command: Any) -> int:
        await self.persist_events([CounterIncrementedEvent(aggregate_id="a", value=command)] * 2)
        return self.total

    async def event_handler(self, event: ev.Event) -> None:  # type: ignore[override]
        assert isinstance(event, CounterIncrementedEvent)
        await asyncio.sleep(0)  # a real suspension point inside the handler
        self.total += event.value


def test_an_async_event_handler_is_awaited_on_persist_and_on_recovery() -> None:
    async def main() -> None:
        store = ev.open_store()
        assert await AsyncCounter(persistence_id="a", event_store=store).on_message(4) == 8
        again = AsyncCounter(persistence_id="a", event_store=store)
        await again.start()
        assert (again.total, again.sequence_number) == (8, 2)

    run(main())


def test_bad_arguments_and_results_raise_clear_errors() -> None:
    store = ev.open_store()
    with pytest.raises(ev.InvalidInputError, match="persistence_id"):
        CounterActor(persistence_id="", event_store=store)
    with pytest.raises(ev.InvalidInputError, match="get_snapshot_state"):
        AsyncCounter(persistence_id="a", event_store=store, snapshot_config=SnapshotConfig())

    class Sloppy(Ledger):
        def handle_command(self, state: LedgerState, command: ev.Command) -> Any:
            return ["not an event"]

    with pytest.raises(ev.InvalidInputError, match=r"handle_command must return ev\.Event"):
        run(Sloppy(persistence_id="x", event_store=store).on_message(Post(amount=Decimal(1))))

    class Forgetful(Ledger):
        def apply_event(self, state: LedgerState, event: ev.Event) -> Any:
            return None

    with pytest.raises(ev.InvalidInputError, match="apply_event returned None"):
        run(Forgetful(persistence_id="y", event_store=store).on_message(Post(amount=Decimal(1))))
    assert store.stream_version("x") == store.stream_version("y") == 0


def test_a_single_event_or_none_from_handle_command_is_accepted() -> None:
    class One(Ledger):
        def handle_command(self, state: LedgerState, command: ev.Command) -> Any:
            events = super().handle_command(state, command)
            return events[0] if events else None

    async def main() -> None:
        store = ev.open_store()
        one = One(persistence_id="o", event_store=store)
        assert (await one.on_message(Post(amount=Decimal(2)))).balance == 2
        assert (await one.on_message("ignored")).balance == 2

    run(main())


def test_reprs_are_one_line_and_aggregates_render_html() -> None:
    store = ev.open_store()
    counter = CounterActor(persistence_id="c-1", event_store=store)
    assert repr(counter) == "CounterActor('c-1', sequence_number=0)"
    ledger = Ledger(persistence_id="l-1", event_store=store)
    assert repr(ledger).startswith("Ledger('l-1', version=0, state=LedgerState(") and "\n" not in repr(ledger)
    assert "<table>" in ledger._repr_html_() and "balance" in ledger._repr_html_()


def test_persistent_actor_defaults_answer_nothing_and_refuse_snapshots() -> None:
    class Bare(PersistentActor):
        pass

    async def main() -> None:
        bare = Bare(persistence_id="b", event_store=ev.open_store())
        assert await bare.on_message("hello") is None
        assert await bare.create_snapshot() is None  # no events yet
        await bare.persist_event(CounterIncrementedEvent(aggregate_id="b", value=1))
        with pytest.raises(NotImplementedError, match="get_snapshot_state"):
            await bare.create_snapshot()

    run(main())


class Picky(CounterActor):
    """Its event_handler refuses the value 13 while `refuse` is set (a bug, fixed later)."""

    refuse = True

    def event_handler(self, event: ev.Event) -> None:
        if isinstance(event, CounterIncrementedEvent) and event.value == 13 and Picky.refuse:
            raise Boom("cannot apply 13")
        super().event_handler(event)


def test_events_stored_but_not_applied_are_applied_from_the_store_before_the_next_message() -> None:
    async def main() -> None:
        store = ev.open_store()
        picky = Picky(persistence_id="p", event_store=store)
        await picky.on_message(inc(1, "p"))
        with pytest.raises(Boom):
            await picky.on_message(inc(13, "p"))
        assert store.stream_version("p") == 2 and picky.sequence_number == 1
        Picky.refuse = False
        assert await picky.on_message("get") == 14
        assert (picky.sequence_number, picky.applied) == (2, 2)

    Picky.refuse = True
    try:
        run(main())
    finally:
        Picky.refuse = True


def test_a_recovery_that_failed_half_way_goes_on_without_applying_events_twice() -> None:
    async def main() -> None:
        store = ev.open_store()
        for value in (1, 2, 13, 4):
            store.append("p", CounterIncrementedEvent(aggregate_id="p", value=value))
        picky = Picky(persistence_id="p", event_store=store)
        with pytest.raises(Boom):
            await picky.start()
        assert (picky.value, picky.sequence_number, picky.is_recovered) == (3, 2, False)
        Picky.refuse = False
        await picky.start()
        assert (picky.value, picky.sequence_number, picky.applied) == (20, 4, 4)

    Picky.refuse = True
    try:
        run(main())
    finally:
        Picky.refuse = True


# -- the store's worker threads -------------------------------------------------------------------


class Owner:
    """Stands in for a store: run_blocking only keys its workers by it, weakly."""


def store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "eventador-store"]


def test_blocking_calls_return_results_and_raise_errors_on_the_calling_loop() -> None:
    before = set(store_threads())
    owner = Owner()

    def fail() -> None:
        raise Boom("in a worker")

    async def main() -> None:
        assert await run_blocking(owner, lambda: threading.current_thread().name) == "eventador-store"
        with pytest.raises(Boom, match="in a worker"):
            await run_blocking(owner, fail)
        gate = threading.Event()
        results = await asyncio.gather(*(run_blocking(owner, lambda i=i: gate.wait(5) and i) for i in range(100)),
                                       asyncio.to_thread(gate.set))
        assert results[:100] == list(range(100))

    run(main())
    run(main())  # a second event loop uses the same workers
    assert 0 < len(set(store_threads()) - before) <= THREADS


def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    owner = Owner()
    gate = threading.Event()

    async def main() -> None:
        slow = asyncio.ensure_future(run_blocking(owner, lambda: gate.wait(5)))
        fast = run_blocking(owner, lambda: 42)
        assert await fast == 42
        slow.cancel()
        gate.set()
        assert await run_blocking(owner, lambda: "still serving") == "still serving"

    run(main())


def test_the_workers_end_when_their_store_is_collected() -> None:
    before = set(store_threads())
    owner = Owner()

    async def main(owner: Owner) -> None:
        gate = threading.Event()
        await asyncio.gather(*(run_blocking(owner, lambda: gate.wait(5)) for _ in range(4)),
                             asyncio.to_thread(gate.set))

    run(main(owner))
    ours = [t for t in store_threads() if t not in before]
    assert ours
    del owner
    gc.collect()
    for thread in ours:
        thread.join(10)
    assert not any(t.is_alive() for t in ours)
