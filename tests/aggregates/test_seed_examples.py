"""The seed README's examples, ported: the CounterActor (increment 5 and 3 -> 8, recovery
after a restart, create_snapshot) and the BankAccountAggregate, standalone and spawned."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

import eventador as ev
from eventador import Repository, SnapshotConfig
from tests.support.aggregate_domain import (
    BankAccountAggregate,
    BankAccountState,
    CounterActor,
    DepositMoneyCommand,
    IncrementCommand,
    MoneyDepositedEvent,
    OpenAccountCommand,
)
from tests.support.aio import run as run_bounded

T = TypeVar("T")



def run(coro: Coroutine[Any, Any, T]) -> T:
    return run_bounded(coro, deadline=10.0)


def test_counter_increments_by_5_and_3_to_8() -> None:
    async def main() -> int:
        store = ev.open_store()
        counter = CounterActor(persistence_id="counter-1", event_store=store)
        await counter.start()  # the seed's preStart() + delay
        await counter.on_message(IncrementCommand(aggregate_id="counter-1", value=5))
        await counter.on_message(IncrementCommand(aggregate_id="counter-1", value=3))
        return counter.value

    assert run(main()) == 8


def test_counter_recovers_its_value_after_a_restart() -> None:
    async def main() -> tuple[int, int]:
        store = ev.open_store()
        counter = CounterActor(persistence_id="test-counter", event_store=store)
        await counter.on_message(IncrementCommand(aggregate_id="test-counter", value=10))
        recovered = CounterActor(persistence_id="test-counter", event_store=store)
        await recovered.start()
        return recovered.value, recovered.sequence_number

    assert run(main()) == (10, 1)


def test_counter_create_snapshot_and_recovery_starts_from_it(tmp_path: Any) -> None:
    async def main() -> None:
        with ev.open_store(tmp_path / "store") as store:
            counter = CounterActor(persistence_id="counter-1", event_store=store)
            for value in (5, 3):
                await counter.on_message(IncrementCommand(aggregate_id="counter-1", value=value))
            snapshot = await counter.create_snapshot()
            assert snapshot is not None
            assert (snapshot.version, snapshot.state_type, snapshot.compressed) == (2, "builtins:dict", False)
        with ev.open_store(tmp_path / "store") as store:  # a real reopen: the snapshot is in the catalog
            # Long enough that recovery looks for a snapshot at all (short streams just replay).
            counter = CounterActor(persistence_id="counter-1", event_store=store)
            await counter.start()
            assert (counter.value, counter.applied) == (8, 2)
            for _ in range(40):
                await counter.on_message(IncrementCommand(aggregate_id="counter-1", value=1))
            await counter.create_snapshot()
            await counter.on_message(IncrementCommand(aggregate_id="counter-1", value=100))
            recovered = CounterActor(persistence_id="counter-1", event_store=store)
            await recovered.start()
            # The snapshot at version 42 holds 48; only the event after it is replayed.
            assert (recovered.value, recovered.sequence_number, recovered.applied) == (148, 43, 1)

    run(main())


def test_counter_spawned_in_an_actor_system_answers_asks_and_survives_respawn() -> None:
    async def main() -> None:
        store = ev.open_store()

        def factory() -> CounterActor:
            return CounterActor(persistence_id="counter-1", event_store=store)

        async with ev.LocalActorSystem() as system:
            counter = await system.spawn("counter-1", factory)
            counter.tell(IncrementCommand(aggregate_id="counter-1", value=5))
            assert await counter.ask(IncrementCommand(aggregate_id="counter-1", value=3)) == 8
            await system.stop(counter)
            again = await system.spawn("counter-1", factory)
            assert await again.ask("get") == 8

    run(main())


def test_bank_account_aggregate_opens_and_takes_deposits() -> None:
    async def main() -> BankAccountState:
        store = ev.open_store()
        account = BankAccountAggregate(persistence_id="acc-1", event_store=store)
        await account.on_message(OpenAccountCommand(account_id="acc-1", initial_balance=100.0))
        state: BankAccountState = await account.on_message(DepositMoneyCommand(account_id="acc-1", amount=50.0))
        assert state is account.state
        return state

    state = run(main())
    assert (state.account_id, state.balance, state.is_active, state.version) == ("acc-1", 150.0, True, 2)


def test_bank_account_ignores_a_deposit_before_it_is_open_as_the_seed_does() -> None:
    async def main() -> tuple[BankAccountState, int]:
        store = ev.open_store()
        account = BankAccountAggregate(persistence_id="acc-1", event_store=store)
        state = await account.on_message(DepositMoneyCommand(account_id="acc-1", amount=50.0))
        return state, store.stream_version("acc-1")

    state, stored = run(main())
    assert (state.balance, state.is_active, state.version, stored) == (0.0, False, 0, 0)


def test_bank_account_recovers_after_a_restart_with_the_same_state() -> None:
    async def main() -> None:
        store = ev.open_store()
        account = BankAccountAggregate(persistence_id="acc-1", event_store=store)
        await account.on_message(OpenAccountCommand(account_id="acc-1", initial_balance=100.0))
        await account.on_message(DepositMoneyCommand(account_id="acc-1", amount=25.5))
        recovered = BankAccountAggregate(persistence_id="acc-1", event_store=store)
        await recovered.start()
        assert recovered.state == account.state
        assert [type(r.event) for r in store.read_stream("acc-1")][-1] is MoneyDepositedEvent

    run(main())


def test_bank_account_with_the_seeds_snapshot_config_recovers_from_a_snapshot() -> None:
    config = SnapshotConfig(event_count_threshold=40, max_snapshots_to_keep=2)

    async def main() -> None:
        store = ev.open_store()
        account = BankAccountAggregate(persistence_id="acc-1", event_store=store, snapshot_config=config)
        await account.on_message(OpenAccountCommand(account_id="acc-1", initial_balance=0.0))
        for _ in range(129):
            await account.on_message(DepositMoneyCommand(account_id="acc-1", amount=1.0))
        assert [s.version for s in store.snapshots.list("acc-1")] == [80, 120]
        recovered = BankAccountAggregate(persistence_id="acc-1", event_store=store)
        await recovered.start()
        assert recovered.state == account.state
        assert (recovered.state.balance, recovered.sequence_number) == (129.0, 130)

    run(main())


def test_the_seed_configuration_presets() -> None:
    assert SnapshotConfig.development.event_count_threshold == 50
    assert SnapshotConfig.production.event_count_threshold == 200
    custom = SnapshotConfig(event_count_threshold=100, max_snapshots_to_keep=3, compression_threshold=2048)
    assert custom == SnapshotConfig()


def test_bank_account_through_a_repository_without_actors() -> None:
    repo = Repository(ev.open_store(), BankAccountAggregate)
    repo.execute("acc-1", OpenAccountCommand(account_id="acc-1", initial_balance=10.0))
    state = repo.execute("acc-1", DepositMoneyCommand(account_id="acc-1", amount=5.0))
    assert (state.balance, state.version) == (15.0, 2)
    assert repo.get("acc-1") == state


@pytest.mark.parametrize("value", [0, -3])
def test_counter_persists_any_increment_the_seed_allows(value: int) -> None:
    async def main() -> int:
        counter = CounterActor(persistence_id="c", event_store=ev.open_store())
        return int(await counter.on_message(IncrementCommand(aggregate_id="c", value=value)))

    assert run(main()) == value
