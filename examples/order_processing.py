"""Order processing with a saga: the Dart README's example, in Python.

Three orders go through an ``OrderSaga``:

* ``order_123`` is paid and shipped: COMPLETED;
* ``order_456`` is paid, but shipping fails: the payment is refunded, COMPENSATED;
* ``order_789``'s payment is never confirmed: after five minutes the saga times out.

The payment processor is a persistent actor (its ledger is an event stream), the
shipping processor a plain actor. Commands travel through the durable queue; the
``SagaCoordinator`` delivers them. A ``ManualClock`` makes the five minutes pass at
once. Run it::

    python examples/order_processing.py
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import eventador as ev
from eventador.aggregates.persistent import PersistentActor
from eventador.queue.manager import QueueManager
from eventador.sagas import Saga, SagaCoordinator, SagaState, SagaStatus, SagaTimeout, list_sagas

# -- commands and events (the seed's) -----------------------------------------------------------------


class CreateOrderCommand(ev.Command):
    order_id: str
    customer_id: str
    amount: float
    address: str = "123 Main St"


class ProcessPaymentCommand(ev.Command):
    order_id: str
    customer_id: str
    amount: float


class ShipOrderCommand(ev.Command):
    order_id: str
    address: str


class RefundPaymentCommand(ev.Command):
    order_id: str
    amount: float


class PaymentProcessedEvent(ev.Event):
    order_id: str
    transaction_id: str


class PaymentRefundedEvent(ev.Event):
    order_id: str
    amount: float


class OrderShippedEvent(ev.Event):
    order_id: str
    tracking_number: str


class OrderFailedEvent(ev.Event):
    order_id: str
    reason: str


# -- the workers ------------------------------------------------------------------------------------------


class PaymentProcessor(PersistentActor):
    """Charges and refunds, each at most once per order (commands may be delivered twice)."""

    def __init__(self, *, event_store: ev.EventStore) -> None:
        super().__init__(persistence_id="payment_processor", event_store=event_store)
        self.transactions: dict[str, str] = {}
        self.refunded: set[str] = set()

    async def command_handler(self, command: Any) -> Any:
        if isinstance(command, ProcessPaymentCommand):
            if command.customer_id == "customer_slow_bank":
                return None  # the bank never confirms: no answer for the saga
            if command.order_id not in self.transactions:
                transaction = f"tx-{len(self.transactions) + 1:04d}"
                await self.persist_event(PaymentProcessedEvent(order_id=command.order_id, transaction_id=transaction))
            return PaymentProcessedEvent(order_id=command.order_id, transaction_id=self.transactions[command.order_id])
        if isinstance(command, RefundPaymentCommand):
            if command.order_id not in self.refunded:
                await self.persist_event(PaymentRefundedEvent(order_id=command.order_id, amount=command.amount))
            return PaymentRefundedEvent(order_id=command.order_id, amount=command.amount)
        self.unhandled(command)
        return None

    def event_handler(self, event: ev.Event) -> None:
        if isinstance(event, PaymentProcessedEvent):
            self.transactions[event.order_id] = event.transaction_id
        elif isinstance(event, PaymentRefundedEvent):
            self.refunded.add(event.order_id)


class ShippingProcessor(ev.Actor):
    async def on_message(self, message: Any) -> Any:
        if isinstance(message, ShipOrderCommand):
            if message.address == "nowhere":
                return OrderFailedEvent(order_id=message.order_id, reason="address unknown")
            return OrderShippedEvent(order_id=message.order_id, tracking_number=f"TRK-{message.order_id}")
        self.unhandled(message)
        return None


# -- the saga ----------------------------------------------------------------------------------------------


class OrderSagaState(SagaState):
    order_id: str
    customer_id: str
    amount: float
    address: str
    payment_processed: bool = False
    order_shipped: bool = False


class OrderSaga(Saga[OrderSagaState]):
    async def start_saga(self, command: Any) -> None:
        assert isinstance(command, CreateOrderCommand)
        self.saga_state = OrderSagaState(
            order_id=command.order_id,
            customer_id=command.customer_id,
            amount=command.amount,
            address=command.address,
            status=SagaStatus.RUNNING,
        )
        await self.save_saga_state()
        payment = ProcessPaymentCommand(
            order_id=command.order_id, customer_id=command.customer_id, amount=command.amount
        )
        await self.send_command("payment_processor", payment)
        await self.schedule_payment_timeout()

    async def handle_saga_event(self, event: ev.Event) -> None:
        state = self.saga_state
        if isinstance(event, PaymentProcessedEvent) and not self.is_finished:
            self.saga_state = state.copy_with(payment_processed=True)
            await self.save_saga_state()
            await self.cancel_timeout(f"payment-timeout-{state.order_id}")
            await self.send_command(
                "shipping_processor", ShipOrderCommand(order_id=state.order_id, address=state.address)
            )
        elif isinstance(event, OrderShippedEvent):
            self.saga_state = state.copy_with(order_shipped=True, status=SagaStatus.COMPLETED)
            await self.save_saga_state()
            print(f"Order {state.order_id} completed successfully!")
        elif isinstance(event, OrderFailedEvent):
            self.saga_state = state.copy_with(status=SagaStatus.FAILED)
            await self.save_saga_state()
            print(f"Order {state.order_id} failed ({event.reason}): compensating")
            await self.compensate(self.completed_steps)  # refunds the payment; then COMPENSATED
        elif isinstance(event, SagaTimeout):
            self.saga_state = state.copy_with(status=SagaStatus.TIMED_OUT)
            await self.save_saga_state()
            print(f"Order {state.order_id}: no payment confirmation after 5 minutes")

    def compensation_for(self, event: ev.Event) -> tuple[str, ev.Command] | None:
        if isinstance(event, PaymentProcessedEvent):
            return "payment_processor", RefundPaymentCommand(order_id=event.order_id, amount=self.saga_state.amount)
        return None

    async def schedule_payment_timeout(self) -> None:
        await self.schedule_timeout(timedelta(minutes=5), f"payment-timeout-{self.saga_state.order_id}")


# -- running it -----------------------------------------------------------------------------------------------


async def main(directory: str) -> None:
    clock = ev.ManualClock(datetime(2026, 1, 1, 9, 0, tzinfo=UTC))
    store = ev.open_store(directory, clock=clock)
    duraq_manager = QueueManager(store)
    actor_system = ev.LocalActorSystem(clock=clock)

    # The SagaCoordinator is a background processor, not an actor.
    saga_coordinator = SagaCoordinator(duraq_manager, store, actor_system)

    await actor_system.spawn("payment_processor", lambda: PaymentProcessor(event_store=store))
    await actor_system.spawn("shipping_processor", ShippingProcessor)

    orders = [
        CreateOrderCommand(order_id="order_123", customer_id="customer_456", amount=99.99),
        CreateOrderCommand(order_id="order_456", customer_id="customer_789", amount=25.00, address="nowhere"),
        CreateOrderCommand(order_id="order_789", customer_id="customer_slow_bank", amount=42.00),
    ]

    def order_saga(order_id: str) -> Callable[[], OrderSaga]:
        return lambda: OrderSaga(persistence_id=order_id, event_store=store, duraq_manager=duraq_manager)

    for command in orders:
        order_id = command.order_id
        saga = await actor_system.spawn(order_id, order_saga(order_id))  # sagas live under their id
        print(f"Starting saga for order {order_id}...")
        await saga.ask(command)  # tell() would do; ask() returns once the saga has started

    # Deliver everything that is ready; in a service, run process_saga_commands() and
    # process_saga_timeouts() as background tasks instead.
    await saga_coordinator.run_until_idle()

    print("\nFive minutes later...")
    clock.advance(timedelta(minutes=5))
    await saga_coordinator.run_until_idle()

    print("\nSagas:")
    print(list_sagas(store)[["saga_id", "status", "updated_at"]].to_string(index=False))
    print("\nThe payment ledger:")
    ledger = """
        SELECT 'charged' AS entry, order_id, transaction_id, NULL AS amount, position FROM PaymentProcessedEvent
        UNION ALL
        SELECT 'refunded', order_id, NULL, amount, position FROM PaymentRefundedEvent
        ORDER BY position
    """
    print(store.sql(ledger).df().drop(columns="position").astype(object).fillna("").to_string(index=False))
    print("\nThe history of order_456:")
    print(
        store.sql(
            "SELECT e.version, e.event_type, s.status FROM events e LEFT JOIN SagaStateSaved s USING (position) "
            "WHERE e.stream_id = 'order_456' ORDER BY e.version"
        )
        .df()
        .astype(object)
        .fillna("")
        .to_string(index=False)
    )

    print("\nShutting down...")
    await saga_coordinator.stop()
    await actor_system.shutdown()
    duraq_manager.close()
    store.close()
    print("Example finished.")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="eventador-orders-") as directory:
        asyncio.run(main(directory))
