"""Sagas: long-running transactions across actors, with durable timeouts and compensation.

A ``Saga`` is a persistent actor that drives a workflow: it sends commands to other
actors (``send_command``), hears back through ``handle_saga_event``, schedules
timeouts (``schedule_timeout``) and, when something fails, undoes the completed
steps in reverse order (``compensate``). The ``SagaCoordinator`` (a background
processor, not an actor) delivers the commands from the durable queue with ``ask``
and hands the events the targets return back to the saga that sent them.

How a crash cannot lose or double a step. Everything a saga does while handling one
message -- state saves, commands sent, timeouts scheduled -- is one unit: its
events go to the saga's stream in one atomic append, then its queue messages are
enqueued in one transaction (with dedupe keys derived from the saga id, the message
being handled and the position in the unit), the ack of that message included.
A crash before the append: the message is delivered again and the unit redone
from the same state. After the append: the saga, recovered, re-enqueues the last
unit's messages, which the dedupe keys turn into no-ops where they already exist,
and a redelivered message the saga has already handled is skipped. So each
command, compensating ones included, is enqueued exactly once. Delivery to the
target is at least once (a crash between the target's work and the ack repeats
it): targets must be idempotent, e.g. keyed by the order id.

Costs per step: one append (its fsync shared with concurrent appends) and one
queue transaction (shared with every queue operation submitted meanwhile).

The saga's history is queryable: ``SELECT * FROM SagaStateSaved`` (status and the
state as JSON), ``SagaCommandSent``, ``SagaStepCompleted``, ``SagaTimeoutScheduled``.
"""

from __future__ import annotations

import dataclasses
import enum
import html
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from eventador.aggregates.persistent import PersistentActor
from eventador.codec import class_label, decode_event, encode_event, instance_from_fields, resolve_class, schema_of
from eventador.errors import InvalidInputError
from eventador.messages import EPOCH, Command, Event, Message
from eventador.queue.engine import Ack, Cancel, Op
from eventador.queue.manager import QueueManager, encode_message
from eventador.sagas.records import (
    COMMANDS_QUEUE,
    EVENTS_QUEUE,
    TIMEOUTS_QUEUE,
    Delivery,
    SagaCommandFailed,
    SagaTimeout,
    enqueue_envelope,
    make_envelope,
    short_type,
)

if TYPE_CHECKING:
    from eventador.store import EventStore

__all__ = [
    "COMMANDS_QUEUE",
    "EVENTS_QUEUE",
    "TIMEOUTS_QUEUE",
    "Saga",
    "SagaCommandFailed",
    "SagaState",
    "SagaStatus",
    "SagaTimeout",
]

log = logging.getLogger("eventador.sagas")

SS = TypeVar("SS", bound="SagaState")
T = TypeVar("T")


# -- state ------------------------------------------------------------------------------------------


class SagaStatus(enum.Enum):
    """Where a saga is. RUNNING and COMPENSATING sagas have work left; the others are finished."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_active(self) -> bool:
        """Returns whether the saga still has work to do (RUNNING or COMPENSATING)."""
        return self is SagaStatus.RUNNING or self is SagaStatus.COMPENSATING


class SagaState(Message):
    """The state of a saga: subclass it with the workflow's own fields.

    >>> class OrderSagaState(SagaState):
    ...     order_id: str
    ...     payment_processed: bool = False
    >>> s = OrderSagaState(order_id="o-1")
    >>> s.copy_with(status=SagaStatus.COMPLETED).status
    <SagaStatus.COMPLETED: 'COMPLETED'>
    """

    status: SagaStatus = SagaStatus.RUNNING
    last_updated: datetime = EPOCH

    def copy_with(self: SS, **changes: Any) -> SS:
        """Returns a new state with `changes` applied; the original is unchanged.

        Raises:
            TypeError: a name in `changes` is not a field of the state.
        """
        cls = type(self)
        names = _field_names(cls)
        if hasattr(cls, "__post_init__") or not changes.keys() <= set(names):
            return dataclasses.replace(self, **changes)  # validates, runs __post_init__
        # A frozen dataclass copied field by field, without __init__: sagas copy their state often.
        new = object.__new__(cls)
        values = dict(self.__dict__)
        values.update(changes)
        object.__setattr__(new, "__dict__", values)
        return new


# -- events: what sagas hear, and what they record ----------------------------------------------------


class SagaStateSaved(Event, event_type="SagaStateSaved"):
    """Recorded by ``save_saga_state``: the whole state, its status in a column of its own."""

    saga_type: str
    status: str
    state_type: str
    state: dict[str, Any]
    cause: str


class SagaCommandSent(Event, event_type="SagaCommandSent"):
    """Recorded by ``send_command``: what went to whom, under which dedupe key."""

    target: str
    command_type: str
    message_type: str
    payload: bytes
    dedupe_key: str
    cause: str
    compensation: bool = False


class SagaStepCompleted(Event, event_type="SagaStepCompleted"):
    """Recorded when a target answered one of the saga's commands with an event."""

    target: str
    event_type_name: str
    payload: bytes
    dedupe_key: str
    cause: str
    event_version: int = 1  # the answering event's schema version, for upcasters


