"""The test suite's domain: a small bank whose events use the common payload field types.

The event type names carry a ``test.`` prefix: the type registry is process-wide,
and another test module may well define its own ``Deposited``.
"""

from __future__ import annotations

import enum
from dataclasses import field
from datetime import UTC, datetime
from decimal import Decimal

import eventador as ev


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
