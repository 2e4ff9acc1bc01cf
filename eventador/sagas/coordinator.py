"""The SagaCoordinator: delivers sagas' commands, timeouts and failure notices from the queues.

Not an actor: a background processor (``process_saga_commands``,
``process_saga_timeouts``) or a one-shot drain (``run_until_idle``). See
``eventador.sagas`` for how sagas and the coordinator keep every step exactly once
across crashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from eventador.actors import ActorRef, ActorSystem, Supervisor
from eventador.codec import class_label, resolve_class
from eventador.errors import ActorNameInUseError, CommandRejected, EventadorError, InvalidInputError
from eventador.messages import Event
from eventador.queue.engine import Ack, Admin, Enqueue
from eventador.queue.manager import Lease, QueueManager, UnknownMessage, encode_message
from eventador.sagas.records import (
    COMMANDS_QUEUE,
    EVENTS_QUEUE,
    TIMEOUTS_QUEUE,
    Delivery,
    SagaCommandFailed,
    SagaEnvelope,
    SagaTimeout,
    as_envelope,
    enqueue_envelope,
    make_envelope,
    short_type,
)
from eventador.sagas.saga import Saga, SagaStatus

if TYPE_CHECKING:
    import pandas as pd

    from eventador.store import EventStore

__all__ = ["SagaCoordinator", "SagaFactory", "list_sagas"]

log = logging.getLogger("eventador.sagas")


# -- the coordinator --------------------------------------------------------------------------------------


SagaFactory = Callable[[str], Saga[Any]]
"""Builds the saga with the given persistence id (for respawning it)."""


class SagaCoordinator:
    """Delivers sagas' commands, timeouts and failure notices from the durable queues.

    A background processor, not an actor: run ``process_saga_commands()`` and
    ``process_saga_timeouts()`` as tasks (until ``stop()``), or call
    ``run_until_idle()`` to deliver everything that is ready now (tests, notebooks).

    Each command is delivered to its target with ``ask``; the event(s) the target
    answers with go to the saga's ``handle_saga_event``, and only then is the command
    acked. A target that is not there, raises or times out: the command is retried
    per the queue's ``RetryPolicy``, then dead-lettered, and the saga gets a
    ``SagaCommandFailed``. A target that raises ``CommandRejected``: no retries, the
    saga gets ``SagaCommandFailed(rejected=True)``. The first run also calls
    ``recover()``: sagas that were RUNNING or COMPENSATING when the process stopped
    are respawned and pick up where they were.

    Sagas are spawned under their persistence id with ``sagas[saga_type](saga_id)``
    when registered (``register``), else as ``SagaClass(persistence_id=...,
    event_store=..., duraq_manager=...)``, the class found by its module and name.

    `batch_size`: messages claimed per dequeue; `max_in_flight`: deliveries at once;
    `ask_timeout` + `saga_timeout`: seconds a delivery (the target's answer, then the
    saga's handling of it) may take before it counts as failed (checked twice a
    second); `visibility_timeout`: seconds before an unacked delivery is retried
    (keep it above the sum of those two); `poll_interval`:
    seconds between looks at the queues when idle (messages this process enqueues
    wake the loops at once).
    """

    def __init__(
        self,
        queue_manager: QueueManager,
        event_store: EventStore,
        actor_system: ActorSystem,
        *,
        sagas: Iterable[type[Saga[Any]]] | Mapping[str, SagaFactory] = (),
        batch_size: int = 512,
        max_in_flight: int = 4096,
        ask_timeout: float = 10.0,
        saga_timeout: float = 30.0,
        visibility_timeout: float = 60.0,
        poll_interval: float = 0.1,
    ) -> None:
        if not isinstance(queue_manager, QueueManager):
            raise InvalidInputError(f"queue_manager must be an ev.QueueManager, got {queue_manager!r}")
        if batch_size < 1 or max_in_flight < 1:
            raise InvalidInputError("batch_size and max_in_flight must be at least 1")
        if min(ask_timeout, saga_timeout, visibility_timeout, poll_interval) <= 0:
            raise InvalidInputError("timeouts and poll_interval must be positive seconds")
        self.queue_manager = queue_manager
        self.event_store = event_store
        self.actor_system = actor_system
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.ask_timeout = ask_timeout
        self.saga_timeout = saga_timeout
        self.visibility_timeout = visibility_timeout
        self.poll_interval = poll_interval
        self.delivered = 0
        """Messages delivered and acked so far."""
        self._factories: dict[str, SagaFactory] = {}
        if isinstance(sagas, Mapping):
            self._factories.update(sagas)
        else:
            for saga_class in sagas:
                self.register(saga_class)
        self._tasks: set[asyncio.Task[None]] = set()
        self._deadlines: dict[asyncio.Task[None], float] = {}
        self._expired: set[asyncio.Task[None]] = set()
        self._next_sweep = 0.0
        self._loops: set[asyncio.Task[Any]] = set()
        self._wakes: set[asyncio.Event] = set()
        self._stopping = False
        self._recovered = False
        self._recovery: asyncio.Lock | None = None
        queue_manager.on_dead_letter(COMMANDS_QUEUE, self._command_died)

    def register(self, saga_class: type[Saga[Any]], factory: SagaFactory | None = None) -> None:
        """Returns nothing; sagas of `saga_class` are (re)spawned with `factory(saga_id)`.

        Without `factory`: ``saga_class(persistence_id=saga_id, event_store=...,
        duraq_manager=...)``. Needed for saga classes that cannot be imported by name.
        """
        if not (isinstance(saga_class, type) and issubclass(saga_class, Saga)):
            raise InvalidInputError(f"register takes a Saga subclass, got {saga_class!r}")
        self._factories[class_label(saga_class)] = factory or self._default_factory(saga_class)

    # -- running ------------------------------------------------------------------------------------------

    async def process_saga_commands(self) -> None:
        """Returns after ``stop()``; until then delivers commands and saga events as they come."""
        await self._consume([COMMANDS_QUEUE, EVENTS_QUEUE])

    async def process_saga_timeouts(self) -> None:
        """Returns after ``stop()``; until then delivers timeouts as they come due."""
        await self._consume([TIMEOUTS_QUEUE])

    async def run_until_idle(self) -> int:
        """Returns how many messages it delivered: everything ready now, and what that made ready.

        Timeouts and retries that are not due yet stay queued (advance a ``ManualClock``
        and call again).
        """
        await self._ensure_recovered()
        before = self.delivered
        queues = (COMMANDS_QUEUE, EVENTS_QUEUE, TIMEOUTS_QUEUE)
        while True:
            started = 0
            for queue in queues:
                while len(self._tasks) < self.max_in_flight:
                    leases = await self.queue_manager.dequeue_many_async(
                        queue,
                        min(self.batch_size, self.max_in_flight - len(self._tasks)),
                        visibility_timeout=self.visibility_timeout,
                    )
                    for lease in leases:
                        self._start(queue, lease)
                    started += len(leases)
                    if not leases:
                        break
            if not started and not self._tasks:
                return self.delivered - before
            while self._tasks:
                await asyncio.wait(set(self._tasks), timeout=0.5)
                self._sweep()

    async def stop(self) -> None:
        """Returns once the loops have ended and the deliveries in progress are done."""
        self._stopping = True
        for wake in self._wakes:
            wake.set()
        loops = {task for task in self._loops if task is not asyncio.current_task()}
        if loops:
            # First the loops: one may be claiming messages right now, and their deliveries must finish too.
            await asyncio.wait(loops)
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def recover(self) -> int:
        """Returns how many unfinished sagas it respawned (RUNNING or COMPENSATING, found by SQL).

        Also releases the queue leases a previous process held when it ended, so their
        messages are delivered now rather than after their visibility timeout. Each
        respawned saga re-enqueues the work of its last unit (a no-op where it exists).
        """
        self._recovered = True
        await self.queue_manager.submit_async([Admin("release")])
        # On the loop's thread: store.sql relations share one connection, and running two
        # at once from different threads fails.
        frame = list_sagas(self.event_store, active=True)
        sagas = list(zip(frame["saga_id"], frame["saga_type"], strict=True))
        resumed = 0
        for start in range(0, len(sagas), 64):
            chunk = sagas[start : start + 64]
            spawns = [self._saga_ref(sid, stype) for sid, stype in chunk]
            results = await asyncio.gather(*spawns, return_exceptions=True)
            for (sid, _), result in zip(chunk, results, strict=True):
                if isinstance(result, BaseException):
                    log.error("cannot resume saga %r: %s", sid, result)
                else:
                    resumed += 1
        return resumed

    def sagas(self, status: SagaStatus | str | None = None) -> pd.DataFrame:
        """Returns one row per saga in the store (see ``list_sagas``)."""
        return list_sagas(self.event_store, status=status)

    # -- the loop -------------------------------------------------------------------------------------------

    async def _consume(self, queues: list[str]) -> None:
        loop_task = asyncio.current_task()
        if loop_task is not None:
            self._loops.add(loop_task)
        await self._ensure_recovered()
        qm = self.queue_manager
        wake = asyncio.Event()
        self._wakes.add(wake)
        qm.watch(queues, wake)
        try:
            while not self._stopping:
                wake.clear()
                self._sweep()
                started = 0
                for queue in queues:
                    free = self.max_in_flight - len(self._tasks)
                    if free <= 0:
                        break
                    leases = await qm.dequeue_many_async(
                        queue, min(self.batch_size, free), visibility_timeout=self.visibility_timeout
                    )
                    for lease in leases:
                        self._start(queue, lease)
                    started += len(leases)
                if started or self._stopping:
                    continue
                wait = self.poll_interval
                if len(self._tasks) < self.max_in_flight:
                    due = await qm.next_ready_in_async(queues)
                    if due == 0:
                        continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), wait)
        finally:
            qm.unwatch(queues, wake)
            self._wakes.discard(wake)
            if loop_task is not None:
                self._loops.discard(loop_task)

    def _start(self, queue: str, lease: Lease) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._handle(queue, lease))
        self._tasks.add(task)
        self._deadlines[task] = loop.time() + self.ask_timeout + self.saga_timeout
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._deadlines.pop(task, None)
        self._expired.discard(task)
        for wake in self._wakes:
            wake.set()

    def _sweep(self) -> None:
        """Cancels the deliveries past their deadline (they are nacked as timed out).

        One sweep every half second instead of a timer per ask: thousands of asks a
        second would otherwise keep thousands of timers in the event loop's heap.
        """
        now = asyncio.get_running_loop().time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 0.5
        for task, deadline in list(self._deadlines.items()):
            if deadline <= now and not task.done():
                self._expired.add(task)
                task.cancel()

    async def _ensure_recovered(self) -> None:
        if self._recovered:
            return
        if self._recovery is None:
            self._recovery = asyncio.Lock()
        async with self._recovery:
            if not self._recovered:
                await self.recover()

    # -- deliveries -------------------------------------------------------------------------------------------

    async def _handle(self, queue: str, lease: Lease) -> None:
        qm = self.queue_manager
        try:
            envelope = as_envelope(lease.message)
            if envelope is None:
                raise InvalidInputError(f"not a saga message: {lease.message!r}")
            # The saga acks the delivery with its own queue work, in one transaction ("acked");
            # otherwise (a duplicate, no answer to pass on) it is acked here.
            if queue == COMMANDS_QUEUE:
                outcome = await self._deliver_command(lease, envelope)
            elif queue == TIMEOUTS_QUEUE:
                timeout = SagaTimeout(timeout_id=envelope["timeout_id"])
                key = envelope["dedupe_key"]
                outcome = await self._to_saga(
                    envelope, Delivery("timeout", f"t{lease.id}", (timeout,), dedupe_key=key, ack=lease.id)
                )
            else:
                event = self._decode(envelope["message_type"], envelope["payload"])
                if not isinstance(event, Event):
                    raise InvalidInputError(f"cannot decode the event for saga {envelope['saga_id']!r}: {event!r}")
                outcome = await self._to_saga(envelope, Delivery("event", f"e{lease.id}", (event,), ack=lease.id))
            if outcome != "acked":
                await qm.ack_many_async([lease])
            self.delivered += 1
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task not in self._expired:
                raise
            task.uncancel()  # our own deadline, not a shutdown: a failed delivery
            limit = self.ask_timeout + self.saga_timeout
            await self._nack(lease, queue, TimeoutError(f"no answer within {limit:g} s"))
        except Exception as exc:
            await self._nack(lease, queue, exc)

    async def _nack(self, lease: Lease, queue: str, exc: BaseException) -> None:
        log.debug("delivery of message %d (%s) failed: %s", lease.id, queue, exc)
        try:
            await self.queue_manager.nack_async(lease, exc)
        except Exception:
            log.exception("could not nack message %d of %s", lease.id, queue)

    async def _deliver_command(self, lease: Lease, envelope: SagaEnvelope) -> str:
        """Returns "acked" when the command is done and acked, anything else when it is done; raises for a retry."""
        ref = self.actor_system.lookup(envelope["target"])
        if ref is None or not ref.is_alive:
            raise UndeliverableError(f"no actor named {envelope['target']!r}")
        command = self._decode(envelope["message_type"], envelope["payload"])
        if isinstance(command, UnknownMessage):
            raise UndeliverableError(f"cannot decode {command.message_type}: its class is not found")
        try:
            answer = await ref.ask(command, timeout=None)  # the delivery's deadline covers it (_sweep)
        except CommandRejected as exc:
            failure = SagaCommandFailed(
                target=envelope["target"],
                command_type=short_type(envelope["message_type"]),
                reason=f"rejected: {exc}",
                attempts=lease.attempts,
                dedupe_key=envelope["dedupe_key"],
                rejected=True,
            )
            # The rejection is an answer: ack and tell the saga in one transaction.
            await self.queue_manager.submit_async([Ack([lease.id]), self._notice(envelope, failure)])
            return "acked"
        events = _answer_events(answer)
        if not events:
            return "done"
        key = envelope["dedupe_key"]
        delivery = Delivery("reply", f"c{lease.id}", events, target=envelope["target"], dedupe_key=key, ack=lease.id)
        return str(await self._to_saga(envelope, delivery))

    async def _to_saga(self, envelope: SagaEnvelope, delivery: Delivery) -> Any:
        ref = await self._saga_ref(envelope["saga_id"], envelope["saga_type"])
        return await ref.ask(delivery, timeout=None)

    async def _saga_ref(self, saga_id: str, saga_type: str) -> ActorRef:
        system = self.actor_system
        ref = system.lookup(saga_id)
        if ref is not None and ref.is_alive:
            return ref
        factory = self._factories.get(saga_type)
        if factory is None:
            cls = resolve_class(saga_type)
            if cls is None or not issubclass(cls, Saga):
                raise UndeliverableError(f"saga class {saga_type!r} not found: register it with the coordinator")
            factory = self._factories[saga_type] = self._default_factory(cls)
        try:
            return await system.spawn(saga_id, lambda: factory(saga_id), supervisor=Supervisor.restart(max_restarts=10))
        except ActorNameInUseError:
            found = system.lookup(saga_id)
            if found is None:
                raise
            return found

    def _default_factory(self, saga_class: type[Saga[Any]]) -> SagaFactory:
        store, qm = self.event_store, self.queue_manager

        def build(saga_id: str) -> Saga[Any]:
            return saga_class(persistence_id=saga_id, event_store=store, duraq_manager=qm)

        return build

    def _command_died(self, lease: Lease, reason: str) -> list[tuple[str, Any]]:
        """The dead-letter hook of the commands queue: the saga hears of it, in the same transaction."""
        envelope = as_envelope(lease.message)
        if envelope is None:
            return []
        failure = SagaCommandFailed(
            target=envelope["target"],
            command_type=short_type(envelope["message_type"]),
            reason=reason,
            attempts=lease.attempts,
            dedupe_key=envelope["dedupe_key"],
        )
        message_type, payload = encode_message(failure)
        notice = make_envelope(
            "event", envelope["saga_id"], envelope["saga_type"], message_type=message_type or "", payload=payload
        )
        return [(EVENTS_QUEUE, notice)]

    def _notice(self, envelope: SagaEnvelope, event: Event) -> Enqueue:
        message_type, payload = encode_message(event)
        notice = make_envelope(
            "event", envelope["saga_id"], envelope["saga_type"], message_type=message_type or "", payload=payload
        )
        return enqueue_envelope(EVENTS_QUEUE, notice, None, 0)

    def _decode(self, message_type: str, payload: bytes) -> Any:
        return self.queue_manager.decode(message_type or None, payload, self.event_store.registry)

    def __repr__(self) -> str:
        state = "stopped" if self._stopping else f"{len(self._tasks)} deliveries in flight"
        return f"SagaCoordinator({state}, {self.delivered} delivered)"

    def _repr_html_(self) -> str:
        stats = self.queue_manager.stats()
        stats = stats[stats["queue"].isin([COMMANDS_QUEUE, EVENTS_QUEUE, TIMEOUTS_QUEUE])]
        return f"<div><strong>{html.escape(repr(self))}</strong>{stats.to_html(index=False)}</div>"


class UndeliverableError(EventadorError):
    """A saga message cannot be delivered now (no such actor, an unknown class): it is retried, then dead."""


# -- listing sagas -------------------------------------------------------------------------------------------


def list_sagas(
    store: Any, *, status: SagaStatus | str | Iterable[SagaStatus | str] | None = None, active: bool = False
) -> pd.DataFrame:
    """Returns one row per saga in `store` (or a view of its past): saga_id, saga_type, status, state, updated_at.

    `status` keeps those with that status (or statuses); `active` those RUNNING or
    COMPENSATING. One SQL query over the ``SagaStateSaved`` events; `state` is the
    last saved state as JSON.

    Raises:
        InvalidInputError: an unknown status.
    """
    wanted: list[str] = []
    if status is not None:
        items = [status] if isinstance(status, (str, SagaStatus)) else list(status)
        for item in items:
            try:
                wanted.append(SagaStatus(item.upper() if isinstance(item, str) else item).value)
            except ValueError:
                names = ", ".join(s.value for s in SagaStatus)
                raise InvalidInputError(f"unknown saga status {item!r}; use one of {names}") from None
    if active:
        wanted = [s.value for s in SagaStatus if s.is_active and (not wanted or s.value in wanted)] or ["-"]
    having = ""
    params: list[Any] = []
    if wanted:
        having = "HAVING arg_max(status, version) IN (SELECT unnest(?::VARCHAR[]))"
        params.append(wanted)
    query = f"""
        SELECT stream_id AS saga_id, arg_max(saga_type, version) AS saga_type,
               arg_max(status, version) AS status, arg_max(state, version) AS state,
               max(recorded_at) AS updated_at
        FROM SagaStateSaved GROUP BY stream_id {having} ORDER BY saga_id
    """
    frame: pd.DataFrame = store.sql(query, params or None).df()
    return frame


def _answer_events(answer: Any) -> tuple[Event, ...]:
    if isinstance(answer, Event):
        return (answer,)
    if isinstance(answer, (list, tuple)) and answer and all(isinstance(e, Event) for e in answer):
        return tuple(answer)
    return ()
