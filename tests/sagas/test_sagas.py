"""Sagas and the coordinator: the happy path, compensation, timeouts, failures, restarts.

Deterministic: a ManualClock drives timeouts and retry backoffs, and
``coordinator.run_until_idle()`` delivers whatever is ready, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest

import eventador as ev
from eventador import (
    QueueManager,
    RetryPolicy,
    Saga,
    SagaCommandFailed,
    SagaCoordinator,
    SagaState,
    SagaStatus,
    SagaTimeout,
    list_sagas,
)
from eventador.sagas import COMMANDS_QUEUE, TIMEOUTS_QUEUE
from tests.support.aio import run as run_bounded
from tests.support.saga_domain import (
    ChargePayment,
    CreateOrder,
    OrderSaga,
    OrderSagaState,
    PaymentCharged,
    spawn_targets,
)

T = TypeVar("T")



def run(coro: Coroutine[Any, Any, T]) -> T:
    return run_bounded(coro, deadline=60)


class World:
    """A store, a queue manager, an actor system with the targets, and a coordinator."""

    def __init__(self, path: Path | None, clock: ev.ManualClock, *, max_attempts: int = 5) -> None:
        self.clock = clock
        self.store = ev.open_store(path, clock=clock)
        self.qm = QueueManager(self.store, retry_policy=RetryPolicy(max_attempts=max_attempts, jitter=False))
        self.system = ev.ActorSystem(clock=clock)
        self.coordinator = SagaCoordinator(self.qm, self.store, self.system)

    async def start(self, *, targets: bool = True) -> World:
        if targets:
            await spawn_targets(self.system, self.store)
        return self

    async def order(self, order_id: str, **options: Any) -> ev.ActorRef:
        saga = await self.system.spawn(order_id, self.saga_factory(order_id))
        await saga.ask(CreateOrder(order_id=order_id, amount=options.pop("amount", 10.0), **options))
        return saga

    def saga_factory(self, order_id: str) -> Callable[[], OrderSaga]:
        return lambda: OrderSaga(persistence_id=order_id, event_store=self.store, duraq_manager=self.qm)

    def statuses(self) -> dict[str, str]:
        frame = list_sagas(self.store)
        return dict(zip(frame["saga_id"], frame["status"], strict=True))

    def events(self, event_type: str) -> list[str]:
        return [
            r[0]
            for r in self.store.sql(
                f"SELECT stream_id FROM events WHERE event_type = {event_type!r} ORDER BY position"
            ).fetchall()
        ]

    def payload(self, view: str, column: str = "order_id") -> list[Any]:
        return [r[0] for r in self.store.sql(f'SELECT {column} FROM "{view}" ORDER BY position').fetchall()]

    async def close(self) -> None:
        await self.coordinator.stop()
        await self.system.shutdown()
        self.qm.close()
        self.store.close()


@pytest.fixture
def clock() -> ev.ManualClock:
    return ev.ManualClock(datetime(2026, 1, 1, tzinfo=UTC))


# -- the happy path --------------------------------------------------------------------------------------


def test_happy_path_completes_and_leaves_nothing_queued(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = await World(None, clock).start()
        saga = await world.order("o-1")
        assert await world.coordinator.run_until_idle() == 3  # charge, reserve, ship
        assert world.statuses() == {"o-1": "COMPLETED"}
        state = await saga.ask(_StateQuery())
        assert state.paid and state.reserved and state.shipped
        assert world.payload("test.PaymentCharged") == ["o-1"]
        assert world.qm.stats()["depth"].sum() == 0  # the payment timeout was cancelled
        await world.close()

    run(scenario())


class _StateQuery(ev.Event, event_type="test.sagas.StateQuery"):
    """Asked of a saga in these tests: handle_saga_event ignores it, the base answers nothing."""


@pytest.fixture(autouse=True)
def _answer_state_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Saga.on_message

    async def on_message(self: Saga[Any], message: Any) -> Any:
        if isinstance(message, _StateQuery):
            return self.saga_state
        return await original(self, message)

    monkeypatch.setattr(Saga, "on_message", on_message)


def test_saga_history_is_sql(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = await World(None, clock).start()
        await world.order("o-1")
        await world.coordinator.run_until_idle()
        statuses = world.store.sql(
            "SELECT status FROM SagaStateSaved WHERE stream_id = 'o-1' ORDER BY version"
        ).fetchall()
        assert [s for (s,) in statuses] == ["RUNNING", "RUNNING", "RUNNING", "COMPLETED"]
        sent = world.store.sql("SELECT target, command_type FROM SagaCommandSent ORDER BY position").fetchall()
        assert sent == [("payments", "ChargePayment"), ("inventory", "ReserveStock"), ("shipping", "ShipOrder")]
        state = world.store.sql(
            "SELECT state->>'order_id', (state->>'paid')::BOOLEAN FROM SagaStateSaved ORDER BY position DESC LIMIT 1"
        ).fetchall()
        assert state == [("o-1", True)]
        # The saga as it was after its first step, through time travel.
        first_charge = world.store.sql('SELECT position FROM "test.PaymentCharged"').fetchall()[0][0]
        past = list_sagas(world.store.as_of(first_charge))
        assert past["status"].tolist() == ["RUNNING"]
        await world.close()

    run(scenario())


def test_save_saga_state_stamps_last_updated_with_the_store_clock(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = await World(None, clock).start()
        saga = await world.order("o-1")
        assert (await saga.ask(_StateQuery())).last_updated == clock.now()
        clock.advance(seconds=30)
        await world.coordinator.run_until_idle()
        assert (await saga.ask(_StateQuery())).last_updated == clock.now()
        await world.close()

    run(scenario())


# -- failures and compensation -----------------------------------------------------------------------------


def test_a_failure_refunds_and_releases_in_reverse_order(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = await World(None, clock).start()
        await world.order("o-1", fail_at="shipping")
        await world.coordinator.run_until_idle()
        assert world.statuses() == {"o-1": "COMPENSATED"}
        order = world.store.sql(
            "SELECT event_type FROM events WHERE event_type IN ('test.StockReleased', 'test.PaymentRefunded') "
            "ORDER BY position"
        ).fetchall()
        assert order == [("test.StockReleased",), ("test.PaymentRefunded",)]  # the last step is undone first
        statuses = world.store.sql("SELECT status FROM SagaStateSaved ORDER BY position").fetchall()
        assert [s for (s,) in statuses][-3:] == ["FAILED", "COMPENSATING", "COMPENSATED"]
        assert world.payload("SagaCommandSent", "compensation").count(True) == 2
        await world.close()

    run(scenario())


def test_a_declined_payment_compensates_nothing(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = await World(None, clock).start()
        await world.order("o-1", fail_at="payment")
        await world.coordinator.run_until_idle()
        assert world.statuses() == {"o-1": "COMPENSATED"}
        assert world.payload("test.PaymentRefunded") == []
        await world.close()

    run(scenario())


def test_payment_timeout(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = await World(None, clock).start(targets=False)  # nobody takes payments
        await world.order("o-1", payment_timeout=60)
        await world.coordinator.run_until_idle()
        assert world.statuses() == {"o-1": "RUNNING"}
        clock.advance(seconds=59)
        await world.coordinator.run_until_idle()
        assert world.statuses() == {"o-1": "RUNNING"}
        clock.advance(seconds=1)
        await world.coordinator.run_until_idle()
        assert world.statuses() == {"o-1": "TIMED_OUT"}
        await world.close()

    run(scenario())


def test_an_unknown_target_is_retried_then_dead_lettered_and_the_saga_is_told(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = await World(None, clock).start(targets=False)
        seen: list[Any] = []

        class Watching(OrderSaga):
            async def handle_saga_event(self, event: ev.Event) -> None:
                seen.append(event)
                await super().handle_saga_event(event)

        world.coordinator.register(
            Watching, lambda sid: Watching(persistence_id=sid, event_store=world.store, duraq_manager=world.qm)
        )
        saga = await world.system.spawn(
            "o-1", lambda: Watching(persistence_id="o-1", event_store=world.store, duraq_manager=world.qm)
        )
        await saga.ask(CreateOrder(order_id="o-1", amount=5.0))
        deliveries = []
        for _ in range(6):
            deliveries.append(await world.coordinator.run_until_idle())
            clock.advance(seconds=30)
        dead = world.qm.dead_letters(COMMANDS_QUEUE)
        assert len(dead) == 1 and dead["attempts"][0] == 5
        assert "no actor named 'payments'" in dead["error"][0]
        failures = [e for e in seen if isinstance(e, SagaCommandFailed)]
        assert len(failures) == 1 and failures[0].target == "payments" and failures[0].attempts == 5
        assert failures[0].command_type == "ChargePayment"
        assert world.statuses() == {"o-1": "COMPENSATED"}
        await world.close()

    run(scenario())


class Poisoned(ev.Actor):
    """Raises on one order's payment, every time; charges the others."""

    async def on_message(self, message: Any) -> Any:
        if isinstance(message, ChargePayment) and message.order_id == "poison":
            raise RuntimeError("cannot process this one")
        if isinstance(message, ChargePayment):
            return PaymentCharged(order_id=message.order_id, amount=message.amount)
        return None