class SagaTimeoutScheduled(Event, event_type="SagaTimeoutScheduled"):
    """Recorded by ``schedule_timeout``."""

    timeout_id: str
    due_at: datetime
    dedupe_key: str
    cause: str


class SagaTimeoutCancelled(Event, event_type="SagaTimeoutCancelled"):
    """Recorded when a pending timeout is cancelled, or has fired (`fired`)."""

    timeout_id: str
    dedupe_key: str
    fired: bool
    cause: str


class SagaCompensationPlanned(Event, event_type="SagaCompensationPlanned"):
    """Recorded by ``compensate``: the compensating commands, in the order they will run."""

    targets: list[str]
    message_types: list[str]
    payloads: list[bytes]
    cause: str


_BOOKKEEPING = (
    SagaStateSaved,
    SagaCommandSent,
    SagaStepCompleted,
    SagaTimeoutScheduled,
    SagaTimeoutCancelled,
    SagaCompensationPlanned,
)


class _Unit:
    """What a saga does while handling one message: stored and enqueued together."""

    __slots__ = ("cause", "events", "live", "ops", "sends", "stored", "timers")

    def __init__(self, cause: str, timers: dict[str, str]) -> None:
        self.cause = cause
        self.events: list[Event] = []
        self.ops: list[Op] = []  # queue work besides what the events stand for (the ack of the delivery)
        self.live: dict[int, Any] = {}  # id(recorded event) -> the object it records
        self.timers = timers  # pending timeouts as of this point of the unit
        self.sends = 0
        self.stored = False


# -- the saga -------------------------------------------------------------------------------------------


