"""Upcasters from ``history_v1``'s events to ``history_today``'s classes: a field renamed,
a field added, a type renamed. ``hist.Withdrawn`` version 1 has none: see ``history_fix``."""

from __future__ import annotations

import eventador as ev

ev.upcaster("hist.Deposited", 1, ev.Rename("account_id", "account"), ev.Add("currency", "EUR"))
ev.upcaster("hist.Closed", 1, ev.Rename("why", "reason"), to_type="hist.AccountClosed")
