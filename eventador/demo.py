"""A realistic demo store: bank accounts opened, funded and drawn on over a quarter.

Deterministic: a seeded random generator and a manual clock, so every run
builds the same history (the same balances, the same answers to the queries).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from eventador.clock import ManualClock
from eventador.messages import Event
from eventador.store import EventStore, open_store

__all__ = ["AccountClosed", "AccountOpened", "DemoResult", "MoneyDeposited", "MoneyWithdrawn", "build_demo"]


class AccountOpened(Event, event_type="bank.AccountOpened"):
    account_id: str
    owner: str
    branch: str
    currency: str


class MoneyDeposited(Event, event_type="bank.MoneyDeposited"):
    account_id: str
    amount: Decimal
    channel: str


class MoneyWithdrawn(Event, event_type="bank.MoneyWithdrawn"):
    account_id: str
    amount: Decimal
    channel: str


class AccountClosed(Event, event_type="bank.AccountClosed"):
    account_id: str
    reason: str


QUERIES: list[tuple[str, str]] = [
    (
        "Net flow per branch",
        """SELECT o.branch,
       count(DISTINCT o.account_id) AS accounts,
       coalesce(sum(d.amount), 0) AS deposited
FROM "bank.AccountOpened" o
LEFT JOIN "bank.MoneyDeposited" d USING (account_id)
GROUP BY o.branch ORDER BY deposited DESC""",
    ),
    (
        "Five largest balances (folded in SQL)",
        """SELECT stream_id AS account,
       sum(CASE event_type WHEN 'bank.MoneyDeposited' THEN CAST(data->>'amount' AS DECIMAL(18,2))
                           WHEN 'bank.MoneyWithdrawn' THEN -CAST(data->>'amount' AS DECIMAL(18,2))
                           ELSE 0 END) AS balance
FROM events GROUP BY stream_id ORDER BY balance DESC LIMIT 5""",
    ),
    (
        "Events per week by type",
        """SELECT date_trunc('week', recorded_at)::DATE AS week, event_type, count(*) AS events
FROM events GROUP BY ALL ORDER BY week, event_type LIMIT 8""",
    ),
]

_BRANCHES = ["Amsterdam", "Rotterdam", "Utrecht", "Eindhoven", "Groningen"]
_CHANNELS = ["card", "transfer", "cash", "app"]
_NAMES = ["Ada", "Bram", "Chen", "Daan", "Eva", "Femke", "Gijs", "Hana", "Ines", "Joris", "Kim", "Lars"]


@dataclass(frozen=True)
class DemoResult:
    path: Path | None
    accounts: int
    events: int
    seconds: float


def build_demo(
    path: str | Path | None = None,
    *,
    accounts: int = 400,
    days: int = 90,
    seed: int = 7,
    progress: Callable[[int, int], Any] | None = None,
) -> EventStore:
    """A store filled with `accounts` bank accounts and their history; returned open.

    Costs one append per account per day with activity (a few thousand appends).
    """
    rng = random.Random(seed)
    clock = ManualClock(datetime(2026, 1, 1, 8, tzinfo=UTC))
    store = open_store(path, durability="none", clock=clock)
    balances: dict[str, Decimal] = {}
    opened_on = {f"acc-{i:04d}": rng.randrange(0, days // 2) for i in range(accounts)}
    closed: set[str] = set()
    for day in range(days):
        for account, first_day in opened_on.items():
            if day < first_day or account in closed:
                continue
            events: list[Event] = []
            if day == first_day:
                events.append(
                    AccountOpened(
                        account_id=account,
                        owner=rng.choice(_NAMES),
                        branch=rng.choice(_BRANCHES),
                        currency="EUR",
                    )
                )
                balances[account] = Decimal(0)
            if rng.random() < 0.35:
                amount = Decimal(rng.randrange(500, 250_000)) / 100
                events.append(MoneyDeposited(account_id=account, amount=amount, channel=rng.choice(_CHANNELS)))
                balances[account] += amount
            if rng.random() < 0.25 and balances[account] > 20:
                amount = (balances[account] * Decimal(rng.uniform(0.05, 0.5))).quantize(Decimal("0.01"))
                events.append(MoneyWithdrawn(account_id=account, amount=amount, channel=rng.choice(_CHANNELS)))
                balances[account] -= amount
            if day > first_day + 30 and rng.random() < 0.002:
                events.append(AccountClosed(account_id=account, reason=rng.choice(["moved", "merged", "customer"])))
                closed.add(account)
            if events:
                store.append(account, events, stream_type="BankAccount")
        clock.advance(timedelta(days=1))
        if progress is not None:
            progress(day + 1, days)
    store.flush()
    return store
