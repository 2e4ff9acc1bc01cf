"""Domain for the persistence tests: the seed README's counter and bank account, ported.

Also imported by child processes (the restart test), so it must stay importable
without pytest. Event type names carry a ``seed.`` or ``ledger.`` prefix: the type
registry is process-wide and other test modules define their own events.
"""

from __future__ import annotations

import enum
from dataclasses import field
from decimal import Decimal
from typing import Any

import eventador as ev
from eventador import AggregateRoot, PersistentActor, SnapshotConfig

# -- the seed's counter ------------------------------------------------------------------


class IncrementCommand(ev.Command):
    aggregate_id: str
    value: int


class CounterIncrementedEvent(ev.Event, event_type="seed.CounterIncremented"):
    aggregate_id: str
    value: int


class CounterActor(PersistentActor):
    """The seed's CounterActor: IncrementCommand -> CounterIncrementedEvent -> value."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._value = 0
        self.applied = 0  # events applied by event_handler (recovery and persist), for tests

    @property
    def value(self) -> int:
        return self._value

    async def command_handler(self, command: Any) -> Any:
        if isinstance(command, IncrementCommand):
            await self.persist_event(CounterIncrementedEvent(aggregate_id=self.persistence_id, value=command.value))
            return self._value
        if command == "get":
            return self._value
        return None

    def event_handler(self, event: ev.Event) -> None:
        if isinstance(event, CounterIncrementedEvent):
            self._value += event.value
            self.applied += 1

    async def get_snapshot_state(self) -> Any:
        return {"value": self._value}

    async def on_snapshot(self, snapshot_state: Any, sequence_number: int) -> None:
        if isinstance(snapshot_state, dict):
            self._value = int(snapshot_state.get("value", 0))


# -- the seed's bank account -----------------------------------------------------------------


class OpenAccountCommand(ev.Command):
    account_id: str
    initial_balance: float


class DepositMoneyCommand(ev.Command):
    account_id: str
    amount: float


class WithdrawMoneyCommand(ev.Command):
    account_id: str
    amount: float


class AccountOpenedEvent(ev.Event, event_type="seed.AccountOpened"):
    account_id: str
    initial_balance: float


class MoneyDepositedEvent(ev.Event, event_type="seed.MoneyDeposited"):
    account_id: str
    amount: float


class MoneyWithdrawnEvent(ev.Event, event_type="seed.MoneyWithdrawn"):
    account_id: str
    amount: float


class BankAccountState(ev.State):
    account_id: str
    balance: float
    is_active: bool


class BankAccountAggregate(AggregateRoot[BankAccountState]):
    """The seed's aggregate (its apply_event counts versions itself), plus withdrawals that can be refused."""

    @property
    def initial_state(self) -> BankAccountState:
        return BankAccountState(account_id=self.persistence_id, balance=0.0, is_active=False, version=0)

    def handle_command(self, state: BankAccountState, command: ev.Command) -> list[ev.Event]:
        if isinstance(command, OpenAccountCommand) and not state.is_active:
            return [AccountOpenedEvent(account_id=command.account_id, initial_balance=command.initial_balance)]
        if isinstance(command, DepositMoneyCommand) and state.is_active:
            return [MoneyDepositedEvent(account_id=command.account_id, amount=command.amount)]
        if isinstance(command, WithdrawMoneyCommand):
            if not state.is_active:
                raise ev.CommandRejected(f"account {state.account_id} is not open")
            if command.amount > state.balance:
                raise ev.CommandRejected(f"insufficient funds: balance {state.balance}, asked {command.amount}")
            return [MoneyWithdrawnEvent(account_id=command.account_id, amount=command.amount)]
        return []

    def apply_event(self, state: BankAccountState, event: ev.Event) -> BankAccountState:
        if isinstance(event, AccountOpenedEvent):
            return state.copy_with(balance=event.initial_balance, is_active=True, version=state.version + 1)
        if isinstance(event, MoneyDepositedEvent):
            return state.copy_with(balance=state.balance + event.amount, version=state.version + 1)
        if isinstance(event, MoneyWithdrawnEvent):
            return state.copy_with(balance=state.balance - event.amount, version=state.version + 1)
        return state


# -- a ledger whose state uses the codec's converters (Decimal, enum, tuple, nested) -----------


class Status(enum.Enum):
    NEW = "new"
    OPEN = "open"
    FROZEN = "frozen"


class Limits(ev.State):
    daily: Decimal = Decimal("1000")


class Post(ev.Command):
    amount: Decimal
    memo: str = ""


class Freeze(ev.Command):
    reason: str


class Posted(ev.Event, event_type="ledger.Posted"):
    amount: Decimal
    memo: str


class Frozen(ev.Event, event_type="ledger.Frozen"):
    reason: str


class LedgerState(ev.State):
    balance: Decimal = Decimal(0)
    status: Status = Status.NEW
    recent: tuple[str, ...] = ()
    tags: frozenset[str] = frozenset()
    limits: Limits = field(default_factory=Limits)
    posts: int = 0


class Ledger(AggregateRoot[LedgerState]):
    """Does not touch version or last_modified: the framework sets them."""

    snapshot_config = SnapshotConfig(event_count_threshold=5, max_snapshots_to_keep=2)

    @property
    def initial_state(self) -> LedgerState:
        return LedgerState()

    def handle_command(self, state: LedgerState, command: ev.Command) -> list[ev.Event]:
        if state.status is Status.FROZEN:
            raise ev.CommandRejected("the ledger is frozen")
        if isinstance(command, Post):
            if state.balance + command.amount < 0:
                raise ev.CommandRejected("the balance cannot go below zero")
            return [Posted(amount=command.amount, memo=command.memo)]
        if isinstance(command, Freeze):
            return [Frozen(reason=command.reason)]
        return []

    def apply_event(self, state: LedgerState, event: ev.Event) -> LedgerState:
        if isinstance(event, Posted):
            return state.copy_with(
                balance=state.balance + event.amount,
                status=Status.OPEN,
                recent=(*state.recent[-2:], event.memo),
                tags=state.tags | {event.memo[:1]} if event.memo else state.tags,
                posts=state.posts + 1,
            )
        if isinstance(event, Frozen):
            return state.copy_with(status=Status.FROZEN)
        return state
