"""Python projections: a read model folded from events by a handler, as in eventador for Dart.

    class Totals(ev.Projection[dict[str, int]]):
        projection_id = "totals"
        interested_event_types = [Deposited]

        def __init__(self) -> None:
            self._totals: dict[str, int] = {}

        @property
        def read_model(self) -> dict[str, int]:
            return self._totals

        def handle(self, event: ev.Event) -> bool:
            self._totals[event.account_id] = self._totals.get(event.account_id, 0) + event.amount
            return True

        def reset(self) -> None:
            self._totals = {}

A ``ProjectionRunner`` feeds it. Only the interested types are read and decoded
(``read_all(event_types=...)`` filters before decoding). Any method may be
``async def``.

Where the read model lives, and what a restart does:

- ``persistent = False`` (the default): the read model is in memory. On start the
  runner calls ``reset()`` and replays from position 1; the checkpoint row in the
  catalog (``projection_checkpoints``) says how far it got, for ``status()`` and
  ``eventador projection list``.
- ``persistent = True``: the projection stores its read model itself. The runner
  resumes from ``get_checkpoint()``, and after each batch calls
  ``update_checkpoint(position)``: save the read model and `position` together
  (one transaction, one file replace) there, so a crash never separates them.
  The default ``get_checkpoint`` returns the runner's checkpoint from the catalog,
  which is right only for a read model that is saved on every ``update_checkpoint``.

As of a past point: ``SqlProjection.as_of`` builds a SQL read model in a scratch
database. A Python projection has no ``as_of``: only its own code knows how to make a
fresh instance (constructor arguments), whether that instance would write to the same
place as the live one (``persistent``), and whether ``handle`` needs an event loop.
Replay into a fresh instance yourself; the past view reads only the interested types:

    totals = Totals()
    for recorded in store.as_of(when).read_all(event_types=Totals.interested_event_types):
        totals.handle_recorded(recorded)
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from eventador.messages import Event

if TYPE_CHECKING:
    from eventador.projections.policies import ErrorPolicy
    from eventador.store.records import RecordedEvent

__all__ = ["Projection"]

T = TypeVar("T")


class Projection(abc.ABC, Generic[T]):
    """A read model of type `T`, folded from events one at a time (``Projection<T>`` in eventador for Dart).

    Subclasses give ``projection_id``, ``read_model``, ``handle`` and ``reset``;
    ``interested_event_types`` (classes or type names; empty: every event),
    ``persistent`` and ``on_error`` are optional class attributes.
    """

    projection_id: str
    """The projection's name: unique among a store's projections."""

    interested_event_types: ClassVar[Sequence[type[Event] | str]] = ()
    """Only these event types are read, decoded and handed to ``handle``; empty: all."""

    persistent: ClassVar[bool] = False
    """True: the read model persists itself (see the module docs); False: rebuilt on every start."""

    on_error: ErrorPolicy = "stop"
    """What the runner does when ``handle`` raises: "stop", "skip", "retry" or a ``Retry``."""

    kind: ClassVar[str] = "python"

    _checkpoint: int = 0

    @property
    @abc.abstractmethod
    def read_model(self) -> T:
        """The current read model."""

    @abc.abstractmethod
    def handle(self, event: Event) -> bool | Awaitable[bool]:
        """Apply one event; True if it changed the read model (counted as handled)."""

    def handle_recorded(self, recorded: RecordedEvent) -> bool | Awaitable[bool]:
        """Apply one event with its envelope (position, stream, times); by default ``handle(recorded.event)``.

        Override this instead of ``handle`` to use ``recorded.recorded_at`` or ``recorded.stream_id``.
        """
        return self.handle(recorded.event)

    @abc.abstractmethod
    def reset(self) -> Awaitable[None] | None:
        """Empty the read model (before a replay from the first event)."""

    def rebuild(self) -> Awaitable[None] | None:
        """Prepare for a replay of every event; by default ``reset()``. The runner then replays."""
        return self.reset()

    def get_checkpoint(self) -> int | Awaitable[int]:
        """The position the read model reflects: every event at or below it is applied."""
        return self._checkpoint

    def update_checkpoint(self, position: int) -> Awaitable[None] | None:
        """Called by the runner after every event up to `position` was handled."""
        self._checkpoint = position
        return None

    def __repr__(self) -> str:
        name = getattr(self, "projection_id", "?")
        return f"{type(self).__name__}(projection_id={name!r}, checkpoint={self._checkpoint})"
