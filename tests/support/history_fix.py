"""The upcaster that gives ``hist.Withdrawn`` version 1 the ``reason`` version 2 requires."""

from __future__ import annotations

import eventador as ev

ev.upcaster("hist.Withdrawn", 1, ev.Add("reason", "not recorded"))
