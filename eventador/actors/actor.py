"""The Actor base class and the context the system hands each running instance."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from eventador.errors import ActorError

if TYPE_CHECKING:
    from eventador.actors.ref import ActorRef
    from eventador.actors.system import ActorSystem

__all__ = ["Actor", "ActorContext", "BatchHandler", "Outcome"]

log = logging.getLogger("eventador.actors")

Outcome: TypeAlias = tuple[bool, Any]
"""What handling one message came to: ``(True, answer)`` or ``(False, the exception)``."""

BatchHandler: TypeAlias = Callable[[list[Any]], Awaitable[list[Outcome]]]


@dataclass(frozen=True, slots=True)
class ActorContext:
    """Where a running actor lives: its name, its own ref, and its system."""

    name: str
    self_ref: ActorRef
    system: ActorSystem


class Actor:
    """Subclass this and override ``on_message``; the system calls it one message at a time.

    Every hook may be a plain or an ``async`` method. On spawn the system calls the
    factory, then ``pre_start()``, then ``start()`` if the instance has one (persistent
    actors recover there), and only then the first message; messages sent meanwhile
    wait in the mailbox in order. A restart calls ``pre_restart(error)`` on the old
    instance (by default: ``post_stop()``), the factory again, then
    ``post_restart(error)`` on the new one (by default: ``pre_start()``) and ``start()``.
    ``post_stop()`` runs once for every instance whose ``pre_start`` (or
    ``post_restart``) finished.

    From ``pre_start`` on, ``self.context`` (or its shortcuts ``self.self_ref`` and
    ``self.system``) lets the actor message itself and others; in ``__init__`` it is
    not there yet.

    >>> import asyncio
    >>> from eventador.actors import ActorSystem
    >>> class Greeter(Actor):
    ...     async def on_message(self, message: Any) -> str:
    ...         return f"hello, {message}"
    >>> async def main() -> str:
    ...     async with ActorSystem() as system:
    ...         greeter = await system.spawn("greeter", Greeter)
    ...         return await greeter.ask("ada")
    >>> asyncio.run(main())
    'hello, ada'
    """

    # Set by the system before pre_start; a class default, so subclasses need not call
    # super().__init__().
    _context: ActorContext | None = None

    @property
    def context(self) -> ActorContext:
        """Returns this actor's context (name, own ref, system).

        Raises:
            ActorError: the instance is not (yet) run by an ActorSystem, e.g. in ``__init__``.
        """
        if self._context is None:
            raise ActorError(
                f"{type(self).__name__} is not running in an ActorSystem yet: "
                "use self.context from pre_start() on, not in __init__"
            )
        return self._context

    @property
    def self_ref(self) -> ActorRef:
        """Returns the ref of this actor, to hand to others so they can answer."""
        return self.context.self_ref

    @property
    def system(self) -> ActorSystem:
        """Returns the system this actor runs in, to spawn, look up or stop others."""
        return self.context.system

    async def on_message(self, message: Any) -> Any:
        """Returns the answer to `message` (what ``ask`` gets); by default calls ``unhandled``."""
        self.unhandled(message)
        return None

    def _batch_handler(self) -> BatchHandler | None:
        """The handler of several queued messages at once, or None (one at a time).

        Given messages in mailbox order, it handles them one after another as
        ``on_message`` would and returns an outcome for each message of a prefix of
        them: ``(True, answer)`` or ``(False, exception)``. It stops after a failure
        that is not a ``CommandRejected``; the messages it returned no outcome for go
        back to the mailbox. Aggregates use it to write a whole queue of commands in
        one append.
        """
        return None

    def unhandled(self, message: Any) -> None:
        """Returns nothing; records `message` as a dead letter with reason "unhandled".

        Call it for messages this actor does not understand, so they show up in
        ``system.dead_letters`` and the log instead of vanishing.
        """
        context = self._context
        if context is None:
            log.warning("%s does not handle %.200r", type(self).__name__, message)
            return
        context.system._record_dead_letter(context.name, message, "unhandled")

    def pre_start(self) -> Awaitable[None] | None:
        """Returns nothing (or an awaitable); runs before the first message."""
        return None

    def post_stop(self) -> Awaitable[None] | None:
        """Returns nothing (or an awaitable); runs once the instance is done for good."""
        return None

    def pre_restart(self, error: BaseException) -> Awaitable[None] | None:
        """Returns nothing (or an awaitable); runs on the failed instance before it is replaced."""
        return self.post_stop()

    def post_restart(self, error: BaseException) -> Awaitable[None] | None:
        """Returns nothing (or an awaitable); runs on the new instance in place of ``pre_start``."""
        return self.pre_start()
