"""Live SQL views (store/live_views.py) beside other threads' SQL."""

from __future__ import annotations

import threading
import time

import eventador as ev
from tests.support.domain import deposited


def test_creating_views_while_another_thread_asks_sql_does_not_deadlock() -> None:
    # store.sql takes the store's SQL lock, then the live views' lock (to install them);
    # create_view must take them in the same order, or each thread waits for the other.
    store = ev.open_store()
    store.append("acc-1", [deposited(5)])
    until = time.monotonic() + 1.0
    failures: list[BaseException] = []

    def ask() -> None:
        try:
            while time.monotonic() < until:
                store.sql("SELECT count(*) FROM events")
        except BaseException as exc:
            failures.append(exc)

    def create() -> None:
        try:
            n = 0
            while time.monotonic() < until:
                store.create_view("recent", f"SELECT * FROM events WHERE position > {n}", replace=True)
                n += 1
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=ask, daemon=True), threading.Thread(target=create, daemon=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    stuck = [thread.name for thread in threads if thread.is_alive()]
    assert not stuck, f"deadlocked: {stuck}"  # (the store is left open: its locks are held)
    assert failures == []
    assert [view.name for view in store.views()] == ["recent"]
    store.close()
