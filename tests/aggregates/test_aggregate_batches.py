"""An aggregate actor handles the commands queued in its mailbox in one go and writes their
events in one append, yet every command is decided, answered and failed as if it ran alone."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventador as ev
from eventador import AggregateRoot, Repository
from tests.support.aggregate_domain import (
    BankAccountAggregate,
    BankAccountState,
    DepositMoneyCommand,
    MoneyDepositedEvent,
    OpenAccountCommand,
    WithdrawMoneyCommand,
)
from tests.support.aio import run


def ticking_store(path: Path | None = None, **options: Any) -> ev.EventStore:
    """Every clock reading is a second later: commands handled apart get different times."""
    clock = ev.ManualClock(tick=timedelta(seconds=1))
    return ev.open_store(path, clock=clock, **options)


def deposit(amount: float) -> DepositMoneyCommand:
    return DepositMoneyCommand(account_id="acc", amount=amount)


def withdraw(amount: float) -> WithdrawMoneyCommand:
    return WithdrawMoneyCommand(account_id="acc", amount=amount)


async def ask_all(ref: ev.ActorRef, commands: list[Any]) -> list[Any]:
    """Queues every command before the actor runs (one loop turn), then gathers the answers."""
    return await asyncio.gather(*(ref.ask(c, timeout=None) for c in commands), return_exceptions=True)


def handle(
    cls: type[AggregateRoot[Any]], store: ev.EventStore, commands: list[Any],
    supervisor: ev.Supervisor | None = None,
) -> tuple[list[Any], Any]:
    """The answers of an aggregate actor "acc" to `commands`, all queued at once, and its metrics."""

    async def main() -> tuple[list[Any], Any]:
        async with ev.ActorSystem() as system:
            ref = await system.spawn(
                "acc", lambda: cls(persistence_id="acc", event_store=store),
                supervisor=supervisor or ev.Supervisor.resume(),
            )
            answers = await ask_all(ref, commands)
            return answers, system.metrics().loc["acc"]

    return run(main())


def test_queued_commands_share_one_append_and_each_gets_its_own_state() -> None:
    store = ticking_store()
    commands = [OpenAccountCommand(account_id="acc", initial_balance=10.0)] + [deposit(i) for i in range(1, 8)]
    answers, _ = handle(BankAccountAggregate, store, commands)
    assert [a.balance for a in answers] == [10.0, 11.0, 13.0, 16.0, 20.0, 25.0, 31.0, 38.0]
    assert [a.version for a in answers] == list(range(1, 9))
    records = store.read_stream("acc")
    assert [r.version for r in records] == list(range(1, 9))
    # One append: one reading of the clock for all eight commands (alone, each reads it).
    assert len({r.occurred_at for r in records}) == 1
    assert len({r.recorded_at for r in records}) == 1
    assert answers[-1].last_modified == records[-1].occurred_at


def test_a_rejected_command_in_a_batch_changes_nothing_and_the_rest_go_on() -> None:
    store = ticking_store()
    opening = OpenAccountCommand(account_id="acc", initial_balance=5.0)
    answers, _ = handle(BankAccountAggregate, store, [opening, withdraw(50), deposit(1), withdraw(6)])
    assert isinstance(answers[1], ev.CommandRejected) and "insufficient funds" in str(answers[1])
    assert [answers[0].balance, answers[2].balance, answers[3].balance] == [5.0, 6.0, 0.0]
    assert [r.event_type for r in store.read_stream("acc")] == [
        "seed.AccountOpened", "seed.MoneyDeposited", "seed.MoneyWithdrawn",
    ]


class Boom(RuntimeError):
    pass


class Fragile(BankAccountAggregate):
    """Its apply_event fails on a deposit of 13: that command fails; the others must not."""

    def apply_event(self, state: BankAccountState, event: ev.Event) -> BankAccountState:
        if isinstance(event, MoneyDepositedEvent) and event.amount == 13:
            raise Boom("13 is unlucky")
        return super().apply_event(state, event)


def test_a_failing_command_in_a_batch_fails_alone_after_the_ones_before_it_are_stored() -> None:
    store = ticking_store()
    commands = [OpenAccountCommand(account_id="acc", initial_balance=0.0), deposit(1), deposit(13), deposit(2)]
    answers, metrics = handle(Fragile, store, commands)
    assert isinstance(answers[2], Boom)
    assert [answers[0].balance, answers[1].balance, answers[3].balance] == [0.0, 1.0, 3.0]
    assert [r.event.amount for r in store.read_stream("acc", from_version=2)] == [1.0, 2.0]
    assert metrics["processed"] == 4 and metrics["failures"] == 1


def test_a_failing_command_in_a_batch_is_supervised_and_the_rest_wait_for_the_restart() -> None:
    store = ticking_store()
    commands = [OpenAccountCommand(account_id="acc", initial_balance=0.0), deposit(13), deposit(2), deposit(3)]
    answers, metrics = handle(Fragile, store, commands, supervisor=ev.Supervisor.restart())
    assert isinstance(answers[1], Boom)
    assert [answers[2].balance, answers[3].balance] == [2.0, 5.0]  # handled by the new instance, in order
    assert metrics["restarts"] == 1
    assert store.stream_version("acc") == 3


def test_a_conflict_fails_the_first_writing_command_and_the_rest_catch_up() -> None:
    async def main() -> None:
        store = ticking_store()
        async with ev.ActorSystem() as system:
            ref = await system.spawn(
                "acc", lambda: BankAccountAggregate(persistence_id="acc", event_store=store),
                supervisor=ev.Supervisor.resume(),
            )
            assert (await ref.ask(OpenAccountCommand(account_id="acc", initial_balance=1.0))).version == 1
            # Another writer appends behind the actor's back: its next append must not win blindly.
            store.append("acc", MoneyDepositedEvent(account_id="acc", amount=100.0), expected_version=1)
            answers = await ask_all(ref, [deposit(1), deposit(2), deposit(3)])
        assert isinstance(answers[0], ev.ConcurrencyError)  # as if it had been alone
        assert [answers[1].balance, answers[2].balance] == [103.0, 106.0]  # after catching up
        assert [r.event.amount for r in store.read_stream("acc", from_version=2)] == [100.0, 2.0, 3.0]

    run(main())


class Loose(BankAccountAggregate):
    """Deposits of 7 carry a value no payload may hold: only that command may fail."""

    def handle_command(self, state: BankAccountState, command: ev.Command) -> list[ev.Event]:
        if isinstance(command, DepositMoneyCommand) and command.amount == 7:
            return [MoneyDepositedEvent(account_id="acc", amount=object())]  # type: ignore[arg-type]
        return super().handle_command(state, command)

    def apply_event(self, state: BankAccountState, event: ev.Event) -> BankAccountState:
        if isinstance(event, MoneyDepositedEvent) and not isinstance(event.amount, float | int):
            return state
        return super().apply_event(state, event)


def test_an_event_that_cannot_be_stored_fails_only_its_own_command() -> None:
    store = ticking_store()
    commands = [OpenAccountCommand(account_id="acc", initial_balance=0.0), deposit(1), deposit(7), deposit(2)]
    answers, _ = handle(Loose, store, commands)
    assert isinstance(answers[2], ev.SerializationError) and "MoneyDepositedEvent.amount" in str(answers[2])
    assert [answers[0].balance, answers[1].balance, answers[3].balance] == [0.0, 1.0, 3.0]
    assert [r.event_type for r in store.read_stream("acc")] == [
        "seed.AccountOpened", "seed.MoneyDeposited", "seed.MoneyDeposited",
    ]


class Custom(BankAccountAggregate):
    """Overrides command_handler: it may do anything per message, so it gets one at a time."""

    async def command_handler(self, command: Any) -> BankAccountState:
        return await super().command_handler(command)


class OwnOnMessage(BankAccountAggregate):
    """Overrides on_message: it too gets one message at a time."""

    async def on_message(self, message: Any) -> Any:
        return await super().on_message(message)


@pytest.mark.parametrize("cls", [Custom, OwnOnMessage])
def test_an_aggregate_with_its_own_handler_is_not_batched(cls: type[BankAccountAggregate]) -> None:
    store = ticking_store()
    commands = [OpenAccountCommand(account_id="acc", initial_balance=0.0)] + [deposit(i) for i in range(1, 5)]
    answers, _ = handle(cls, store, commands)
    assert answers[-1].balance == 10.0
    assert len({r.occurred_at for r in store.read_stream("acc")}) == 5  # one clock reading each


def test_queued_commands_of_many_actors_on_disk_share_appends_and_fsyncs(tmp_path: Path) -> None:
    async def main() -> None:
        with ev.open_store(tmp_path / "store", durability="fsync") as store:
            wal = store._wal
            assert wal is not None
            async with ev.ActorSystem() as system:
                refs = [
                    await system.spawn(
                        f"acc-{i}", lambda i=i: BankAccountAggregate(persistence_id=f"acc-{i}", event_store=store)
                    )
                    for i in range(20)
                ]
                before = wal.syncs
                for ref in refs:
                    ref.tell(OpenAccountCommand(account_id="x", initial_balance=0.0))
                    for amount in range(1, 11):
                        ref.tell(deposit(amount))
                states = await asyncio.gather(*(ref.ask(deposit(0.5)) for ref in refs))
                syncs = wal.syncs - before
            assert all(s.balance == 55.5 and s.version == 12 for s in states)
            assert syncs <= 10, f"{syncs} fsyncs for 240 commands"  # 240 alone; one or two batches each
        with ev.open_store(tmp_path / "store") as reopened:  # durable, in order
            assert [r.event.amount for r in reopened.read_stream("acc-7", from_version=2)] == [
                *map(float, range(1, 11)), 0.5,
            ]

    run(main())


def test_asks_in_a_batch_in_flight_fail_when_the_actor_is_stopped(tmp_path: Path) -> None:
    async def main() -> None:
        with ev.open_store(tmp_path / "store", durability="fsync") as store:
            async with ev.ActorSystem() as system:
                ref = await system.spawn("acc", lambda: BankAccountAggregate(persistence_id="acc", event_store=store))
                await ref.ask(OpenAccountCommand(account_id="acc", initial_balance=0.0))
                asks = [asyncio.ensure_future(ref.ask(deposit(i), timeout=None)) for i in range(50)]
                await asyncio.sleep(0)  # queued
                await asyncio.sleep(0)  # the batch is handled and its append in flight
                await system.stop(ref)
                outcomes = await asyncio.gather(*asks, return_exceptions=True)
            assert any(isinstance(o, ev.ActorStoppedError) for o in outcomes)
            assert all(isinstance(o, BankAccountState | ev.ActorStoppedError) for o in outcomes)

    run(main())


commands_strategy = st.lists(
    st.one_of(
        st.builds(OpenAccountCommand, account_id=st.just("acc"), initial_balance=st.integers(0, 50).map(float)),
        st.builds(DepositMoneyCommand, account_id=st.just("acc"), amount=st.integers(1, 30).map(float)),
        st.builds(WithdrawMoneyCommand, account_id=st.just("acc"), amount=st.integers(1, 60).map(float)),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands=commands_strategy, split=st.integers(0, 40))
def test_batched_commands_give_what_one_at_a_time_gives(commands: list[ev.Command], split: int) -> None:
    """Commands queued in two bursts to an actor end as the same answers and events as the
    same commands run one at a time by a Repository."""
    alone = ev.open_store()
    repository = Repository(alone, BankAccountAggregate)
    expected: list[Any] = []
    for command in commands:
        try:
            expected.append(repository.execute("acc", command).balance)
        except ev.CommandRejected as rejected:
            expected.append(str(rejected))

    async def main() -> list[Any]:
        store = ev.open_store()
        async with ev.ActorSystem() as system:
            ref = await system.spawn(
                "acc", lambda: BankAccountAggregate(persistence_id="acc", event_store=store),
                supervisor=ev.Supervisor.resume(),
            )
            answers = await ask_all(ref, commands[:split]) + await ask_all(ref, commands[split:])
        assert [(r.event_type, r.event) for r in store.read_stream("acc")] == [
            (r.event_type, r.event) for r in alone.read_stream("acc")
        ]
        return [str(a) if isinstance(a, ev.CommandRejected) else a.balance for a in answers]

    assert run(main()) == expected


class VersionSeer(AggregateRoot[BankAccountState]):
    """A minimal aggregate that decides on state.version: each command must see the version
    the commands before it left (the framework stamps it after every command)."""

    @property
    def initial_state(self) -> BankAccountState:
        return BankAccountState(account_id=self.persistence_id, balance=0.0, is_active=True)

    def handle_command(self, state: BankAccountState, command: ev.Command) -> list[ev.Event]:
        assert isinstance(command, DepositMoneyCommand)
        return [MoneyDepositedEvent(account_id=state.account_id, amount=float(state.version))]

    def apply_event(self, state: BankAccountState, event: ev.Event) -> BankAccountState:
        return state.copy_with(balance=state.balance + event.amount)  # type: ignore[attr-defined]


def test_each_command_in_a_batch_sees_the_version_the_ones_before_it_left() -> None:
    store = ev.open_store()
    answers, _ = handle(VersionSeer, store, [deposit(0)] * 6)
    assert [r.event.amount for r in store.read_stream("acc")] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [a.version for a in answers] == [1, 2, 3, 4, 5, 6]
