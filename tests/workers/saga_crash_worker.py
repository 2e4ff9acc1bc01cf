"""The process the saga crash test kills: it runs order sagas on a store on disk until all finish.

Each life opens the store, spawns the targets, starts the coordinator (which first
recovers the sagas a killed predecessor left running) and starts the orders that
do not exist yet -- at most `batch` of them per life, so that every life has fresh
work for a kill to interrupt. ``ready`` is set once the store is open; ``done``
once every order this life knows of has finished and the queues are empty
(redeliveries of what a killed life left unacked included).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from multiprocessing.synchronize import Event as ProcessEvent

import eventador as ev
from eventador import QueueManager, RetryPolicy, SagaCoordinator, list_sagas
from tests.support.saga_domain import CreateOrder, OrderSaga, spawn_targets


def order_options(i: int) -> dict[str, object]:
    """What order i does: a fifth fail at shipping, a fifth are declined, a fifth wait on a timer."""
    kind = i % 5
    if kind == 1:
        return {"fail_at": "shipping"}
    if kind == 2:
        return {"fail_at": "payment"}
    if kind == 3:
        return {"cooling_off": 0.3}
    return {}


def order_ids(n: int) -> list[str]:
    return [f"order-{i:03d}" for i in range(n)]


def main(path: str, orders: int, batch: int, ready: ProcessEvent, done: ProcessEvent) -> None:
    asyncio.run(_life(path, orders, batch, ready, done))


async def _life(path: str, orders: int, batch: int, ready: ProcessEvent, done: ProcessEvent) -> None:
    store = ev.open_store(path)
    ready.set()
    policy = RetryPolicy(max_attempts=10, initial_delay=0.05, max_delay=0.2)
    qm = QueueManager(store, retry_policy=policy)
    system = ev.ActorSystem()
    await spawn_targets(system, store)
    coordinator = SagaCoordinator(qm, store, system, poll_interval=0.02, visibility_timeout=10.0)
    loops = [
        asyncio.create_task(coordinator.process_saga_commands()),
        asyncio.create_task(coordinator.process_saga_timeouts()),
    ]
    ids = order_ids(orders)
    known = sum(1 for order_id in ids if store.stream_version(order_id) > 0)
    wanted = min(orders, known + batch)
    for i, order_id in enumerate(ids[:wanted]):
        if store.stream_version(order_id) > 0:
            continue
        saga = await system.spawn(order_id, _factory(order_id, store, qm))
        await saga.ask(CreateOrder(order_id=order_id, amount=float(10 + i), **order_options(i)))  # type: ignore[arg-type]
    while not _settled(store, qm, wanted):
        await asyncio.sleep(0.1)
    done.set()
    await coordinator.stop()
    await asyncio.gather(*loops)
    await system.shutdown()
    qm.close()
    store.close()


def _factory(order_id: str, store: ev.EventStore, qm: QueueManager) -> Callable[[], OrderSaga]:
    return lambda: OrderSaga(persistence_id=order_id, event_store=store, duraq_manager=qm)


def _settled(store: ev.EventStore, qm: QueueManager, wanted: int) -> bool:
    """Every saga this life started has finished, and the queues hold nothing more to deliver."""
    if len(list_sagas(store, active=True)) or len(list_sagas(store)) < wanted:
        return False
    stats = qm.stats()
    return bool(stats["depth"].sum() == 0 and stats["in_flight"].sum() == 0)
