"""given / when / then scenarios for aggregates: passing checks chain, failing ones explain."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

import eventador as ev
from eventador import AggregateScenario
from tests.support.aggregate_domain import (
    AccountOpenedEvent,
    BankAccountAggregate,
    BankAccountState,
    DepositMoneyCommand,
    Freeze,
    Frozen,
    Ledger,
    LedgerState,
    MoneyDepositedEvent,
    MoneyWithdrawnEvent,
    OpenAccountCommand,
    Post,
    Posted,
    Status,
    WithdrawMoneyCommand,
)

OPENED = AccountOpenedEvent(account_id="acc-1", initial_balance=100.0)


def scenario() -> AggregateScenario[BankAccountState]:
    return AggregateScenario(BankAccountAggregate, aggregate_id="acc-1")


def test_given_when_then_passes_and_chains_to_then_state() -> None:
    (
        scenario()
        .given(OPENED)
        .when(DepositMoneyCommand(account_id="acc-1", amount=5.0))
        .then(MoneyDepositedEvent(account_id="acc-1", amount=5.0))
        .then_state(balance=105.0, is_active=True, version=2)
        .then_state(lambda s: s.balance > 100)
        .then_state(BankAccountState(account_id="acc-1", balance=105.0, is_active=True))
    )


def test_then_with_no_events_means_nothing_happened() -> None:
    scenario().when(DepositMoneyCommand(account_id="acc-1", amount=5.0)).then().then_state(balance=0.0)


def test_then_shows_a_diff_of_expected_and_produced_events() -> None:
    run = scenario().given(OPENED).when(DepositMoneyCommand(account_id="acc-1", amount=5.0))
    with pytest.raises(AssertionError) as caught:
        run.then(MoneyDepositedEvent(account_id="acc-1", amount=6.0))
    message = str(caught.value)
    assert "-MoneyDepositedEvent(account_id='acc-1', amount=6.0)" in message
    assert "+MoneyDepositedEvent(account_id='acc-1', amount=5.0)" in message


def test_then_rejected_checks_the_error_and_that_nothing_was_stored() -> None:
    (
        scenario()
        .given(OPENED)
        .when(WithdrawMoneyCommand(account_id="acc-1", amount=500.0))
        .then_rejected()
        .then_state(balance=100.0)
    )
    scenario().given(OPENED).when(WithdrawMoneyCommand(account_id="acc-1", amount=500.0)).then_rejected(
        "insufficient funds"
    )
    scenario().when(WithdrawMoneyCommand(account_id="acc-1", amount=1.0)).then_rejected(
        ev.CommandRejected, match="not open"
    )


def test_then_rejected_fails_when_the_command_succeeds_or_fails_otherwise() -> None:
    with pytest.raises(AssertionError, match="but the command succeeded"):
        scenario().given(OPENED).when(WithdrawMoneyCommand(account_id="acc-1", amount=1.0)).then_rejected()
    with pytest.raises(AssertionError, match="does not match"):
        scenario().given(OPENED).when(WithdrawMoneyCommand(account_id="acc-1", amount=500.0)).then_rejected(
            "account closed"
        )
    with pytest.raises(AssertionError, match="expected KeyError"):
        scenario().given(OPENED).when(WithdrawMoneyCommand(account_id="acc-1", amount=500.0)).then_rejected(KeyError)


def test_an_unexpected_rejection_fails_then_and_then_state_with_its_message() -> None:
    rejected = scenario().given(OPENED).when(WithdrawMoneyCommand(account_id="acc-1", amount=500.0))
    with pytest.raises(AssertionError, match="raised CommandRejected: insufficient funds"):
        rejected.then(MoneyWithdrawnEvent(account_id="acc-1", amount=500.0))
    with pytest.raises(AssertionError, match="use then_rejected"):
        rejected.then_state(balance=100.0)


def test_then_state_lists_every_differing_field() -> None:
    run = scenario().given(OPENED).when(DepositMoneyCommand(account_id="acc-1", amount=5.0))
    with pytest.raises(AssertionError) as caught:
        run.then_state(BankAccountState(account_id="acc-2", balance=1.0, is_active=True))
    assert "account_id: expected 'acc-2', got 'acc-1'" in str(caught.value)
    assert "balance: expected 1.0, got 105.0" in str(caught.value)
    with pytest.raises(AssertionError, match="does not satisfy"):
        run.then_state(lambda s: s.balance < 0)
    with pytest.raises(AssertionError, match="no such field"):
        run.then_state(colour="red")


def test_the_framework_fields_are_predictable_with_the_fixed_clock() -> None:
    start = datetime(2030, 5, 1, tzinfo=UTC)
    AggregateScenario(Ledger, start=start).given(Posted(amount=Decimal(2), memo="a")).when(Freeze(reason="x")).then(
        Frozen(reason="x")
    ).then_state(
        LedgerState(balance=Decimal(2), status=Status.FROZEN, recent=("a",), tags=frozenset({"a"}), posts=1),
        version=2,
        last_modified=start,
    )


def test_a_scenario_without_a_command_checks_the_given_state() -> None:
    s = AggregateScenario(Ledger).given(Posted(amount=Decimal(2), memo="a"), Frozen(reason="x"))
    s.then_state(status=Status.FROZEN, version=2)
    assert s.events == [] and s.error is None
    AggregateScenario(Ledger).given(Frozen(reason="x")).when(Post(amount=Decimal(1))).then_rejected("frozen")


def test_misuse_is_refused() -> None:
    s = scenario().when(OpenAccountCommand(account_id="acc-1", initial_balance=1.0))
    with pytest.raises(ev.InvalidInputError, match="one command"):
        s.when(OpenAccountCommand(account_id="acc-1", initial_balance=2.0))
    s.then(AccountOpenedEvent(account_id="acc-1", initial_balance=1.0))
    with pytest.raises(ev.InvalidInputError, match="already run"):
        s.given(OPENED)
    with pytest.raises(ev.InvalidInputError, match=r"ev\.Event"):
        scenario().given("not an event")  # type: ignore[arg-type]
    with pytest.raises(ev.InvalidInputError, match="AggregateRoot"):
        AggregateScenario(str)  # type: ignore[arg-type]
    assert repr(s).startswith("AggregateScenario(BankAccountAggregate).given(0 events).when(")
