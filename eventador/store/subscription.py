"""A blocking subscription to the store's events, for threads: the past first, then live.

``store.subscription(...)`` gives a ``Subscription``, an iterator and a context manager.
It reads in position ranges up to what is visible, then sleeps on the store's condition
until an append makes more visible (no polling), so no event is skipped or repeated
while others keep appending. It ends when the store closes, when ``close()`` is called
(from any thread), or after `timeout` seconds without a new event.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from eventador.errors import StoreClosedError
from eventador.messages import Event
from eventador.store.reads import READ_BATCH, type_names
from eventador.store.records import RecordedEvent

if TYPE_CHECKING:
    from eventador.store.core import StoreCore

__all__ = ["Subscription"]


class Subscription:
    """Every event from `from_position` on, in position order, as a blocking iterator.

    ::

        with store.subscription(event_types=[Deposited]) as events:
            for recorded in events:  # waits for new events; ends when closed
                print(recorded.position, recorded.event)

    ``close()`` (from any thread) or the store's closing ends the iteration at once;
    `timeout`: it also ends after that many seconds without a new event. ``position``
    is where a new subscription would go on from, skipping and repeating nothing.
    """

    def __init__(
        self,
        store: StoreCore,
        *,
        from_position: int = 1,
        event_types: Iterable[str | type[Event]] | None = None,
        timeout: float | None = None,
        batch_size: int = READ_BATCH,
    ) -> None:
        self._store = store
        self._types = type_names(event_types)
        self._timeout = timeout
        self._batch_size = max(1, batch_size)
        self._read_upto = max(1, from_position) - 1  # the last position read
        self._pending: collections.deque[RecordedEvent] = collections.deque()
        self._closed = threading.Event()

    @property
    def position(self) -> int:
        """The position a new subscription would start from to go on where this one is."""
        return self._pending[0].position if self._pending else self._read_upto + 1

    @property
    def closed(self) -> bool:
        """True once ``close()`` has run."""
        return self._closed.is_set()

    def close(self) -> None:
        """End the iteration, also one waiting in another thread (it wakes at once). Idempotent."""
        self._closed.set()
        self._store._wake_threads()

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> RecordedEvent:
        store = self._store
        while not self._pending:
            if self._closed.is_set() or store.closed:
                raise StopIteration
            visible = store.last_position
            if visible > self._read_upto:
                upto = min(visible, self._read_upto + self._batch_size)
                try:
                    for batch in store.read_batches(
                        from_position=self._read_upto + 1, to_position=upto, event_types=self._types
                    ):
                        self._pending.extend(batch)
                except StoreClosedError:
                    raise StopIteration from None
                self._read_upto = upto
            elif not store._wait_for(self._read_upto + 1, self._timeout, self._closed.is_set):
                raise StopIteration  # timed out
        return self._pending.popleft()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"at position {self.position}"
        return f"Subscription({state})"
