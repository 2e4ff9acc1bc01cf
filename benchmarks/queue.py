"""The durable queue and sagas: throughput beside plain SQLite and persist-queue, in one run.

``run(quick)`` returns one dict per measurement: name, value (the median), unit, budget
(in words), passed (None when quick: quick mode judges nothing, or for rows that are
references, not budgets), and details (min, max, sizes). Runnable alone::

    python -m benchmarks.queue [--quick]

Scenarios, all on disk in a fresh temporary directory per repetition:

1. eventador ``QueueManager``: one producer thread ``enqueue_many`` in batches of 500,
   one consumer thread ``dequeue_many`` (500) + ``ack_many``; messages/s from the first
   enqueue to the last ack. DuckDB commits with its WAL fsynced. Budget: >= 5,000/s.
2. A plain SQLite table queue, the usual hand-rolled one: WAL, ``synchronous=FULL``,
   one transaction per operation (INSERT; claim with UPDATE ... RETURNING; DELETE).
3. ``persist-queue``'s ``SQLiteAckQueue`` (its defaults: WAL, one commit per put,
   get and ack), when the package is installed; otherwise the row says why not.
4. Sagas end to end: three-step order sagas (start, then three commands to three
   actors, each answered with an event, then COMPLETED), store with
   ``durability="fsync"``, the coordinator's loops delivering; sagas/s from the first
   start to the last completion. Budget: >= 500/s.

Rows 2 and 3 are references for row 1 (same messages, same disk, same run).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import eventador as ev
from eventador.queue.manager import QueueManager
from eventador.sagas import Saga, SagaCoordinator, SagaState, SagaStatus

PAYLOAD = {"order_id": "order-000000", "amount": 12.5, "note": "x" * 40}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _result(
    name: str,
    values: list[float],
    unit: str,
    budget: str,
    ok: Callable[[float], bool] | None,
    quick: bool,
    **details: Any,
) -> dict[str, Any]:
    median = statistics.median(values)
    log(f"  {name}: median {median:,.0f} {unit} (min {min(values):,.0f}, max {max(values):,.0f})")
    return {
        "name": name,
        "value": median,
        "unit": unit,
        "budget": budget,
        "passed": None if quick or ok is None else ok(median),
        "details": {"min": min(values), "max": max(values), "reps": len(values), **details},
    }


@contextmanager
def _tempdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="eventador-queue-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- 1. eventador's queue ------------------------------------------------------------------------------


def eventador_queue(n: int, batch: int) -> float:
    """Messages per second through enqueue_many -> dequeue_many -> ack_many, producer and consumer threads."""
    with _tempdir() as path, ev.open_store(path / "store") as store, QueueManager(store) as qm:
        messages = [dict(PAYLOAD, seq=i) for i in range(n)]
        done = threading.Event()
        acked = 0

        def consume() -> None:
            nonlocal acked
            while acked < n:
                leases = qm.dequeue_many("bench", batch, visibility_timeout=60)
                if not leases:
                    time.sleep(0.0005)  # the producer is behind: yield the GIL
                    continue
                acked += qm.ack_many(leases)
            done.set()

        started = time.perf_counter()
        consumer = threading.Thread(target=consume)
        consumer.start()
        for i in range(0, n, batch):
            qm.enqueue_many("bench", messages[i : i + batch])
        consumer.join()
        elapsed = time.perf_counter() - started
        assert acked == n and qm.stats()["depth"].sum() == 0
    return n / elapsed


# -- 2. a plain SQLite table queue ---------------------------------------------------------------------------


def sqlite_queue(n: int) -> float:
    """Messages per second, one transaction per enqueue, claim and delete (WAL, synchronous=FULL)."""
    import json

    with _tempdir() as path:
        con = sqlite3.connect(path / "queue.db", isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute(
            "CREATE TABLE queue (id INTEGER PRIMARY KEY, body BLOB NOT NULL, visible_at REAL NOT NULL, "
            "attempts INTEGER NOT NULL DEFAULT 0)"
        )
        started = time.perf_counter()
        for i in range(n):
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT INTO queue (body, visible_at) VALUES (?, 0)", [json.dumps(dict(PAYLOAD, seq=i))])
            con.execute("COMMIT")
        for _ in range(n):
            con.execute("BEGIN IMMEDIATE")
            row = con.execute(
                "UPDATE queue SET visible_at = ?, attempts = attempts + 1 WHERE id = "
                "(SELECT id FROM queue WHERE visible_at <= ? ORDER BY id LIMIT 1) RETURNING id, body",
                [time.time() + 60, time.time()],
            ).fetchone()
            con.execute("COMMIT")
            assert row is not None
            json.loads(row[1])
            con.execute("BEGIN IMMEDIATE")
            con.execute("DELETE FROM queue WHERE id = ?", [row[0]])
            con.execute("COMMIT")
        elapsed = time.perf_counter() - started
        con.close()
    return n / elapsed


# -- 3. persist-queue -----------------------------------------------------------------------------------------


def persist_queue(n: int) -> float | str:
    """Messages per second through persist-queue's SQLiteAckQueue put/get/ack, or why it cannot run."""
    try:
        from persistqueue import SQLiteAckQueue
    except ImportError as exc:
        return f"persist-queue is not installed ({exc})"
    with _tempdir() as path:
        q = SQLiteAckQueue(str(path / "pq"), auto_commit=True, multithreading=False)
        started = time.perf_counter()
        for i in range(n):
            q.put(dict(PAYLOAD, seq=i))
        for _ in range(n):
            item = q.get(block=False)
            q.ack(item)
        elapsed = time.perf_counter() - started
        q.close() if hasattr(q, "close") else None
    return n / elapsed