class Saga(PersistentActor, Generic[SS]):
    """A persistent actor running one long transaction; see the module docstring.

    Override ``start_saga(command)`` (set ``self.saga_state``, ``save_saga_state()``,
    send the first command) and ``handle_saga_event(event)`` (the events targets
    answer with, ``SagaTimeout``, ``SagaCommandFailed``); for compensation, override
    ``compensation_for(event)`` and call ``compensate(self.completed_steps)``.
    Do not override ``event_handler``: the saga's own bookkeeping lives there.

    Spawn sagas under their ``persistence_id``, so the coordinator finds them.
    Class attributes: ``stop_when_finished`` (stop the actor once the saga has
    finished; the coordinator respawns it if a late message arrives).

    For example, with the ``OrderSagaState`` of ``SagaState``'s example::

        class OrderSaga(ev.Saga[OrderSagaState]):
            async def start_saga(self, command):
                self.saga_state = OrderSagaState(order_id=command.order_id)
                await self.save_saga_state()
                await self.send_command("payment_processor", ProcessPayment(order_id=command.order_id))
    """

    stop_when_finished: ClassVar[bool] = False

    def __init__(
        self,
        *,
        persistence_id: str,
        event_store: EventStore,
        duraq_manager: QueueManager | None = None,
        queue_manager: QueueManager | None = None,
    ) -> None:
        super().__init__(persistence_id=persistence_id, event_store=event_store)
        manager = duraq_manager if duraq_manager is not None else queue_manager
        if not isinstance(manager, QueueManager):
            raise InvalidInputError(
                f"{type(self).__name__} needs duraq_manager= (or queue_manager=) an ev.QueueManager, got {manager!r}"
            )
        if duraq_manager is not None and queue_manager is not None and duraq_manager is not queue_manager:
            raise InvalidInputError("pass duraq_manager= or queue_manager=, not two different managers")
        self.duraq_manager: QueueManager = manager
        self._saga_state: SS | None = None
        self._saved_at: datetime | None = None  # last_updated of the last saved state
        self._handled: set[str] = set()  # queue messages whose unit is stored
        self._timers: dict[str, str] = {}  # timeout_id -> dedupe key of the pending timeout
        self._steps: list[Event] = []
        self._plan: list[tuple[str, str, bytes]] = []  # compensating commands, in order
        self._plan_next = 0
        self._awaiting_compensation = ""  # dedupe key of the compensating command in flight
        self._last_cause = ""
        self._last_unit: list[Event] = []  # the events of the last stored unit
        self._uow: _Unit | None = None
        self._unflushed: list[Op] = []  # queue work of a stored unit that failed to commit
        self._resumed = False

    # -- what a subclass overrides ------------------------------------------------------------------

    async def start_saga(self, command: Command) -> Any:
        """Returns anything (the answer to ``ask``); begins the saga for `command`.

        Raises:
            NotImplementedError: a subclass must define it.
        """
        raise NotImplementedError(f"{type(self).__name__} must define start_saga(command)")

    async def handle_saga_event(self, event: Event) -> Any:
        """Returns anything; reacts to an event: a target's answer, ``SagaTimeout``, ``SagaCommandFailed``."""
        self.unhandled(event)
        return None

    def compensation_for(self, event: Event) -> tuple[str, Command] | None:
        """Returns ``(target, command)`` that undoes the step `event` completed, or None."""
        return None

    async def command_handler(self, command: Any) -> Any:
        """Returns what ``start_saga`` returns: the first command told to a saga starts it.

        Once started, further commands are unhandled (dead letters); override this to
        take commands such as a cancellation.
        """
        if self.has_saga_state:
            self.unhandled(command)
            return None
        return await self.start_saga(command)

    # -- state ------------------------------------------------------------------------------------------

    @property
    def saga_state(self) -> SS:
        """Returns the saga's current state.

        Raises:
            AttributeError: no state yet: ``start_saga`` sets ``self.saga_state`` first.
        """
        state = self._saga_state
        if state is None:
            raise AttributeError(f"{type(self).__name__} {self.persistence_id!r} has no saga state yet")
        return state

    @saga_state.setter
    def saga_state(self, state: SS) -> None:
        if not isinstance(state, SagaState):
            raise InvalidInputError(f"saga_state must be an ev.SagaState, got {state!r}")
        self._saga_state = state

    @property
    def has_saga_state(self) -> bool:
        """Returns whether the saga has a state (it has started)."""
        return self._saga_state is not None

    @property
    def queue_manager(self) -> QueueManager:
        """Returns the queue manager (the same as ``duraq_manager``)."""
        return self.duraq_manager

    @property
    def completed_steps(self) -> list[Event]:
        """Returns the events targets answered this saga's commands with, oldest first."""
        return list(self._steps)

    @property
    def is_finished(self) -> bool:
        """Returns whether the saga has a state whose status is not RUNNING or COMPENSATING."""
        return self._saga_state is not None and not self._saga_state.status.is_active

    # -- what a subclass calls ------------------------------------------------------------------------

    async def save_saga_state(self) -> None:
        """Returns once ``saga_state`` is recorded (with the rest of the current unit; see the module).

        ``last_updated`` is set to the store clock's time unless the saga changed it.
        Called while handling a message, the state is stored with that message's
        other effects when the handler returns; called elsewhere, at once.
        """
        state = self.saga_state
        if state.last_updated == (self._saved_at or EPOCH) or state.last_updated == EPOCH:
            state = state.copy_with(last_updated=self.event_store.clock.now())
            self._saga_state = state
        unit = self._uow
        if unit is not None:  # the common case, handling a message: join its unit (no coroutines)
            unit.events.append(self._state_event(state, unit))
            return
        async with self._unit() as unit:
            unit.events.append(self._state_event(state, unit))

    async def send_command(self, target_name: str, command: Command) -> str:
        """Returns the dedupe key under which `command` is enqueued for the actor `target_name`.

        The coordinator delivers it with ``ask``; the event(s) the target answers with
        come back through ``handle_saga_event``; if it cannot be delivered, a
        ``SagaCommandFailed`` does. The key (saga id, the message being handled, the
        position in this unit) makes a resend after a crash a no-op.

        Raises:
            SerializationError: the command cannot be stored; nothing is sent.
        """
        return await self._send(target_name, command, compensation=False)

    async def schedule_timeout(self, duration: float | timedelta, timeout_id: str) -> None:
        """Returns once a ``SagaTimeout(timeout_id=...)`` is scheduled for `duration` from now.

        Durable: a delayed queue message, delivered after a restart too. Cancelled by
        ``cancel_timeout(timeout_id)``, by scheduling the same id again, and when the saga finishes.
        """
        if not isinstance(timeout_id, str) or not timeout_id:
            raise InvalidInputError(f"timeout_id must be a non-empty str, got {timeout_id!r}")
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
        if seconds < 0:
            raise InvalidInputError(f"a timeout duration must not be negative, got {duration!r}")
        due = self.event_store.clock.now() + timedelta(seconds=seconds)
        async with self._unit() as unit:
            _cancel_timer(unit, timeout_id, fired=False)
            key = f"{self.persistence_id}:timeout:{timeout_id}:{unit.cause}:{unit.sends}"
            unit.sends += 1
            scheduled = SagaTimeoutScheduled(timeout_id=timeout_id, due_at=due, dedupe_key=key, cause=unit.cause)
            unit.events.append(scheduled)
            unit.timers[timeout_id] = key

    async def cancel_timeout(self, timeout_id: str) -> bool:
        """Returns whether a pending timeout by that id was cancelled."""
        async with self._unit() as unit:
            return _cancel_timer(unit, timeout_id, fired=False)

    async def compensate(self, events: Sequence[Event]) -> None:
        """Returns once compensation has begun: the steps `events` completed are undone in reverse order.

        Sets the status to COMPENSATING and records the plan: ``compensation_for`` of each
        event, last first. The compensating commands run one at a time, each after the
        previous one's target answered; after the last the status becomes COMPENSATED
        (at once if there is nothing to undo). If one fails, the status becomes FAILED.
        """
        actions: list[tuple[str, str, bytes]] = []
        for event in reversed(list(events)):
            action = self.compensation_for(event)
            if action is not None:
                target, command = action
                message_type, payload = encode_message(command)
                actions.append((target, message_type or "", payload))
        async with self._unit() as unit:
            unit.events.append(
                SagaCompensationPlanned(
                    targets=[a[0] for a in actions],
                    message_types=[a[1] for a in actions],
                    payloads=[a[2] for a in actions],
                    cause=unit.cause,
                )
            )
            self._set_status(SagaStatus.COMPENSATING if actions else SagaStatus.COMPENSATED)
            await self.save_saga_state()
            if actions:
                await self._send_planned(actions[0])

    # -- the actor ------------------------------------------------------------------------------------------

    async def on_message(self, message: Any) -> Any:
        """Returns the handler's answer: deliveries from the coordinator, events, or a starting command."""
        if not self.is_recovered:
            await self.start()
        if self._unflushed:
            await self._flush_unflushed()
        if isinstance(message, Delivery):
            return await self._deliver(message)
        cause = f"v{self.sequence_number}"
        async with self._unit(cause):
            if isinstance(message, Event):
                return await self.handle_saga_event(message)
            return await self.command_handler(message)

    async def start(self) -> None:
        """Returns once recovered and the last unit's queue work is re-enqueued (a no-op if it was done)."""
        await super().start()
        if not self._resumed:
            self._resumed = True
            ops = self._ops_for(self._last_unit, recovering=True)
            if ops:
                await self.duraq_manager.submit_async(ops)

    def event_handler(self, event: Event) -> None:
        """Returns nothing; applies the saga's own bookkeeping events (do not override)."""
        if not isinstance(event, _BOOKKEEPING):
            return
        cause = event.cause
        if cause != self._last_cause:
            self._last_cause = cause
            self._last_unit = []
        self._last_unit.append(event)
        if cause[:1] in ("c", "e", "t"):
            self._handled.add(cause)
        live = self._uow.live.get(id(event)) if self._uow is not None else None
        if isinstance(event, SagaStateSaved):
            state = live if live is not None else self._decode_state(event)
            if state is not None:
                self._saga_state = state
                self._saved_at = state.last_updated
        elif isinstance(event, SagaCommandSent):
            if event.compensation:
                self._awaiting_compensation = event.dedupe_key
                self._plan_next += 1
        elif isinstance(event, SagaStepCompleted):
            registry = self.event_store.registry
            step = live if live is not None else decode_event(
                event.event_type_name, event.payload, registry, event.event_version
            )
            self._steps.append(step)
        elif isinstance(event, SagaTimeoutScheduled):
            self._timers[event.timeout_id] = event.dedupe_key
        elif isinstance(event, SagaTimeoutCancelled):
            self._timers.pop(event.timeout_id, None)
        elif isinstance(event, SagaCompensationPlanned):
            self._plan = list(zip(event.targets, event.message_types, event.payloads, strict=True))
            self._plan_next = 0
            self._awaiting_compensation = ""

    # -- units of work --------------------------------------------------------------------------------------

    def _unit(self, cause: str | None = None) -> _UnitScope:
        return _UnitScope(self, cause)

    async def _commit(self, unit: _Unit) -> None:
        """Stores the unit's events in one append, then enqueues its queue work in one transaction."""
        if not unit.events:
            if unit.ops:
                await self.duraq_manager.submit_async(unit.ops)
            return
        if self._saved_at is None and not any(isinstance(e, SagaStateSaved) for e in unit.events):
            # A saga is found (recovered, listed) by its saved state: make sure it has one.
            if self._saga_state is None:
                self._saga_state = cast(SS, SagaState())
            unit.events.insert(0, self._state_event(self._saga_state, unit))
        if self.is_finished:
            for timeout_id in list(unit.timers):
                _cancel_timer(unit, timeout_id, fired=False)
        await self.persist_events(unit.events)
        unit.stored = True
        ops = self._ops_for(unit.events, recovering=False) + unit.ops
        if ops:
            try:
                await self.duraq_manager.submit_async(ops)
            except Exception:
                # The unit is stored: its queue work must still happen. Kept for the next message
                # (and redone by recovery after a restart).
                self._unflushed.extend(ops)
                raise

    async def _flush_unflushed(self) -> None:
        ops, self._unflushed = self._unflushed, []
        try:
            await self.duraq_manager.submit_async(ops)
        except Exception:
            self._unflushed = ops + self._unflushed
            raise

    def _ops_for(self, events: Sequence[Event], *, recovering: bool) -> list[Op]:
        """The queue work a unit's events stand for (enqueues carry their dedupe keys)."""
        ops: list[Op] = []
        saga_type = class_label(type(self))
        now: datetime | None = None
        for event in events:
            if isinstance(event, SagaCommandSent):
                message = make_envelope(
                    "command",
                    self.persistence_id,
                    saga_type,
                    target=event.target,
                    message_type=event.message_type,
                    payload=event.payload,
                    dedupe_key=event.dedupe_key,
                )
                ops.append(enqueue_envelope(COMMANDS_QUEUE, message, event.dedupe_key, 0, fresh=not recovering))
            elif isinstance(event, SagaTimeoutScheduled):
                message = make_envelope(
                    "timeout", self.persistence_id, saga_type, timeout_id=event.timeout_id, dedupe_key=event.dedupe_key
                )
                now = now or self.event_store.clock.now()
                delay = max(0, round((event.due_at - now).total_seconds() * 1_000_000))
                ops.append(enqueue_envelope(TIMEOUTS_QUEUE, message, event.dedupe_key, delay, fresh=not recovering))
            elif isinstance(event, SagaTimeoutCancelled) and not event.fired:
                ops.append(Cancel(TIMEOUTS_QUEUE, [], [event.dedupe_key], count=False))
        if recovering and self.is_finished and self._timers:
            # It may have finished just before a crash: its pending timeouts must go.
            ops.append(Cancel(TIMEOUTS_QUEUE, [], list(self._timers.values()), count=False))
        return ops

    async def _send(self, target: str, command: Command, *, compensation: bool) -> str:
        if not isinstance(target, str) or not target:
            raise InvalidInputError(f"target_name must be a non-empty str, got {target!r}")
        message_type, payload = self.duraq_manager.encode(command)
        return await self._record_send(target, message_type or "", payload, compensation=compensation)

    async def _send_planned(self, action: tuple[str, str, bytes]) -> str:
        target, message_type, payload = action
        return await self._record_send(target, message_type, payload, compensation=True)

    async def _record_send(self, target: str, message_type: str, payload: bytes, *, compensation: bool) -> str:
        unit = self._uow
        if unit is not None:  # the common case, handling a message: join its unit (no coroutines)
            return self._add_send(unit, target, message_type, payload, compensation)
        async with self._unit() as unit:
            return self._add_send(unit, target, message_type, payload, compensation)

    def _add_send(self, unit: _Unit, target: str, message_type: str, payload: bytes, compensation: bool) -> str:
        key = f"{self.persistence_id}:{unit.cause}:{unit.sends}"
        unit.sends += 1
        unit.events.append(
            _record(
                SagaCommandSent,
                target=target,
                command_type=short_type(message_type),
                message_type=message_type,
                payload=payload,
                dedupe_key=key,
                cause=unit.cause,
                compensation=compensation,
            )
        )
        return key

    def _state_event(self, state: SagaState, unit: _Unit) -> SagaStateSaved:
        event = _record(
            SagaStateSaved,
            saga_type=class_label(type(self)),
            status=state.status.value,
            state_type=class_label(type(state)),
            state={name: getattr(state, name) for name in _field_names(type(state))},
            cause=unit.cause,
        )
        unit.live[id(event)] = state
        return event

    def _decode_state(self, event: SagaStateSaved) -> SS | None:
        cls = resolve_class(event.state_type)
        if cls is None or not issubclass(cls, SagaState):
            cls = type(self._saga_state) if self._saga_state is not None else SagaState
        data = dict(event.state)
        try:
            return cast(SS, instance_from_fields(schema_of(cls), data))
        except Exception:
            log.warning("saga %r: cannot rebuild its state as %s", self.persistence_id, event.state_type)
            return None

    def _set_status(self, status: SagaStatus) -> None:
        if self._saga_state is None:
            self._saga_state = cast(SS, SagaState(status=status))
        elif self._saga_state.status is not status:
            self._saga_state = self._saga_state.copy_with(status=status)

    # -- deliveries from the coordinator --------------------------------------------------------------

    async def _deliver(self, delivery: Delivery) -> str:
        """Returns "acked" (the delivery is acked with the unit's queue work) or "duplicate" (it is not)."""
        if delivery.cause in self._handled:
            return "duplicate"
        async with self._unit(delivery.cause) as unit:
            if delivery.ack is not None:
                unit.ops.append(Ack([delivery.ack], count=False))
            if delivery.kind == "timeout":
                (timeout,) = delivery.events
                assert isinstance(timeout, SagaTimeout)
                if unit.timers.get(timeout.timeout_id) != delivery.dedupe_key or self.is_finished:
                    return "acked"  # stale: cancelled, rescheduled, or the saga is over
                _cancel_timer(unit, timeout.timeout_id, fired=True)
                await self.handle_saga_event(timeout)
                return "acked"
            compensating = bool(delivery.dedupe_key) and delivery.dedupe_key == self._awaiting_compensation
            for event in delivery.events:
                if delivery.kind == "reply":
                    step = _record(
                        SagaStepCompleted,
                        target=delivery.target,
                        event_type_name=event.event_type,
                        payload=encode_event(event),
                        event_version=event.schema_version,
                        dedupe_key=delivery.dedupe_key,
                        cause=unit.cause,
                    )
                    unit.live[id(step)] = event
                    unit.events.append(step)
                await self.handle_saga_event(event)
            if compensating and self._saga_state is not None and self._saga_state.status is SagaStatus.COMPENSATING:
                self._awaiting_compensation = ""
                failed = any(isinstance(e, SagaCommandFailed) for e in delivery.events)
                if failed:
                    self._set_status(SagaStatus.FAILED)
                    await self.save_saga_state()
                elif self._plan_next < len(self._plan):
                    await self._send_planned(self._plan[self._plan_next])
                else:
                    self._set_status(SagaStatus.COMPENSATED)
                    await self.save_saga_state()
        return "acked"

    # -- looking at it ------------------------------------------------------------------------------------

    def __repr__(self) -> str:
        status = self._saga_state.status.value if self._saga_state is not None else "not started"
        return f"{type(self).__name__}({self.persistence_id!r}, {status}, sequence_number={self.sequence_number})"

    def _repr_html_(self) -> str:
        rows = ""
        if self._saga_state is not None:
            rows = "".join(
                f"<tr><th style='text-align:left'>{html.escape(f.name)}</th>"
                f"<td>{html.escape(str(getattr(self._saga_state, f.name)))}</td></tr>"
                for f in dataclasses.fields(self._saga_state)
            )
        steps = ", ".join(html.escape(type(e).__name__) for e in self._steps) or "none"
        timers = ", ".join(html.escape(t) for t in self._timers) or "none"
        return (
            f"<div><strong>{html.escape(repr(self))}</strong><table>{rows}"
            f"<tr><th style='text-align:left'>completed steps</th><td>{steps}</td></tr>"
            f"<tr><th style='text-align:left'>pending timeouts</th><td>{timers}</td></tr></table></div>"
        )


