"""Today's classes of the bank whose first release ``history_v1`` recorded.

Since then: ``Opened`` lost ``nickname``; ``Deposited`` is at version 2 (``account_id``
renamed ``account``, a ``currency`` with a default); ``Withdrawn`` is at version 2 with a
new required ``reason``; ``hist.Closed`` is now ``hist.AccountClosed`` with ``reason``
for ``why``. The upcasters are in ``history_upcasters`` (all but Withdrawn's) and
``history_fix`` (Withdrawn's), so a check can run with and without them.
"""

from __future__ import annotations

from decimal import Decimal

import eventador as ev


class Opened(ev.Event, event_type="hist.Opened"):
    account_id: str
    owner: str


class Deposited(ev.Event, event_type="hist.Deposited", version=2):
    account: str
    amount: Decimal
    currency: str = "EUR"


class Withdrawn(ev.Event, event_type="hist.Withdrawn", version=2):
    account_id: str
    amount: Decimal
    reason: str


class AccountClosed(ev.Event, event_type="hist.AccountClosed"):
    account_id: str
    reason: str