# -- 4. sagas ------------------------------------------------------------------------------------------------------


class BStart(ev.Command):
    order_id: str


class BStep(ev.Command):
    order_id: str
    step: int


class BStepDone(ev.Event, event_type="bench.queue.StepDone"):
    order_id: str
    step: int


class BState(SagaState):
    order_id: str = ""
    step: int = 0


class ThreeSteps(Saga[BState]):
    """Start, then steps 1, 2 and 3 at three different actors, then COMPLETED."""

    stop_when_finished = True
    finished: Callable[[], None] = staticmethod(lambda: None)

    async def start_saga(self, command: Any) -> None:
        self.saga_state = BState(order_id=command.order_id)
        await self.save_saga_state()
        await self.send_command("step-1", BStep(order_id=command.order_id, step=1))

    async def handle_saga_event(self, event: ev.Event) -> None:
        if not isinstance(event, BStepDone) or event.step != self.saga_state.step + 1:
            return
        if event.step < 3:
            self.saga_state = self.saga_state.copy_with(step=event.step)
            await self.save_saga_state()
            await self.send_command(f"step-{event.step + 1}", BStep(order_id=event.order_id, step=event.step + 1))
        else:
            self.saga_state = self.saga_state.copy_with(step=3, status=SagaStatus.COMPLETED)
            await self.save_saga_state()
            type(self).finished()


class StepActor(ev.Actor):
    async def on_message(self, message: Any) -> Any:
        return BStepDone(order_id=message.order_id, step=message.step)


async def _sagas(n: int, path: Path) -> float:
    store = ev.open_store(path / "store", durability="fsync")
    qm = QueueManager(store)
    system = ev.ActorSystem()
    all_done = asyncio.Event()
    completed = 0

    def finished() -> None:
        nonlocal completed
        completed += 1
        if completed == n:
            all_done.set()

    ThreeSteps.finished = staticmethod(finished)
    for k in (1, 2, 3):
        await system.spawn(f"step-{k}", StepActor)
    coordinator = SagaCoordinator(qm, store, system)  # its defaults
    await coordinator.recover()  # at startup, once (its first SQL query sets up the store's views)
    loops = [asyncio.create_task(coordinator.process_saga_commands())]
    started = time.perf_counter()

    async def start(i: int) -> None:
        order_id = f"order-{i:06d}"
        saga = await system.spawn(
            order_id, lambda: ThreeSteps(persistence_id=order_id, event_store=store, duraq_manager=qm)
        )
        await saga.ask(BStart(order_id=order_id), timeout=60)

    await asyncio.gather(*(start(i) for i in range(n)))
    await asyncio.wait_for(all_done.wait(), timeout=600)
    elapsed = time.perf_counter() - started
    await coordinator.stop()
    await asyncio.gather(*loops)
    await system.shutdown()
    qm.close()
    store.close()
    return n / elapsed


def sagas(n: int) -> float:
    with _tempdir() as path:
        return asyncio.run(_sagas(n, path))


# -- the run ---------------------------------------------------------------------------------------------------


def run(quick: bool) -> list[dict[str, Any]]:
    """Every queue and saga benchmark; quick: small sizes, nothing judged (passed is None)."""
    reps = 3 if quick else 5
    n_queue = 5_000 if quick else 100_000
    n_sqlite = 300 if quick else 2_000
    n_sagas = 200 if quick else 3_000
    out: list[dict[str, Any]] = []

    log(f"== queue: eventador QueueManager, {n_queue:,} messages, batches of 500")
    values = [eventador_queue(n_queue, 500) for _ in range(reps)]
    out.append(
        _result(
            f"eventador queue: enqueue -> dequeue -> ack, batches of 500, 1 consumer ({n_queue:,} msgs)",
            values,
            "messages/s",
            ">= 5,000 messages/s",
            lambda v: v >= 5_000,
            quick,
            messages=n_queue,
        )
    )

    log(f"== queue: plain SQLite table queue, {n_sqlite:,} messages, one transaction per operation")
    values = [sqlite_queue(n_sqlite) for _ in range(reps)]
    out.append(
        _result(
            f"plain SQLite queue (WAL, synchronous=FULL, 1 transaction per op; {n_sqlite:,} msgs)",
            values,
            "messages/s",
            "reference",
            None,
            quick,
            messages=n_sqlite,
        )
    )

    log(f"== queue: persist-queue SQLiteAckQueue, {n_sqlite:,} messages")
    measured = [persist_queue(n_sqlite) for _ in range(reps)]
    if all(isinstance(v, float) for v in measured):
        out.append(
            _result(
                f"persist-queue SQLiteAckQueue put/get/ack (its defaults; {n_sqlite:,} msgs)",
                [float(v) for v in measured],
                "messages/s",
                "reference",
                None,
                quick,
                messages=n_sqlite,
            )
        )
    else:
        reason = next(str(v) for v in measured if not isinstance(v, float))
        log(f"  persist-queue: skipped: {reason}")
        out.append(
            {
                "name": "persist-queue SQLiteAckQueue",
                "value": None,
                "unit": "messages/s",
                "budget": "reference",
                "passed": None,
                "details": {"skipped": reason},
            }
        )

    log(f"== sagas: {n_sagas:,} three-step sagas end to end, on disk, fsync")
    values = [sagas(n_sagas) for _ in range(reps)]
    out.append(
        _result(
            f"three-step sagas end to end, fsync, on disk ({n_sagas:,} sagas)",
            values,
            "sagas/s",
            ">= 500 sagas/s",
            lambda v: v >= 500,
            quick,
            sagas=n_sagas,
        )
    )
    return out


if __name__ == "__main__":
    import json

    results = run("--quick" in sys.argv)
    print(json.dumps(results, indent=1, default=str))
