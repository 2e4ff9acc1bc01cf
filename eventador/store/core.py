"""What every part of the event store shares: its fields, its state read in one step, and
the position up to which events are visible (and waiting for it to move).

``EventStore`` (store.py) is built from the parts, each a ``StoreCore``: ``Opening``
(opening.py: recovery, reopening, letting go), ``Committing`` (committing.py: the write
path under the lock), ``Flushing`` (flushing.py: hot tier -> Parquet -> catalog,
compaction), ``Querying`` (querying.py: SQL, live views). A part calls only what it
defines, the core, and (for ``Opening`` and ``Committing``, which flush) ``Flushing``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from eventador.clock import Clock, SystemClock
from eventador.errors import InvalidInputError, ReadOnlyError, StoreClosedError
from eventador.messages import Event, TypeRegistry
from eventador.messages import registry as default_registry
from eventador.store.buffer import HotBuffer
from eventador.store.catalog import SUMMARIES
from eventador.store.reads import READ_BATCH, Reader, StoreState, check_stream_id, type_names
from eventador.store.records import RecordedEvent
from eventador.store.snapshots import SnapshotStore
from eventador.store.subscription import Subscription

if TYPE_CHECKING:
    from eventador.store.catalog import Catalog
    from eventador.store.coldtier import ColdTier
    from eventador.store.lake import LakePublisher
    from eventador.store.live_views import LiveViews
    from eventador.store.lock import DirectoryLock
    from eventador.store.pins import Pins
    from eventador.store.segments import Segment
    from eventador.store.views import SqlViews
    from eventador.store.wal import WriteAheadLog

__all__ = ["DURABILITIES", "Durability", "StoreCore"]

Durability = Literal["fsync", "batch", "none"]
DURABILITIES = ("fsync", "batch", "none")


class StoreCore(Reader):
    """The fields of a store and what every part of it uses; see ``EventStore``."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        durability: Durability,
        read_only: bool,
        clock: Clock | None,
        registry: TypeRegistry | None,
        flush_every: int,
        allow_external: bool,
    ) -> None:
        if durability not in DURABILITIES:
            raise InvalidInputError(f"durability must be one of {DURABILITIES}, got {durability!r}")
        if flush_every < 1:
            raise InvalidInputError(f"flush_every must be at least 1, got {flush_every}")
        self.path = None if path is None else Path(path)
        self.durability: Durability = durability if path is not None else "none"
        self.read_only = read_only
        self.allow_external = allow_external or not read_only
        """Whether ``sql`` may write scratch tables and touch files outside the store (see ``open_store``)."""
        self.clock = clock or SystemClock()
        self.registry = registry or default_registry
        self.flush_every = flush_every
        self._compact_rows = max(2_000_000, flush_every * 4)
        self._trash: list[tuple[float, Path]] = []  # merged-away files, deleted a little later
        self._pins: Pins | None = None  # a reader's hold on the files it reads
        self._heads_of: dict[str, dict[str, int]] = {}  # each open file's stream heads
        self._log_segment = 0  # the newest log segment begun (recorded with each catalog change)
        self._log_required = False  # whether it exists, so that opening must find it
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._sql_lock = threading.RLock()
        self._closed = False
        self._heads: dict[str, int] = {}
        self._checkpoints: dict[str, int] = {}  # each checkpoint's position (written with appends)
        self._flushed_checkpoints: dict[str, int] = {}  # as at the last flush's rotation: all durable
        self._segments: list[Segment] = []
        self._frozen: list[HotBuffer] = []
        self._buffer = HotBuffer(1)
        self._visible = 0
        self._last_recorded_us = 0
        self._retire_after = 0  # the newest WAL segment whose events are all being flushed
        self._wal: WriteAheadLog | None = None
        self._catalog: Catalog | None = None
        self._lockfile: DirectoryLock | None = None
        self._views: SqlViews | None = None
        self._live: LiveViews | None = None  # live SQL views (live_views.py), loaded on first use
        self._cold: ColdTier | None = None  # the data files' copies in object storage (store/coldtier.py)
        self._local_bytes: int | None = None  # the bound of the local copies of evicted files (LakeTarget)
        self._cache_dir: Path | None = None  # where a read-only opener fetches evicted files (never data/)
        self.lake: LakePublisher | None = None
        """The publisher of the store's lake table (``open_store(lake=...)``), else None."""
        self._changed = threading.Condition()
        self._visible_lock = threading.Lock()
        self._thread_waiters = 0  # threads in wait_for_position
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.snapshots = SnapshotStore(None, read_only=read_only)
        """Snapshots of streams: ``save``, ``latest``, ``list``, ``prune``, ``delete``."""

    def _fetcher(self) -> Callable[[Path], None] | None:
        """How an evicted data file of this store is fetched back (None: none ever is)."""
        return self._cold.fetch if self._cold is not None else None

    @property
    def _data_dir(self) -> Path:
        assert self.path is not None
        return self.path / "data"

    @property
    def _wal_dir(self) -> Path:
        assert self.path is not None
        return self.path / "wal"

    @property
    def _summaries_dir(self) -> Path:
        # The uploaded files' summaries, for read-only openers (catalog.ColdSummary).
        assert self.path is not None
        return self.path / SUMMARIES

    @property
    def _pending_dir(self) -> Path:
        # Where a data file waits, complete, until the catalog names it (see _write_segment).
        assert self.path is not None
        return self.path / "pending"

    def stream_version(self, stream_id: str) -> int:
        """The stream's current version: the number of its events that readers see (0 when
        it does not exist). A ``read_stream`` after it finds at least that many: an append
        still waiting for its fsync is not counted until it returns, as it is not read.
        An append's expected version is checked against every append taken, though, those
        in flight too (a conflict with one of them is a ``ConcurrencyError``)."""
        check_stream_id(stream_id)
        self._check_open()
        return self._visible_head(stream_id)

    def _visible_head(self, stream_id: str) -> int:
        """The stream's version as readers see it, without the lock. ``_heads`` counts every
        append taken, for the expected-version checks; only the active buffer's newest rows,
        whose fsync is in flight, can be past what is visible. Read in this order (what is
        visible, the head, the buffer), a head can only be ahead of what this found visible
        by rows of that buffer (a frozen one was made visible, under the lock every read
        takes, before anything else was appended)."""
        visible = self._visible
        head = self._heads.get(stream_id, 0)
        buffer = self._buffer
        if head == 0 or buffer.last_position <= visible:
            return head
        rows = buffer.by_stream.get(stream_id)
        if not rows:
            return head
        seen = bisect.bisect_right(rows, visible - buffer.first_position)  # its visible rows here
        if seen == len(rows):
            return head
        return buffer.versions[rows[seen]] - 1

    def _visible_streams(self) -> int:
        """How many streams readers see (exact when the caller holds the lock): streams whose
        only events are in flight are not counted."""
        buffer, heads = self._buffer, self._heads
        first = max(0, self._visible + 1 - buffer.first_position)
        ids, versions = buffer.stream_ids, buffer.versions
        unseen = sum(1 for row in range(first, len(buffer)) if versions[row] == 1 and ids[row] in heads)
        return len(heads) - unseen

    @property
    def last_position(self) -> int:
        """The position of the newest visible event (0 for an empty store)."""
        return self._visible

    @property
    def fsyncs(self) -> int:
        """fsyncs of the log since the store was opened (0 without a log): appends divided by
        fsyncs tells how well concurrent appends share them. A counter read, no query."""
        return self._wal.syncs if self._wal is not None else 0

    def state(self) -> StoreState:
        """The files, hot buffers and visible position, taken together under the store's lock.

        Part of the store's internal API: what ``bind_views`` and the projections read.
        """
        with self._lock:
            self._check_open()
            return StoreState(tuple(self._segments), (*self._frozen, self._buffer), self._visible)

    @property
    def closed(self) -> bool:
        """True once ``close()`` has run."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise ReadOnlyError(f"{self.path} was opened read_only")

    # -- waiting for new events -------------------------------------------------------

    def _durable(self, position: int) -> None:
        """Events up to `position` are on disk ("fsync" durability): show them and wake readers.
        Called once per fsync round by its leader, so appenders need not take the lock again."""
        self._show(position)
        self._notify()

    def _show(self, position: int) -> None:
        """Make events up to `position` visible; never moves back. Its own small lock: a
        round's leader calls it while another thread may hold the store lock waiting for
        that very round (a flush)."""
        with self._visible_lock:
            if position > self._visible:
                self._visible = position

    def _notify(self) -> None:
        """Wake everyone waiting for new events (threads and asyncio loops)."""
        # Taking the condition's lock on every append would make concurrent writers queue
        # for it: only when a thread waits (it counts itself in before testing, we after writing).
        if self._thread_waiters:
            with self._changed:
                self._changed.notify_all()
        for loop, event in list(self._async_waiters):
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    def wait_for_position(self, position: int, timeout: float | None = None) -> bool:
        """Block until an event at `position` or later is visible; False on timeout."""
        return self._wait_for(position, timeout)

    def _wait_for(self, position: int, timeout: float | None, stop: Callable[[], bool] | None = None) -> bool:
        """Block until `position` is visible, the store closes or `stop()` is true (told by
        ``_wake_threads``); False on timeout."""
        with self._changed:
            self._thread_waiters += 1
            try:
                return self._changed.wait_for(
                    lambda: self._visible >= position or self._closed or (stop is not None and stop()), timeout
                )
            finally:
                self._thread_waiters -= 1

    def _wake_threads(self) -> None:
        """Wake every thread waiting in ``_wait_for`` to test its condition again."""
        with self._changed:
            self._changed.notify_all()

    def subscription(
        self,
        *,
        from_position: int = 1,
        event_types: Iterable[str | type[Event]] | None = None,
        timeout: float | None = None,
        batch_size: int = READ_BATCH,
    ) -> Subscription:
        """Every event from `from_position` on, in position order, for a thread: the past
        first, then live, blocking while it waits (the async twin is ``subscribe``).

        A ``Subscription``: an iterator and a context manager. No event is skipped or
        repeated while others keep appending; it waits for appends without polling. It
        ends when the store closes, when its ``close()`` is called (from any thread), or
        after `timeout` seconds without a new event::

            with store.subscription(event_types=[Deposited]) as events:
                for recorded in events:
                    print(recorded.position, recorded.event)
        """
        self._check_open()
        return Subscription(
            self, from_position=from_position, event_types=event_types, timeout=timeout, batch_size=batch_size
        )

    async def wait_for_position_async(self, position: int) -> bool:
        """Wait, without blocking the event loop, until `position` is visible; False if the store closed first.

        Woken by the append that makes it visible (no polling); cancel the awaiting task to give up.
        """
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        waiter = (loop, wake)
        self._async_waiters.add(waiter)
        try:
            while True:
                wake.clear()
                if self._visible >= position or self._closed:
                    return self._visible >= position
                await wake.wait()
        finally:
            self._async_waiters.discard(waiter)

    async def subscribe(
        self,
        *,
        from_position: int = 1,
        event_types: Iterable[str | type[Event]] | None = None,
        batch_size: int = READ_BATCH,
    ) -> AsyncIterator[RecordedEvent]:
        """Every event from `from_position` on, in position order: the past first, then live.

        No event is skipped or repeated while others keep appending: it reads in
        position ranges up to what is visible, then waits for the next append.
        The iteration ends when the store closes. In a thread: ``subscription``.

        In a coroutine::

            async for recorded in store.subscribe(event_types=[Deposited]):
                print(recorded.position, recorded.event)
        """
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        waiter = (loop, wake)
        self._async_waiters.add(waiter)
        types = type_names(event_types)
        next_position = max(1, from_position)
        try:
            while not self._closed:
                wake.clear()
                visible = self._visible
                if visible >= next_position:
                    upto = min(visible, next_position + batch_size - 1)
                    for recorded in self.read_all(from_position=next_position, to_position=upto, event_types=types):
                        yield recorded
                    next_position = upto + 1
                    continue
                await wake.wait()
        finally:
            self._async_waiters.discard(waiter)
