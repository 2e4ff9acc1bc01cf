"""The runtime of one actor: its mailbox, its task, its lifecycle, and supervision applied.

A cell outlives the instances it runs: a restart swaps the instance and keeps the
mailbox; passivation ends the task but keeps the name, the mailbox and the metrics,
and the next message starts a new task. One task per active actor drains a deque;
a message costs an append, a pop and the handler call, never a new task. An instance
with a batch handler (aggregates) is handed all its queued messages at once.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

from eventador.actors.actor import Actor, ActorContext, BatchHandler
from eventador.actors.records import ActorMetrics
from eventador.actors.ref import ActorRef
from eventador.actors.supervision import Supervisor
from eventador.errors import ActorStoppedError, CommandRejected

if TYPE_CHECKING:
    from eventador.actors.system import ActorSystem

__all__ = ["ActorCell", "Lifecycle"]

log = logging.getLogger("eventador.actors")

# Messages handled back to back before the task yields to the loop, so that an actor
# whose handler never awaits cannot starve every other task.
_BATCH: Final = 256

# Queued messages handed to an instance's batch handler at most at once (aggregates
# write them in one append: more would only make one append bigger).
_MAX_BATCH: Final = 128


class Lifecycle(enum.Enum):
    """Where an actor's cell is in its life (not the actor's own state): shown by ``system.actors()``."""

    STARTING = "starting"
    RUNNING = "running"
    PASSIVATING = "passivating"
    PASSIVATED = "passivated"
    STOPPING = "stopping"
    STOPPED = "stopped"


class _NoMessage:
    """Marks a failure that happened while starting, not on a message."""

    def __repr__(self) -> str:
        return "<no message: failed while starting>"


_NO_MESSAGE: Final = _NoMessage()

Envelope = tuple[Any, "asyncio.Future[Any] | None"]


class ActorCell:
    """Runs one named actor for its whole life; the system and its refs share it."""

    __slots__ = (
        "accepting",
        "busy_batch",
        "busy_reply",
        "consecutive_restarts",
        "context",
        "elapsed",
        "factory",
        "failures",
        "idle_since",
        "instance",
        "lifecycle",
        "loop",
        "mailbox",
        "name",
        "passivate_after",
        "processed",
        "ready",
        "ref",
        "restart_times",
        "restarts",
        "spawn_reply",
        "started_hook",
        "supervisor",
        "system",
        "task",
    )

    def __init__(
        self,
        system: ActorSystem,
        name: str,
        factory: Callable[[], Actor],
        *,
        supervisor: Supervisor,
        passivate_after: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.system = system
        self.name = name
        self.factory = factory
        self.supervisor = supervisor
        self.passivate_after = passivate_after
        self.loop = loop
        self.ref = ActorRef(self)
        self.context = ActorContext(name=name, self_ref=self.ref, system=system)
        # None while the actor waits for mail: an empty deque is 760 B, and idle actors are many.
        self.mailbox: deque[Envelope] | None = deque()
        self.lifecycle = Lifecycle.STARTING
        self.accepting = True
        # None while a running actor waits for mail ("parked"): a task waiting on a future
        # is about 1.4 KB (task, two coroutine frames, the future), and idle actors are many.
        # The next message starts a new one.
        self.task: asyncio.Task[None] | None = None
        # spawn() waits on this for the outcome of the first start.
        self.spawn_reply: asyncio.Future[None] | None = None
        self.instance: Actor | None = None
        self.started_hook = False  # pre_start/post_restart finished: post_stop is owed
        self.ready = False  # start() finished too: the instance can take messages
        self.busy_reply: asyncio.Future[Any] | None = None
        self.busy_batch: list[Envelope] | None = None  # the messages a batch handler is on
        self.restart_times: deque[float] | None = None  # made at the first restart: an empty deque is 760 B
        self.consecutive_restarts = 0
        self.idle_since = 0.0
        self.processed = 0
        self.failures = 0
        self.restarts = 0
        self.elapsed = 0.0

    # -- delivery -------------------------------------------------------------------

    @property
    def is_alive(self) -> bool:
        return self.lifecycle is not Lifecycle.STOPPING and self.lifecycle is not Lifecycle.STOPPED

    def deliver(self, message: Any, reply: asyncio.Future[Any] | None) -> bool:
        """Returns whether `message` was queued; if not, it was recorded as a dead letter."""
        if self.accepting:
            self._mailbox().append((message, reply))
            if self.task is None:
                self.wake()
            return True
        if self.lifecycle is Lifecycle.PASSIVATED and not self.system.is_shut_down:
            self._mailbox().append((message, reply))
            self.activate(None)
            return True
        self.system._record_dead_letter(self.name, message, "stopped")
        return False

    def _mailbox(self) -> deque[Envelope]:
        mailbox = self.mailbox
        if mailbox is None:
            mailbox = self.mailbox = deque()
        return mailbox

    def wake(self) -> None:
        """Returns at once; a parked actor (running, no task) gets a task to drain its mail."""
        if self.task is None and self.lifecycle is Lifecycle.RUNNING:
            self.task = self.loop.create_task(self._run(start=False), name=f"eventador.actor:{self.name}")

    # -- lifecycle ------------------------------------------------------------------

    def activate(self, spawn_reply: asyncio.Future[None] | None) -> None:
        """Returns at once; starts the task that builds an instance and drains the mailbox.

        `spawn_reply` (from spawn) gets the outcome of the start; a reactivation passes None.
        """
        self.lifecycle = Lifecycle.STARTING
        self.accepting = True
        self.spawn_reply = spawn_reply
        if self.passivate_after is not None:
            self.idle_since = self.system.clock.monotonic()
        self.task = self.loop.create_task(self._run(), name=f"eventador.actor:{self.name}")

    async def stop(self) -> None:
        """Returns once the actor is stopped; the message in progress is cancelled.

        Stopping from inside the actor's own handler returns at once: the actor stops
        after that message.
        """
        if self.lifecycle is Lifecycle.STOPPED:
            return
        task = self.task
        parked = task is None and self.lifecycle is Lifecycle.RUNNING
        self._refuse_mail()
        if parked:
            await self._finish()  # post_stop, here: there is no task to cancel
            return
        if task is None or task.done():
            self._finish_stopped()
            return
        if task is asyncio.current_task():
            return
        # A task already cancelled (by passivation, or an earlier stop) is cleaning up;
        # cancelling it again would cut its post_stop short.
        if not task.cancelling():
            task.cancel()
        await asyncio.wait((task,))
        if self.task is task and not self._is_stopped():
            # Cancelled before its first step, the task never ran its cleanup.
            self._finish_stopped()
            self._answer_spawn(None)

    async def passivate(self) -> None:
        """Returns once an idle actor's instance is stopped and its name kept for the next message."""
        task = self.task
        if self.lifecycle is not Lifecycle.RUNNING:
            return
        self.lifecycle = Lifecycle.PASSIVATING
        if task is None:  # parked: nothing runs that must be cancelled
            await self._finish()
            return
        task.cancel()
        await asyncio.wait((task,))

    def is_idle(self, now: float) -> bool:
        """Returns whether the actor waits for mail and has for `passivate_after` seconds."""
        return (
            self.passivate_after is not None
            and self.lifecycle is Lifecycle.RUNNING
            and self.task is None
            and not self.mailbox
            and now - self.idle_since >= self.passivate_after
        )

    def metrics(self) -> ActorMetrics:
        processed = self.processed
        return ActorMetrics(
            name=self.name,
            state=self.lifecycle.value,
            processed=processed,
            failures=self.failures,
            restarts=self.restarts,
            mailbox_depth=len(self.mailbox or ()),
            total_seconds=self.elapsed,
            mean_seconds=self.elapsed / processed if processed else 0.0,
        )

    def _is_stopped(self) -> bool:
        return self.lifecycle is Lifecycle.STOPPED

    def _refuse_mail(self) -> None:
        self.lifecycle = Lifecycle.STOPPING
        self.accepting = False

    # -- the task -------------------------------------------------------------------

    async def _run(self, *, start: bool = True) -> None:
        """The actor's task: starts the instance (not when `start` is False: a parked actor
        woken by mail), drains the mail, then parks (no task) or finishes."""
        startup_error: BaseException | None = None
        parked = False
        try:
            if start:
                try:
                    await self._start_instance(None)
                except Exception as exc:
                    if self.spawn_reply is not None:
                        # A failed spawn registers nothing: the caller gets the error.
                        startup_error = exc
                        return
                    if not await self._on_failure(exc, _NO_MESSAGE):
                        return
                spawn_reply, self.spawn_reply = self.spawn_reply, None
                if spawn_reply is not None and not spawn_reply.done():
                    spawn_reply.set_result(None)
                if self.lifecycle is not Lifecycle.STARTING:
                    return
                self.lifecycle = Lifecycle.RUNNING
            parked = await self._drain()
        except asyncio.CancelledError:
            # stop() or passivate() asked for this (or the loop is closing): clean up below.
            pass
        finally:
            if not parked:
                await self._finish()
                # Only now: spawn's caller may reuse the name as soon as it hears.
                self._answer_spawn(startup_error)

    async def _start_instance(self, error: BaseException | None) -> None:
        self.ready = False
        self.started_hook = False
        instance = self.factory()
        instance._context = self.context
        self.instance = instance
        await _settle(instance.pre_start() if error is None else instance.post_restart(error))
        self.started_hook = True
        start = getattr(instance, "start", None)
        if callable(start):
            await _settle(start())
        self.ready = True

    async def _drain(self) -> bool:
        """Handles the mail until there is none; returns True when the actor parked (idle,
        its task ending) and False when it is stopping."""
        mailbox = self._mailbox()
        instance = self.instance
        if instance is None:
            return False
        handler = instance.on_message
        batched = instance._batch_handler()
        budget = _BATCH
        while True:
            if not mailbox:
                if self.passivate_after is not None:
                    self.idle_since = self.system.clock.monotonic()
                self.mailbox = None  # an idle actor keeps no empty deque
                self.task = None
                return True
            if batched is not None and len(mailbox) > 1:
                if not await self._handle_batch(mailbox, batched) or self.lifecycle is not Lifecycle.RUNNING:
                    return False
                instance = self.instance  # a failure may have restarted it
                if instance is None:
                    return False
                handler = instance.on_message
                batched = instance._batch_handler()
                budget = _BATCH
                await asyncio.sleep(0)  # a batch is many messages: let the others run
                continue
            message, reply = mailbox.popleft()
            self.busy_reply = reply
            began = perf_counter()
            try:
                result = await handler(message)
            except CommandRejected as exc:
                # A business rule said no: that is the answer, not a failure of the actor.
                self.elapsed += perf_counter() - began
                self.processed += 1
                self.busy_reply = None
                if reply is not None and not reply.done():
                    reply.set_exception(exc)
                elif reply is None:
                    log.info("actor %r rejected %r: %s", self.name, message, exc)
            except Exception as exc:
                self.elapsed += perf_counter() - began
                self.processed += 1
                self.busy_reply = None
                if reply is not None and not reply.done():
                    reply.set_exception(exc)
                if not await self._on_failure(exc, message):
                    return False
                instance = self.instance
                if instance is None:
                    return False
                handler = instance.on_message
            else:
                self.elapsed += perf_counter() - began
                self.processed += 1
                self.busy_reply = None
                self.consecutive_restarts = 0
                if reply is not None and not reply.done():
                    reply.set_result(result)
            if self.lifecycle is not Lifecycle.RUNNING:
                return False  # the actor stopped itself
            budget -= 1
            if not budget:
                budget = _BATCH
                await asyncio.sleep(0)

    async def _handle_batch(self, mailbox: deque[Envelope], batched: BatchHandler) -> bool:
        """Hands the queued messages to the instance's batch handler at once; answers each
        as ``_drain`` would. Returns False when the actor is stopping."""
        envelopes = [mailbox.popleft() for _ in range(min(len(mailbox), _MAX_BATCH))]
        self.busy_batch = envelopes
        began = perf_counter()
        try:
            outcomes = await batched([message for message, _ in envelopes])
        except Exception as exc:  # before any message was handled (recovery failed): the first one failed
            outcomes = [(False, exc)]
        self.busy_batch = None
        if not outcomes:
            outcomes = [(False, RuntimeError(f"{type(self.instance).__name__}'s batch handler answered nothing"))]
        handled = envelopes[: len(outcomes)]
        mailbox.extendleft(reversed(envelopes[len(handled) :]))  # not handled: first again, in order
        share = (perf_counter() - began) / len(handled)
        for (message, reply), (ok, value) in zip(handled, outcomes, strict=False):
            self.elapsed += share
            self.processed += 1
            if ok:
                self.consecutive_restarts = 0
                if reply is not None and not reply.done():
                    reply.set_result(value)
                continue
            if reply is not None and not reply.done():
                reply.set_exception(value)
            if isinstance(value, CommandRejected):
                if reply is None:
                    log.info("actor %r rejected %r: %s", self.name, message, value)
                continue
            return await self._on_failure(value, message)  # the batch handler stops at a failure
        return True

    async def _on_failure(self, error: Exception, message: Any) -> bool:
        """Returns whether the actor goes on (resumed or restarted); False: it is stopping."""
        self.failures += 1
        if message is not _NO_MESSAGE:
            # The failure is logged below, with its traceback: one line is enough.
            self.system._record_dead_letter(self.name, message, f"failed: {type(error).__name__}: {error}", warn=False)
        directive = self.supervisor.directive
        if directive == "restart":
            return await self._restart(error, message)
        if directive == "resume" and self.ready:
            log.warning("actor %r failed on %.200r; resuming", self.name, message, exc_info=error)
            return True
        if directive == "escalate":
            self.system._record_failure(self.name, _message_or_none(message), error, "escalated: stopped")
        log.error("actor %r failed on %.200r; stopping", self.name, message, exc_info=error)
        self._refuse_mail()
        return False

    async def _restart(self, error: Exception, message: Any) -> bool:
        supervisor = self.supervisor
        history = self.restart_times
        if history is None:
            history = self.restart_times = deque()
        while True:
            now = self.system.clock.monotonic()
            while history and now - history[0] >= supervisor.within:
                history.popleft()
            if len(history) >= supervisor.max_restarts:
                outcome = f"gave up after {supervisor.max_restarts} restarts within {supervisor.within:g} s: stopped"
                self.system._record_failure(self.name, _message_or_none(message), error, outcome)
                log.error("actor %r failed on %.200r; %s", self.name, message, outcome, exc_info=error)
                self._refuse_mail()
                return False
            history.append(now)
            self.restarts += 1
            self.consecutive_restarts += 1
            log.warning(
                "actor %r failed on %.200r; restarting (%d of %d within %g s)",
                self.name,
                message,
                len(history),
                supervisor.max_restarts,
                supervisor.within,
                exc_info=error,
            )
            await self._retire_instance(error)
            delay = supervisor.backoff_delay(self.consecutive_restarts)
            if delay > 0:
                await self.system._sleep(delay)
            try:
                await self._start_instance(error)
            except Exception as exc:
                self.failures += 1
                error, message = exc, _NO_MESSAGE
            else:
                return True

    async def _retire_instance(self, error: Exception) -> None:
        instance, self.instance = self.instance, None
        self.ready = False
        if instance is not None and self.started_hook:
            self.started_hook = False
            try:
                await _settle(instance.pre_restart(error))
            except Exception:
                log.exception("pre_restart of actor %r raised; restarting anyway", self.name)

    async def _finish(self) -> None:
        if self.lifecycle is not Lifecycle.PASSIVATING:
            self._refuse_mail()
            self._fail_pending()
        instance, self.instance = self.instance, None
        self.ready = False
        if instance is not None and self.started_hook:
            self.started_hook = False
            try:
                await _settle(instance.post_stop())
            except Exception:
                log.exception("post_stop of actor %r raised", self.name)
        if self.lifecycle is Lifecycle.PASSIVATING:
            self.lifecycle = Lifecycle.PASSIVATED
            self.accepting = False
            log.debug("actor %r passivated", self.name)
            if self.mailbox:
                # Mail that came while post_stop ran: it must not wait for another message.
                self.activate(None)
            return
        self._finish_stopped()

    def _finish_stopped(self) -> None:
        self._refuse_mail()
        self._fail_pending()
        self.lifecycle = Lifecycle.STOPPED
        self.system._forget(self)

    def _answer_spawn(self, error: BaseException | None) -> None:
        spawn_reply, self.spawn_reply = self.spawn_reply, None
        if spawn_reply is not None and not spawn_reply.done():
            spawn_reply.set_exception(error or ActorStoppedError(self.name))

    def _fail_pending(self) -> None:
        busy, self.busy_reply = self.busy_reply, None
        if busy is not None and not busy.done():
            busy.set_exception(ActorStoppedError(self.name))
        batch, self.busy_batch = self.busy_batch, None
        for _, reply in batch or ():
            if reply is not None and not reply.done():
                reply.set_exception(ActorStoppedError(self.name))
        mailbox = self.mailbox
        while mailbox:
            message, reply = mailbox.popleft()
            self.system._record_dead_letter(self.name, message, "stopped")
            if reply is not None and not reply.done():
                reply.set_exception(ActorStoppedError(self.name))


def _message_or_none(message: Any) -> Any:
    return None if message is _NO_MESSAGE else message


async def _settle(result: Awaitable[None] | None) -> None:
    """Awaits what a hook returned, so hooks may be plain or async methods."""
    if result is not None and inspect.isawaitable(result):
        await result
