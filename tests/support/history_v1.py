"""A bank's history as the code of its first release recorded it: run in a child process only.

``python -m tests.support.history_v1 DIR`` writes the store the history checks read
(``tests/testing/test_history.py``, ``tests/cli/test_schema_cli.py``). Its classes claim
the same event types as ``history_today`` (today's code), so the two are never imported
into one process: the type registry would refuse the second.

Positions: 1 Opened a1, 2 Deposited a1, 3 Deposited a1, 4 Withdrawn a1, 5 Opened a2,
6 Deposited a2 (flushed to Parquet); then a release that dropped ``Opened.nickname``
without a new version and moved ``Deposited`` to version 2: 7 Opened a3, 8 Deposited a3
(v2), 9 Withdrawn a2, 10 Closed a1.
"""

from __future__ import annotations

import sys
from decimal import Decimal

import eventador as ev


class Opened(ev.Event, event_type="hist.Opened"):
    account_id: str
    owner: str
    nickname: str


class Deposited(ev.Event, event_type="hist.Deposited"):
    account_id: str
    amount: Decimal


class Withdrawn(ev.Event, event_type="hist.Withdrawn"):
    account_id: str
    amount: Decimal


class Closed(ev.Event, event_type="hist.Closed"):
    account_id: str
    why: str


def second_release() -> tuple[type[ev.Event], type[ev.Event]]:
    """The classes ``Opened`` and ``Deposited`` of the second release (they replace the first's)."""

    class Opened(ev.Event, event_type="hist.Opened"):  # nickname dropped, version not raised
        account_id: str
        owner: str

    class Deposited(ev.Event, event_type="hist.Deposited", version=2):
        account: str
        amount: Decimal
        currency: str = "EUR"

    return Opened, Deposited


def write(path: str) -> None:
    """Returns nothing; writes the history (positions in the module's docstring) into store `path`."""
    with ev.open_store(path) as store:
        store.append("a1", [Opened(account_id="a1", owner="Ann", nickname="A")])
        store.append("a1", [Deposited(account_id="a1", amount=Decimal(n)) for n in (10, 20)])
        store.append("a1", [Withdrawn(account_id="a1", amount=Decimal(5))])
        store.append("a2", [Opened(account_id="a2", owner="Bo", nickname="B")])
        store.append("a2", [Deposited(account_id="a2", amount=Decimal(7))])
        store.flush()
        opened, deposited = second_release()
        store.append("a3", [opened(account_id="a3", owner="Cy")])
        store.append("a3", [deposited(account="a3", amount=Decimal(3), currency="USD")])
        store.append("a2", [Withdrawn(account_id="a2", amount=Decimal(1))])
        store.append("a1", [Closed(account_id="a1", why="moved")])


if __name__ == "__main__":
    write(sys.argv[1])
