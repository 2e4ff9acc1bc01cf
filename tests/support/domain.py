"""The test suite's domain: a small bank whose events use the common payload field types.

The event type names carry a ``test.`` prefix: the type registry is process-wide,
and another test module may well define its own ``Deposited``.
"""

from __future__ import annotations

import enum
from dataclasses import field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import eventador as ev

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy


class AccountKind(enum.Enum):
    CHECKING = "checking"
    SAVINGS = "savings"


class Opened(ev.Event, event_type="test.Opened"):
    account_id: str
    owner: str
    kind: AccountKind
    opened_at: datetime
    tags: list[str] = field(default_factory=list)


class Deposited(ev.Event, event_type="test.Deposited"):
    account_id: str
    amount: Decimal
    rate: float = 0.0
    note: str | None = None


class Withdrawn(ev.Event, event_type="test.Withdrawn"):
    account_id: str
    amount: Decimal
    at: datetime
    reasons: list[str] = field(default_factory=list)


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def opened(account_id: str = "acc-1", *, owner: str = "Ann") -> Opened:
    return Opened(account_id=account_id, owner=owner, kind=AccountKind.CHECKING, opened_at=T0, tags=["new"])


def deposited(amount: str | int = "10.00", account_id: str = "acc-1", *, note: str | None = None) -> Deposited:
    return Deposited(account_id=account_id, amount=Decimal(amount), rate=0.25, note=note)


def withdrawn(amount: str | int = "1.00", account_id: str = "acc-1") -> Withdrawn:
    return Withdrawn(account_id=account_id, amount=Decimal(amount), at=T0, reasons=["atm"])


def ledger_projection_sql(last: str, source: str, sql_type: str) -> tuple[str, str]:
    """setup_sql and apply_sql of a test ledger read model over these events: per account the
    balance, counts per type, and column `last` (of `sql_type`): the greatest `source` seen."""
    setup = f"""
        CREATE TABLE ledger (
            account_id VARCHAR PRIMARY KEY,
            balance DECIMAL(38, 12) NOT NULL,
            deposits BIGINT NOT NULL,
            withdrawals BIGINT NOT NULL,
            opened BIGINT NOT NULL,
            {last} {sql_type} NOT NULL
        )
    """
    apply = f"""
        INSERT INTO ledger
        SELECT
            account_id,
            sum(CASE kind WHEN 'd' THEN amount WHEN 'w' THEN -amount ELSE 0 END),
            count(*) FILTER (WHERE kind = 'd'),
            count(*) FILTER (WHERE kind = 'w'),
            count(*) FILTER (WHERE kind = 'o'),
            max({source})
        FROM (
            SELECT account_id, amount, 'd' AS kind, {source} FROM new_test_Deposited
            UNION ALL SELECT account_id, amount, 'w', {source} FROM new_test_Withdrawn
            UNION ALL SELECT account_id, 0, 'o', {source} FROM new_test_Opened
        )
        GROUP BY account_id
        ON CONFLICT (account_id) DO UPDATE SET
            balance = balance + excluded.balance,
            deposits = deposits + excluded.deposits,
            withdrawals = withdrawals + excluded.withdrawals,
            opened = opened + excluded.opened,
            {last} = greatest({last}, excluded.{last})
    """
    return setup, apply


def account_events(account: str, *, max_amount: str = "1000") -> SearchStrategy[ev.Event]:
    """Hypothesis: one Opened, Deposited or Withdrawn of `account` (amounts with cents)."""
    from hypothesis import strategies as st

    amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(max_amount), places=2)
    return st.one_of(
        st.just(opened(account)),
        amounts.map(lambda m: deposited(str(m), account)),
        amounts.map(lambda m: withdrawn(str(m), account)),
    )
