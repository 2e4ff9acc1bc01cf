"""ActorRef: the handle through which everything talks to an actor."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from eventador.actors.records import ActorMetrics
from eventador.errors import ActorStoppedError, AskTimeoutError

if TYPE_CHECKING:
    from eventador.actors.cell import ActorCell

__all__ = ["ActorRef"]


class ActorRef:
    """The address of one spawned actor: tell it, ask it, keep it, pass it around.

    A ref stays valid across restarts and passivation (a passivated actor comes back
    on the next message). Once the actor is stopped the ref is dead for good: a new
    actor spawned under the same name gets a new ref. Use a ref from the event loop
    its system runs on; ``tell`` and ``ask`` are not thread-safe.
    """

    __slots__ = ("_cell",)

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell

    @property
    def name(self) -> str:
        """Returns the name the actor was spawned under."""
        return self._cell.name

    @property
    def is_alive(self) -> bool:
        """Returns whether a message can still reach the actor (True while passivated)."""
        return self._cell.is_alive

    def tell(self, message: Any) -> None:
        """Returns at once, after queueing `message`; a stopped actor's messages become dead letters.

        Costs one append to the mailbox; never blocks, never raises for a dead actor.
        """
        cell = self._cell
        # Inlined ActorCell.deliver: this is the hot path.
        if cell.accepting:
            mailbox = cell.mailbox
            if mailbox is None:
                mailbox = cell.mailbox = deque()
            mailbox.append((message, None))
            if cell.task is None:
                cell.wake()  # parked: idle with no task
        else:
            cell.deliver(message, None)

    async def ask(self, message: Any, *, timeout: float | None = 5.0) -> Any:
        """Returns what the actor's ``on_message`` returned for `message`.

        `timeout` is in seconds (None waits forever). A message that timed out is still
        handled when its turn comes; its answer is dropped. Asking yourself from
        inside your own handler waits for the timeout: the actor is busy with you.

        Raises:
            AskTimeoutError: no answer within `timeout` (also a ``TimeoutError``).
            ActorStoppedError: the actor is stopped, or stopped before answering.
            Exception: whatever the handler raised (supervision then deals with the actor).
        """
        cell = self._cell
        loop = cell.loop
        reply: asyncio.Future[Any] = loop.create_future()
        if not cell.deliver(message, reply):
            raise ActorStoppedError(cell.name)
        if timeout is None:
            return await reply
        timer = loop.call_later(timeout, _time_out, reply, cell.name, timeout)
        try:
            return await reply
        finally:
            timer.cancel()

    def metrics(self) -> ActorMetrics:
        """Returns a snapshot of this actor's counters and timings."""
        return self._cell.metrics()

    def __repr__(self) -> str:
        return f"ActorRef({self._cell.name!r}, {self._cell.lifecycle.value})"


def _time_out(reply: asyncio.Future[Any], name: str, timeout: float) -> None:
    if not reply.done():
        reply.set_exception(AskTimeoutError(name, timeout))
