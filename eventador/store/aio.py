"""Durable appends from many actors of one event loop, committed together.

With ``durability="fsync"`` an append waits for the disk. Actors of one loop hand their
prepared appends here; while one batch is being written and fsynced by a store worker
thread, the next gathers. Each batch costs one thread hand-off, one lock and one fsync,
however many actors' appends it holds, and a conflict fails only its own append.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from typing import TYPE_CHECKING

from eventador.errors import StoreClosedError
from eventador.store.offload import run_blocking

if TYPE_CHECKING:
    from eventador.store.appends import PreparedAppend
    from eventador.store.store import EventStore

__all__ = ["append_in_group"]

_Waiting = list[tuple["PreparedAppend", "asyncio.Future[int]"]]


class _Group:
    """The appends of one loop to one store, waiting for the batch in flight to finish."""

    def __init__(self, store: EventStore, loop: asyncio.AbstractEventLoop) -> None:
        self._store = weakref.ref(store)  # the store's registry of groups must not keep it alive
        self._loop = loop
        self._waiting: _Waiting = []
        self._busy = False

    def submit(self, prepared: PreparedAppend) -> asyncio.Future[int]:
        future: asyncio.Future[int] = self._loop.create_future()
        self._waiting.append((prepared, future))
        if not self._busy:
            self._busy = True
            self._loop.call_soon(self._send)  # at the end of this loop turn: its appends go together
        return future

    def _send(self) -> None:
        batch, self._waiting = self._waiting, []
        store = self._store()
        if not batch or store is None:
            self._busy = False
            self._settle(batch, None, StoreClosedError("the store was closed and collected"))
            return
        flight = run_blocking(store, functools.partial(store._commit_each, [p for p, _ in batch]))
        flight.add_done_callback(functools.partial(self._landed, batch))

    def _landed(self, batch: _Waiting, flight: asyncio.Future[list[int | BaseException]]) -> None:
        if flight.cancelled():
            self._settle(batch, None, asyncio.CancelledError())
        elif flight.exception() is not None:
            self._settle(batch, None, flight.exception())
        else:
            self._settle(batch, flight.result(), None)
        self._send()

    @staticmethod
    def _settle(batch: _Waiting, results: list[int | BaseException] | None, error: BaseException | None) -> None:
        for i, (_, future) in enumerate(batch):
            if future.done():  # its caller was cancelled; the append itself went ahead
                continue
            outcome = error if results is None else results[i]
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)  # type: ignore[arg-type]  # an int when no error


_groups: weakref.WeakKeyDictionary[EventStore, dict[asyncio.AbstractEventLoop, _Group]] = (
    weakref.WeakKeyDictionary()
)


def append_in_group(store: EventStore, prepared: PreparedAppend) -> asyncio.Future[int]:
    """Returns a future of the stream's new version once `prepared` is on disk.

    Must be called from a running loop. Raises nothing itself: a conflict
    (``ConcurrencyError``) or a store failure arrives through the future.
    """
    loop = asyncio.get_running_loop()
    per_loop = _groups.setdefault(store, {})
    group = per_loop.get(loop)
    if group is None:
        for old in [lp for lp in per_loop if lp.is_closed()]:
            del per_loop[old]
        group = per_loop[loop] = _Group(store, loop)
    return group.submit(prepared)
