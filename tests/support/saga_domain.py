"""An order-processing domain for the saga tests and the crash worker.

Three targets: ``payments`` and ``inventory`` (persistent actors, idempotent by order
id, so a redelivered command never charges or reserves twice) and ``shipping`` (a
plain actor). ``OrderSaga`` charges, reserves, optionally waits on a timer, ships;
a failure compensates the completed steps in reverse order.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import eventador as ev
from eventador import PersistentActor, Saga, SagaCommandFailed, SagaState, SagaStatus, SagaTimeout

# -- commands ------------------------------------------------------------------------------------------


class CreateOrder(ev.Command):
    order_id: str
    amount: float
    fail_at: str = ""  # "payment", "shipping" or "" (none)
    cooling_off: float = 0.0  # seconds to wait on a durable timer before shipping
    payment_timeout: float = 300.0


class ChargePayment(ev.Command):
    order_id: str
    amount: float
    decline: bool = False


class RefundPayment(ev.Command):
    order_id: str
    amount: float


class ReserveStock(ev.Command):
    order_id: str
    sku: str
    quantity: int


class ReleaseStock(ev.Command):
    order_id: str
    sku: str
    quantity: int


class ShipOrder(ev.Command):
    order_id: str
    fail: bool = False


# -- events --------------------------------------------------------------------------------------------


class PaymentCharged(ev.Event, event_type="test.PaymentCharged"):
    order_id: str
    amount: float


class PaymentRefunded(ev.Event, event_type="test.PaymentRefunded"):
    order_id: str
    amount: float


class PaymentDeclined(ev.Event, event_type="test.PaymentDeclined"):
    order_id: str
    reason: str


class StockReserved(ev.Event, event_type="test.StockReserved"):
    order_id: str
    sku: str
    quantity: int


class StockReleased(ev.Event, event_type="test.StockReleased"):
    order_id: str
    sku: str
    quantity: int


class OrderShipped(ev.Event, event_type="test.OrderShipped"):
    order_id: str
    tracking: str


class ShippingFailed(ev.Event, event_type="test.ShippingFailed"):
    order_id: str
    reason: str


# -- targets -------------------------------------------------------------------------------------------


class Payments(PersistentActor):
    """The payment ledger: one charge and at most one refund per order, however often asked."""

    def __init__(self, *, persistence_id: str = "payments", event_store: ev.EventStore) -> None:
        super().__init__(persistence_id=persistence_id, event_store=event_store)
        self.charged: dict[str, float] = {}
        self.refunded: set[str] = set()

    async def command_handler(self, command: Any) -> Any:
        if isinstance(command, ChargePayment):
            if command.decline:
                return PaymentDeclined(order_id=command.order_id, reason="card declined")
            if command.order_id not in self.charged and command.order_id not in self.refunded:
                await self.persist_event(PaymentCharged(order_id=command.order_id, amount=command.amount))
            return PaymentCharged(order_id=command.order_id, amount=self.charged.get(command.order_id, 0.0))
        if isinstance(command, RefundPayment):
            if command.order_id not in self.refunded:
                await self.persist_event(PaymentRefunded(order_id=command.order_id, amount=command.amount))
            return PaymentRefunded(order_id=command.order_id, amount=command.amount)
        self.unhandled(command)
        return None

    def event_handler(self, event: ev.Event) -> None:
        if isinstance(event, PaymentCharged):
            self.charged[event.order_id] = event.amount
        elif isinstance(event, PaymentRefunded):
            self.refunded.add(event.order_id)


class Inventory(PersistentActor):
    """Stock reservations, one per order; releasing twice releases once."""

    def __init__(self, *, persistence_id: str = "inventory", event_store: ev.EventStore) -> None:
        super().__init__(persistence_id=persistence_id, event_store=event_store)
        self.reserved: set[str] = set()
        self.released: set[str] = set()

    async def command_handler(self, command: Any) -> Any:
        if isinstance(command, ReserveStock):
            if command.order_id not in self.reserved:
                await self.persist_event(
                    StockReserved(order_id=command.order_id, sku=command.sku, quantity=command.quantity)
                )
            return StockReserved(order_id=command.order_id, sku=command.sku, quantity=command.quantity)
        if isinstance(command, ReleaseStock):
            if command.order_id not in self.released:
                await self.persist_event(
                    StockReleased(order_id=command.order_id, sku=command.sku, quantity=command.quantity)
                )
            return StockReleased(order_id=command.order_id, sku=command.sku, quantity=command.quantity)
        self.unhandled(command)
        return None

    def event_handler(self, event: ev.Event) -> None:
        if isinstance(event, StockReserved):
            self.reserved.add(event.order_id)
        elif isinstance(event, StockReleased):
            self.released.add(event.order_id)


class Shipping(ev.Actor):
    """Ships, or fails to for orders that ask it to."""

    async def on_message(self, message: Any) -> Any:
        if isinstance(message, ShipOrder):
            if message.fail:
                return ShippingFailed(order_id=message.order_id, reason="address unknown")
            return OrderShipped(order_id=message.order_id, tracking=f"TRK-{message.order_id}")
        self.unhandled(message)
        return None


# -- the saga ------------------------------------------------------------------------------------------


class OrderSagaState(SagaState):
    order_id: str = ""
    amount: float = 0.0
    fail_at: str = ""
    cooling_off: float = 0.0
    paid: bool = False
    reserved: bool = False
    shipped: bool = False
    failure: str = ""


class OrderSaga(Saga[OrderSagaState]):
    """Charge, reserve stock, (wait,) ship; on failure undo what was done, last step first."""

    async def start_saga(self, command: Any) -> str:
        assert isinstance(command, CreateOrder)
        self.saga_state = OrderSagaState(
            order_id=command.order_id,
            amount=command.amount,
            fail_at=command.fail_at,
            cooling_off=command.cooling_off,
        )
        await self.save_saga_state()
        charge = ChargePayment(order_id=command.order_id, amount=command.amount, decline=command.fail_at == "payment")
        await self.send_command("payments", charge)
        await self.schedule_timeout(timedelta(seconds=command.payment_timeout), "payment")
        return command.order_id

    async def handle_saga_event(self, event: ev.Event) -> None:
        state = self.saga_state
        if self.is_finished:
            if isinstance(event, PaymentCharged) and not state.paid:
                # Charged after the saga gave up waiting: give the money back.
                await self.send_command("payments", RefundPayment(order_id=state.order_id, amount=state.amount))
            return
        if isinstance(event, PaymentCharged):
            self.saga_state = state.copy_with(paid=True)
            await self.save_saga_state()
            await self.cancel_timeout("payment")
            await self.send_command("inventory", ReserveStock(order_id=state.order_id, sku="sku-1", quantity=1))
        elif isinstance(event, StockReserved):
            self.saga_state = state.copy_with(reserved=True)
            await self.save_saga_state()
            if state.cooling_off > 0:
                await self.schedule_timeout(state.cooling_off, "cooling-off")
            else:
                await self._ship()
        elif isinstance(event, SagaTimeout) and event.timeout_id == "cooling-off":
            await self._ship()
        elif isinstance(event, OrderShipped):
            self.saga_state = state.copy_with(shipped=True, status=SagaStatus.COMPLETED)
            await self.save_saga_state()
        elif isinstance(event, SagaTimeout) and event.timeout_id == "payment":
            self.saga_state = state.copy_with(status=SagaStatus.TIMED_OUT, failure="payment timed out")
            await self.save_saga_state()
        elif isinstance(event, (PaymentDeclined, ShippingFailed, SagaCommandFailed)):
            reason = getattr(event, "reason", type(event).__name__)
            self.saga_state = state.copy_with(status=SagaStatus.FAILED, failure=reason)
            await self.save_saga_state()
            await self.compensate(self.completed_steps)

    async def _ship(self) -> None:
        state = self.saga_state
        await self.send_command("shipping", ShipOrder(order_id=state.order_id, fail=state.fail_at == "shipping"))

    def compensation_for(self, event: ev.Event) -> tuple[str, ev.Command] | None:
        if isinstance(event, PaymentCharged):
            return "payments", RefundPayment(order_id=event.order_id, amount=event.amount)
        if isinstance(event, StockReserved):
            return "inventory", ReleaseStock(order_id=event.order_id, sku=event.sku, quantity=event.quantity)
        return None


async def spawn_targets(system: ev.ActorSystem, store: ev.EventStore) -> None:
    """Spawns payments, inventory and shipping (resumed on failure: their state is in the store)."""
    resume = ev.Supervisor.resume()
    await system.spawn("payments", lambda: Payments(event_store=store), supervisor=resume)
    await system.spawn("inventory", lambda: Inventory(event_store=store), supervisor=resume)
    await system.spawn("shipping", Shipping, supervisor=resume)