class _UnitScope:
    """``async with saga._unit(cause)``: joins the unit in progress, or runs and commits a new one."""

    __slots__ = ("_backup", "_cause", "_own", "_saga", "_unit")

    def __init__(self, saga: Saga[Any], cause: str | None) -> None:
        self._saga = saga
        self._cause = cause
        self._own = False
        self._unit: _Unit | None = None
        self._backup: tuple[Any, ...] = ()

    async def __aenter__(self) -> _Unit:
        saga = self._saga
        if saga._uow is not None:
            return saga._uow
        self._own = True
        cause = self._cause if self._cause is not None else f"v{saga.sequence_number}"
        self._unit = saga._uow = _Unit(cause, dict(saga._timers))
        self._backup = (saga._saga_state, saga._saved_at, saga._awaiting_compensation)
        return self._unit

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if not self._own:
            return
        saga, unit = self._saga, self._unit
        assert unit is not None
        try:
            if exc_type is None:
                await saga._commit(unit)
        except BaseException:
            if not unit.stored:
                self._restore()
            raise
        else:
            if exc_type is not None:
                self._restore()
        finally:
            saga._uow = None
        if exc_type is None and saga.stop_when_finished and saga.is_finished and saga._context is not None:
            await saga.system.stop(saga.self_ref)

    def _restore(self) -> None:
        # Nothing of the unit was stored: forget its in-memory effects, as if it never ran.
        saga = self._saga
        saga._saga_state, saga._saved_at, saga._awaiting_compensation = self._backup


def _cancel_timer(unit: _Unit, timeout_id: str, *, fired: bool) -> bool:
    key = unit.timers.pop(timeout_id, None)
    if key is None:
        return False
    unit.events.append(SagaTimeoutCancelled(timeout_id=timeout_id, dedupe_key=key, fired=fired, cause=unit.cause))
    return True


# -- helpers -------------------------------------------------------------------------------------------------


E = TypeVar("E", bound=Event)


def _record(cls: type[E], **fields: Any) -> E:
    """One of the saga's own bookkeeping events, built without ``__init__``.

    Sagas write several per step, and a frozen dataclass's ``__init__`` costs a
    ``object.__setattr__`` per field; these are built here from values of the right
    types (every field given), and the store checks them again when it encodes them.
    """
    event: E = object.__new__(cls)
    object.__setattr__(event, "__dict__", fields)
    return event


def _field_names(cls: type) -> tuple[str, ...]:
    names = cls.__dict__.get("__eventador_fields__")
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        type.__setattr__(cls, "__eventador_fields__", names)
    return cast("tuple[str, ...]", names)