def test_a_poison_message_goes_to_the_dead_letters_and_the_rest_keeps_flowing(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = World(None, clock)
        await world.system.spawn("payments", Poisoned, supervisor=ev.Supervisor.resume())
        await spawn_targets_except_payments(world)
        await world.order("poison")
        for i in range(3):
            await world.order(f"o-{i}")
        for _ in range(6):
            await world.coordinator.run_until_idle()
            clock.advance(seconds=30)
        statuses = world.statuses()
        assert statuses.pop("poison") == "COMPENSATED"
        assert set(statuses.values()) == {"COMPLETED"}
        dead = world.qm.dead_letters(COMMANDS_QUEUE)
        assert len(dead) == 1 and "RuntimeError: cannot process this one" in dead["error"][0]
        await world.close()

    run(scenario())


async def spawn_targets_except_payments(world: World) -> None:
    from tests.support.saga_domain import Inventory, Shipping

    resume = ev.Supervisor.resume()
    await world.system.spawn("inventory", lambda: Inventory(event_store=world.store), supervisor=resume)
    await world.system.spawn("shipping", Shipping, supervisor=resume)


class Strict(ev.Actor):
    async def on_message(self, message: Any) -> Any:
        raise ev.CommandRejected("over the limit")


def test_a_rejected_command_fails_at_once_without_retries(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = World(None, clock)
        await world.system.spawn("payments", Strict, supervisor=ev.Supervisor.resume())
        await world.order("o-1")
        await world.coordinator.run_until_idle()
        assert world.statuses() == {"o-1": "COMPENSATED"}
        assert world.qm.dead_letters().empty
        state = world.store.sql("SELECT state->>'failure' FROM SagaStateSaved ORDER BY position DESC LIMIT 1")
        assert state.fetchall() == [("rejected: over the limit",)]
        await world.close()

    run(scenario())


# -- timers ------------------------------------------------------------------------------------------------


def test_a_cooling_off_timer_delays_shipping(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = await World(None, clock).start()
        await world.order("o-1", cooling_off=120)
        await world.coordinator.run_until_idle()
        assert world.statuses() == {"o-1": "RUNNING"}
        stats = world.qm.stats().set_index("queue")
        assert stats.loc[TIMEOUTS_QUEUE, "delayed"] == 1
        clock.advance(seconds=120)
        await world.coordinator.run_until_idle()
        assert world.statuses() == {"o-1": "COMPLETED"}
        await world.close()

    run(scenario())


class Rescheduling(Saga[SagaState]):
    """Schedules, reschedules and cancels timeouts on command; records which fired."""

    fired: ClassVar[list[str]] = []

    async def start_saga(self, command: Any) -> None:
        self.saga_state = SagaState()
        await self.save_saga_state()
        await self.schedule_timeout(10, "a")
        await self.schedule_timeout(20, "b")
        await self.schedule_timeout(30, "c")

    async def handle_saga_event(self, event: ev.Event) -> None:
        if isinstance(event, SagaTimeout):
            type(self).fired.append(event.timeout_id)
            if event.timeout_id == "a":
                await self.schedule_timeout(100, "b")  # b moves later
                await self.cancel_timeout("c")
            elif event.timeout_id == "b":
                self.saga_state = self.saga_state.copy_with(status=SagaStatus.COMPLETED)
                await self.save_saga_state()


class Go(ev.Command):
    pass


def test_timeouts_can_be_rescheduled_and_cancelled(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = World(None, clock)
        Rescheduling.fired = []
        saga = await world.system.spawn(
            "r-1", lambda: Rescheduling(persistence_id="r-1", event_store=world.store, queue_manager=world.qm)
        )
        await saga.ask(Go())
        for _ in range(12):
            clock.advance(seconds=10)
            await world.coordinator.run_until_idle()
        assert Rescheduling.fired == ["a", "b"]
        assert world.statuses() == {"r-1": "COMPLETED"}
        assert world.qm.stats()["depth"].sum() == 0
        await world.close()

    run(scenario())


def test_finishing_a_saga_cancels_its_pending_timeouts(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = await World(None, clock).start()
        await world.order("o-1", payment_timeout=3600)
        assert world.qm.stats().set_index("queue").loc[TIMEOUTS_QUEUE, "delayed"] == 1
        await world.coordinator.run_until_idle()
        assert TIMEOUTS_QUEUE not in set(world.qm.stats()["queue"])
        await world.close()

    run(scenario())


# -- crashes and restarts -------------------------------------------------------------------------------------


def test_sagas_and_timers_survive_a_restart(tmp_path: Path, clock: ev.ManualClock) -> None:
    async def first_life() -> None:
        world = await World(tmp_path / "s", clock).start(targets=False)
        await world.order("o-1", payment_timeout=600)
        await world.order("o-2", cooling_off=60)
        await world.close()

    async def second_life() -> None:
        world = await World(tmp_path / "s", clock).start()
        assert world.statuses() == {"o-1": "RUNNING", "o-2": "RUNNING"}
        assert await world.coordinator.recover() == 2
        assert world.system.lookup("o-1") is not None  # respawned
        await world.coordinator.run_until_idle()
        clock.advance(seconds=60)
        await world.coordinator.run_until_idle()
        assert world.statuses() == {"o-1": "COMPLETED", "o-2": "COMPLETED"}
        await world.close()

    run(first_life())
    run(second_life())


def test_a_timer_fires_after_a_restart(tmp_path: Path, clock: ev.ManualClock) -> None:
    async def first_life() -> None:
        world = await World(tmp_path / "s", clock).start(targets=False)
        await world.order("o-1", payment_timeout=600)
        await world.close()

    async def second_life() -> None:
        world = World(tmp_path / "s", clock)
        clock.advance(seconds=600)
        await world.coordinator.run_until_idle()
        assert world.statuses() == {"o-1": "TIMED_OUT"}
        await world.close()

    run(first_life())
    run(second_life())


def test_a_unit_stored_before_a_crash_is_enqueued_once_on_recovery(tmp_path: Path, clock: ev.ManualClock) -> None:
    """The saga's events were appended but its commands never reached the queue."""

    async def first_life() -> None:
        world = await World(tmp_path / "s", clock).start()
        saga = await world.system.spawn("o-1", world.saga_factory("o-1"))
        await saga.ask(CreateOrder(order_id="o-1", amount=1.0))
        await world.coordinator.run_until_idle()  # charged; the reserve command is queued

        async def lost(ops: Any) -> list[Any]:
            raise ev.QueueError("the process died here")

        world.qm.submit_async = lost  # type: ignore[method-assign]
        # The next unit (the reserve step's answer) is stored, its ship command is lost.
        with contextlib.suppress(ev.QueueError):
            await world.coordinator.run_until_idle()
        await world.system.shutdown()
        world.qm._engine.close()
        world.store.close()

    async def second_life() -> None:
        world = await World(tmp_path / "s", clock).start()
        await world.coordinator.recover()  # o-1 re-enqueues its last unit's command
        await world.coordinator.recover()  # and again: the dedupe key makes it a no-op
        await world.coordinator.run_until_idle()
        assert world.statuses() == {"o-1": "COMPLETED"}
        assert world.payload("SagaCommandSent", "command_type").count("ShipOrder") == 1
        assert world.payload("SagaStepCompleted", "event_type_name").count("test.OrderShipped") == 1
        await world.close()

    run(first_life())
    run(second_life())


def test_a_redelivered_answer_is_not_handled_twice(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = await World(None, clock).start()
        await world.order("o-1")
        lease = world.qm.dequeue(COMMANDS_QUEUE, visibility_timeout=5)
        assert lease is not None
        # Deliver it, but "crash" before the ack: put the lease back by letting it expire.
        command = lease.message
        world.qm.nack(lease, "simulated crash after the saga handled it", delay=0)
        await world.coordinator.run_until_idle()
        assert command["target"] == "payments"
        assert world.statuses() == {"o-1": "COMPLETED"}
        before = len(world.events("SagaStepCompleted"))
        # The same answer once more (as after a crash before the ack): skipped.
        from eventador.sagas.records import Delivery

        saga = world.system.lookup("o-1")
        assert saga is not None
        again = Delivery("reply", f"c{lease.id}", (PaymentCharged(order_id="o-1", amount=10.0),), "payments")
        assert await saga.ask(again) == "duplicate"
        assert len(world.events("SagaStepCompleted")) == before
        await world.close()

    run(scenario())


# -- the API ------------------------------------------------------------------------------------------------


def test_saga_needs_a_queue_manager(clock: ev.ManualClock) -> None:
    store = ev.open_store(clock=clock)
    with pytest.raises(ev.InvalidInputError, match="duraq_manager"):
        OrderSaga(persistence_id="x", event_store=store)
    with QueueManager(store) as qm:
        saga = OrderSaga(persistence_id="x", event_store=store, queue_manager=qm)
        assert saga.duraq_manager is qm and saga.queue_manager is qm
        assert not saga.has_saga_state
        with pytest.raises(AttributeError, match="no saga state yet"):
            _ = saga.saga_state
        assert "not started" in repr(saga)
        assert "<table>" in saga._repr_html_()
    store.close()


def test_saga_state_copy_with_and_status() -> None:
    state = OrderSagaState(order_id="o")
    done = state.copy_with(status=SagaStatus.COMPLETED)
    assert state.status is SagaStatus.RUNNING and done.status is SagaStatus.COMPLETED
    assert [s.value for s in SagaStatus] == [
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "COMPENSATING",
        "COMPENSATED",
        "TIMED_OUT",
    ]
    assert SagaStatus.COMPENSATING.is_active and not SagaStatus.TIMED_OUT.is_active


def test_list_sagas_filters_by_status(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = await World(None, clock).start()
        await world.order("ok")
        await world.order("bad", fail_at="payment")
        await world.order("waiting", cooling_off=99)
        await world.coordinator.run_until_idle()
        assert list_sagas(world.store, status="completed")["saga_id"].tolist() == ["ok"]
        assert list_sagas(world.store, status=[SagaStatus.COMPENSATED, "RUNNING"])["saga_id"].tolist() == [
            "bad",
            "waiting",
        ]
        assert list_sagas(world.store, active=True)["saga_id"].tolist() == ["waiting"]
        assert world.coordinator.sagas(SagaStatus.COMPLETED)["saga_id"].tolist() == ["ok"]
        with pytest.raises(ev.InvalidInputError, match="unknown saga status"):
            list_sagas(world.store, status="DONE")
        assert "SagaCoordinator" in world.coordinator._repr_html_()
        await world.close()

    run(scenario())


def test_the_coordinator_loops_deliver_until_stopped(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = await World(None, clock).start()
        world.coordinator.poll_interval = 0.01
        loops = [
            asyncio.create_task(world.coordinator.process_saga_commands()),
            asyncio.create_task(world.coordinator.process_saga_timeouts()),
        ]
        for i in range(5):
            await world.order(f"o-{i}", cooling_off=5 if i == 0 else 0)
        await _until(lambda: sum(s == "COMPLETED" for s in world.statuses().values()) == 4)
        clock.advance(seconds=5)
        await _until(lambda: set(world.statuses().values()) == {"COMPLETED"})
        await world.coordinator.stop()
        await asyncio.wait_for(asyncio.gather(*loops), 10)
        await world.close()

    run(scenario())


async def _until(condition: Callable[[], bool], deadline: float = 20.0) -> None:
    """Polls `condition` until it holds; fails after `deadline` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        if loop.time() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def test_a_duplicate_start_is_ignored(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = await World(None, clock).start()
        saga = await world.order("o-1")
        await saga.ask(CreateOrder(order_id="o-1", amount=99.0))
        await world.coordinator.run_until_idle()
        assert world.payload("test.PaymentCharged", "amount") == [10.0]
        assert world.system.dead_letters[-1].reason == "unhandled"
        await world.close()

    run(scenario())


def test_timeouts_are_validated(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = World(None, clock)
        saga = Rescheduling(persistence_id="v", event_store=world.store, duraq_manager=world.qm)
        with pytest.raises(ev.InvalidInputError):
            await saga.schedule_timeout(-1, "x")
        with pytest.raises(ev.InvalidInputError):
            await saga.schedule_timeout(timedelta(seconds=1), "")
        assert await saga.cancel_timeout("never") is False
        await world.close()

    run(scenario())


class Tidy(OrderSaga):
    stop_when_finished = True


def test_a_saga_that_stops_when_finished_is_respawned_for_a_late_message(clock: ev.ManualClock) -> None:
    async def scenario() -> None:
        world = await World(None, clock).start()
        world.coordinator.register(
            Tidy, lambda sid: Tidy(persistence_id=sid, event_store=world.store, duraq_manager=world.qm)
        )
        saga = await world.system.spawn(
            "o-1", lambda: Tidy(persistence_id="o-1", event_store=world.store, duraq_manager=world.qm)
        )
        await saga.ask(CreateOrder(order_id="o-1", amount=3.0))
        await world.coordinator.run_until_idle()
        assert world.statuses() == {"o-1": "COMPLETED"}
        await _until(lambda: world.system.lookup("o-1") is None)
        # A late answer (say, a redelivered one) respawns it from its events; it is ignored.
        from eventador.sagas.records import Delivery

        late = (PaymentCharged(order_id="o-1", amount=3.0),)
        ref = await world.coordinator._saga_ref("o-1", "tests.sagas.test_sagas:Tidy")
        assert await ref.ask(Delivery("reply", "c999999", late, "payments")) == "acked"
        assert world.statuses() == {"o-1": "COMPLETED"}
        await world.close()

    run(scenario())
