"""ActorSystem: the registry of named actors, their dead letters, failures and metrics.

Everything an actor system knows lives on the instance, never in module globals, so
re-running a notebook cell that builds a new system starts from nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from html import escape
from types import TracebackType
from typing import TYPE_CHECKING, Any

from eventador.actors.actor import Actor
from eventador.actors.cell import ActorCell, Lifecycle
from eventador.actors.records import ActorMetrics, DeadLetter, Failure
from eventador.actors.ref import ActorRef
from eventador.actors.supervision import Supervisor
from eventador.clock import Clock, SystemClock
from eventador.errors import ActorError, ActorNameInUseError, ActorNotFoundError, InvalidInputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ActorSystem", "LocalActorSystem"]

log = logging.getLogger("eventador.actors")

_METRIC_COLUMNS = (
    "state",
    "processed",
    "failures",
    "restarts",
    "mailbox_depth",
    "total_seconds",
    "mean_seconds",
)


_DEFAULT_SUPERVISOR = Supervisor.restart()  # frozen: one shared by every actor that takes the default


class ActorSystem:
    """Returns a new, empty actor system; actors run as tasks on the loop that spawns them.

    - `clock` reads the time for dead letters, failures, restart windows and idleness
      (a ``ManualClock`` makes them deterministic).
    - `sleep` waits out restart backoffs (default ``asyncio.sleep``); tests pass an
      async function that records the delay and returns at once.
    - `passivation_interval`: how often (real seconds) a background check stops actors
      idle past their ``passivate_after``; None leaves it to ``passivate_idle()``.
    - `history_limit`: how many dead letters and failures are kept (oldest dropped).

    Use it with ``async with`` so every actor is stopped on the way out. It works under
    ``asyncio.run`` and in an already-running loop (Jupyter's top-level ``await``); it
    binds to the loop of its first ``spawn``.

    >>> import asyncio
    >>> from eventador.actors import Actor
    >>> class Doubler(Actor):
    ...     async def on_message(self, message: Any) -> Any:
    ...         return message * 2
    >>> async def main() -> Any:
    ...     async with ActorSystem() as system:
    ...         doubler = await system.spawn("doubler", Doubler)
    ...         return await doubler.ask(21)
    >>> asyncio.run(main())
    42
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        passivation_interval: float | None = 1.0,
        history_limit: int = 1000,
    ) -> None:
        if passivation_interval is not None and passivation_interval <= 0:
            raise InvalidInputError(
                f"passivation_interval must be positive seconds or None, got {passivation_interval}"
            )
        self.clock: Clock = clock or SystemClock()
        self._sleep: Callable[[float], Awaitable[None]] = sleep or asyncio.sleep
        self._passivation_interval = passivation_interval
        self.dead_letters: deque[DeadLetter] = deque(maxlen=history_limit)
        """Messages that reached no handler, oldest first (see ``DeadLetter.reason``)."""
        self.failures: deque[Failure] = deque(maxlen=history_limit)
        """Failures no supervisor absorbed: escalations and restart limits given up on."""
        self._cells: dict[str, ActorCell] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checker: asyncio.Task[None] | None = None
        self._shut_down = False

    # -- actors ---------------------------------------------------------------------

    async def spawn(
        self,
        name: str,
        factory: Callable[[], Actor],
        *,
        supervisor: Supervisor | None = None,
        passivate_after: float | None = None,
    ) -> ActorRef:
        """Returns the ref of a new actor built by `factory`, once it has started.

        `factory` takes no arguments (an ``Actor`` subclass will do); each restart and
        each reactivation calls it again. Spawn returns after ``pre_start()`` and, if
        the instance has one, ``start()`` (persistent actors recover there).
        `supervisor` defaults to ``Supervisor.restart()``. With `passivate_after`
        (seconds idle, by the system's clock) an idle actor is stopped quietly and
        rebuilt by its next message.

        Raises:
            ActorNameInUseError: a running or passivated actor has this name.
            ActorError: the system is shut down, or runs on another event loop.
            InvalidInputError: `passivate_after` is not a positive number.
            Exception: whatever the factory, ``pre_start`` or ``start`` raised; no
                actor is registered then.
        """
        if passivate_after is not None and passivate_after <= 0:
            raise InvalidInputError(f"passivate_after must be positive seconds or None, got {passivate_after}")
        loop = self._bind_loop()
        if self._shut_down:
            raise ActorError("this ActorSystem is shut down; create a new one")
        if name in self._cells:
            raise ActorNameInUseError(name)
        cell = ActorCell(
            self,
            name,
            factory,
            supervisor=supervisor or _DEFAULT_SUPERVISOR,
            passivate_after=passivate_after,
            loop=loop,
        )
        self._cells[name] = cell
        started: asyncio.Future[None] = loop.create_future()
        cell.activate(started)
        if passivate_after is not None:
            self._start_checker(loop)
        await started
        return cell.ref

    def lookup(self, name: str) -> ActorRef | None:
        """Returns the ref of the running or passivated actor called `name`, or None."""
        cell = self._cells.get(name)
        return cell.ref if cell is not None else None

    def tell(self, name: str, message: Any) -> None:
        """Returns at once; sends `message` to the actor called `name`, or records a dead letter."""
        cell = self._cells.get(name)
        if cell is None:
            self._record_dead_letter(name, message, "unknown actor")
            return
        cell.ref.tell(message)

    async def ask(self, name: str, message: Any, *, timeout: float | None = 5.0) -> Any:
        """Returns the answer of the actor called `name` to `message` (see ``ActorRef.ask``).

        Raises:
            ActorNotFoundError: no running or passivated actor has that name.
        """
        cell = self._cells.get(name)
        if cell is None:
            self._record_dead_letter(name, message, "unknown actor")
            raise ActorNotFoundError(name)
        return await cell.ref.ask(message, timeout=timeout)

    async def stop(self, target: ActorRef | str) -> None:
        """Returns once the actor has stopped: post_stop ran, waiting asks failed.

        The message in progress is cancelled (its ask fails with ``ActorStoppedError``);
        messages still in the mailbox become dead letters. Stopping a stopped actor does
        nothing; an actor may stop itself from its handler and finishes that message.

        Raises:
            ActorNotFoundError: `target` is a name no actor has.
        """
        if isinstance(target, ActorRef):
            cell = target._cell
        else:
            found = self._cells.get(target)
            if found is None:
                raise ActorNotFoundError(target)
            cell = found
        await cell.stop()

    async def passivate_idle(self) -> list[str]:
        """Returns the names of the actors it passivated: those idle past their ``passivate_after``.

        The background check calls this every ``passivation_interval``; call it
        yourself to decide when (with a ``ManualClock``, after ``clock.advance``).
        """
        now = self.clock.monotonic()
        idle = [cell for cell in self._cells.values() if cell.is_idle(now)]
        if idle:
            await asyncio.gather(*(cell.passivate() for cell in idle))
        return [cell.name for cell in idle]

    async def shutdown(self) -> None:
        """Returns once every actor is stopped: post_stop hooks ran, pending asks failed.

        Afterwards ``spawn`` raises ``ActorError`` and messages become dead letters.
        Calling it again does nothing.
        """
        self._shut_down = True
        checker, self._checker = self._checker, None
        if checker is not None and checker is not asyncio.current_task():
            checker.cancel()
            await asyncio.wait((checker,))
        current = asyncio.current_task()
        cells = list(self._cells.values())
        for cell in cells:
            if cell.task is current:
                # Called from an actor's own handler: that actor stops after this message.
                await cell.stop()
        others = [cell for cell in cells if cell.task is not current]
        if others:
            await asyncio.gather(*(cell.stop() for cell in others))

    @property
    def is_shut_down(self) -> bool:
        """Returns whether ``shutdown()`` was called."""
        return self._shut_down

    async def __aenter__(self) -> ActorSystem:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.shutdown()

    # -- reports --------------------------------------------------------------------

    def metrics(self) -> pd.DataFrame:
        """Returns one row per running or passivated actor (index: name), in spawn order.

        Columns: state, processed, failures, restarts, mailbox_depth, total_seconds,
        mean_seconds (see ``ActorMetrics``). Imports pandas on first use.
        """
        import pandas as pd

        rows = self._actor_metrics()
        return pd.DataFrame(
            {
                "state": pd.Series([m.state for m in rows], dtype=object),
                "processed": pd.Series([m.processed for m in rows], dtype="int64"),
                "failures": pd.Series([m.failures for m in rows], dtype="int64"),
                "restarts": pd.Series([m.restarts for m in rows], dtype="int64"),
                "mailbox_depth": pd.Series([m.mailbox_depth for m in rows], dtype="int64"),
                "total_seconds": pd.Series([m.total_seconds for m in rows], dtype="float64"),
                "mean_seconds": pd.Series([m.mean_seconds for m in rows], dtype="float64"),
            },
            columns=list(_METRIC_COLUMNS),
        ).set_axis(pd.Index([m.name for m in rows], name="name", dtype=object))

    def _actor_metrics(self) -> list[ActorMetrics]:
        return [cell.metrics() for cell in self._cells.values()]

    def __repr__(self) -> str:
        passivated = sum(1 for cell in self._cells.values() if cell.lifecycle is Lifecycle.PASSIVATED)
        status = ", shut down" if self._shut_down else ""
        return (
            f"ActorSystem({len(self._cells)} actors, {passivated} passivated, "
            f"{len(self.dead_letters)} dead letters, {len(self.failures)} failures{status})"
        )

    def _repr_html_(self) -> str:
        header = (
            "<tr><th>name</th><th>state</th><th>processed</th><th>failures</th>"
            "<th>restarts</th><th>mailbox</th><th>mean µs</th></tr>"
        )
        rows = "".join(
            f"<tr><td>{escape(m.name)}</td><td>{m.state}</td><td>{m.processed}</td>"
            f"<td>{m.failures}</td><td>{m.restarts}</td><td>{m.mailbox_depth}</td>"
            f"<td>{m.mean_seconds * 1e6:.1f}</td></tr>"
            for m in self._actor_metrics()
        )
        return (
            f"<div><strong>{escape(repr(self))}</strong>"
            f"<table><thead>{header}</thead><tbody>{rows}</tbody></table></div>"
        )

    # -- for the cells and actors of this package -----------------------------------

    def _record_dead_letter(self, recipient: str, message: object, reason: str, *, warn: bool = True) -> None:
        self.dead_letters.append(DeadLetter(recipient, message, reason, self.clock.now()))
        if warn:
            log.warning("dead letter for actor %r (%s): %.200r", recipient, reason, message)

    def _record_failure(self, actor: str, message: object, error: BaseException, outcome: str) -> None:
        self.failures.append(Failure(actor, message, error, outcome, self.clock.now()))

    def _forget(self, cell: ActorCell) -> None:
        if self._cells.get(cell.name) is cell:
            del self._cells[cell.name]

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Rebinding is safe only when nothing runs on the old loop any more.
            if self._loop is not None and not self._loop.is_closed() and self._cells:
                raise ActorError("this ActorSystem runs on another event loop; create one ActorSystem per loop")
            self._loop = loop
        return loop

    def _start_checker(self, loop: asyncio.AbstractEventLoop) -> None:
        interval = self._passivation_interval
        if interval is None or self._checker is not None:
            return
        self._checker = loop.create_task(self._check_idle(interval), name="eventador.actors:passivation")

    async def _check_idle(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.passivate_idle()
            except Exception:
                log.exception("passivation check failed; trying again in %g s", interval)


LocalActorSystem = ActorSystem
"""``ActorSystem`` under the name eventador for Dart gives it."""
