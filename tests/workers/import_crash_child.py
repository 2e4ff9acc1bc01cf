"""The importer that tests/io/test_importing.py kills: appends a few events, then imports a log.

    python tests/workers/import_crash_child.py DIR CASES STALL_POINT:N

The log has CASES cases of 3 events each (see ``log``). With STALL_POINT:N the
child stops the N-th time the store reaches that point (see tests/workers/crash_child.py)
and waits to be killed; without reaching it, the import finishes and the child
prints ``DONE``.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd

import eventador as ev
from tests.support.domain import Deposited
from tests.workers.crash_child import Staller, install


def log(cases: int) -> pd.DataFrame:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        {"case": f"case-{c}", "activity": activity, "at": start + timedelta(minutes=c * 3 + i), "who": f"r{c % 7}"}
        for c in range(cases)
        for i, activity in enumerate(("opened", "checked", "closed"))
    ]
    return pd.DataFrame(rows)


def main() -> None:
    directory, cases, spec = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    store = ev.open_store(directory, durability="fsync")
    store.append("before", [Deposited(account_id="before", amount=Decimal(1))])  # in the hot tier and the WAL
    install(Staller(spec))
    print("READY", flush=True)
    store.import_dataframe(log(cases), stream_id="case", event_type="activity", occurred_at="at")
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
