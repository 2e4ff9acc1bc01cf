"""Persistent actors: actors whose state is the fold of their own events.

A ``PersistentActor`` keeps its state as events in one stream of an event store
(its ``persistence_id``): ``start()`` recovers it (the newest usable snapshot, then
the later events in one read), ``persist_events`` appends with optimistic
concurrency and applies what was stored. ``eventador.aggregates.root.AggregateRoot``
builds on it; ``eventador.aggregates.recovery`` holds the loading both share with the
``Repository``.

Blocking store calls: on a store on disk with ``durability="fsync"`` appends run in
a pool of threads, so that appends from many actors overlap and share one fsync
(the store's group commit) while the event loop serves other actors. Recovery
reads and snapshot writes of stores on disk run in the same pool. Everything else
(in-memory stores, ``"batch"`` and ``"none"`` durability) runs inline: a thread hop
costs more than those appends.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import warnings
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from eventador.actors import Actor
from eventador.aggregates.recovery import NO_EVENTS, Loaded, as_events, load_stream, warn_unusable
from eventador.aggregates.snapshots import SnapshotConfig, SnapshotWarning, encode_snapshot
from eventador.errors import InvalidInputError, SerializationError
from eventador.messages import Event
from eventador.store import EventStore
from eventador.store.aio import append_in_group, run_blocking
from eventador.store.cache import NotInMemory, memory_only
from eventador.store.reads import Replay
from eventador.store.snapshots import Snapshot

if TYPE_CHECKING:
    from eventador.aggregates.root import AggregateRoot as AggregateRoot  # the old place, re-exported

__all__ = ["PersistentActor"]

T = TypeVar("T")

_DEFAULT_CONFIG = SnapshotConfig()


async def _load_off_loop(store: EventStore, load: Callable[[], Loaded]) -> Loaded:
    """`load()` right here when memory holds all it reads (the row-group cache and the
    snapshot index), else by a store worker thread: the hand-off costs more than a
    cached recovery of a snapshot and a few events."""
    if _on_disk(store):
        try:
            with memory_only():
                return load()
        except NotInMemory:
            pass
    return await _off_loop(store, _on_disk(store), load)


def _on_disk(store: EventStore) -> bool:
    return getattr(store, "path", None) is not None


def _appends_block(store: EventStore) -> bool:
    return _on_disk(store) and getattr(store, "durability", None) == "fsync"


async def _off_loop(store: EventStore, blocking: bool, call: Callable[[], T]) -> T:
    """`call()`, by one of the store's worker threads when `blocking`, else right here."""
    if not blocking:
        return call()
    return await run_blocking(store, call)


async def _settle(value: Any) -> Any:
    """Awaits `value` if a hook returned an awaitable, so hooks may be plain or async."""
    if inspect.isawaitable(value):
        return await value
    return value



# -- persistent actors -----------------------------------------------------------------------


class PersistentActor(Actor):
    """An actor whose state survives restarts: every change is an event in its own stream.

    Override ``command_handler`` (decide, then ``await self.persist_event(...)``) and
    ``event_handler`` (apply one event to the actor's fields; called after each
    persist and for every event on recovery). For snapshots, also override
    ``get_snapshot_state`` and ``on_snapshot``.

    Spawned in an ``ActorSystem``, ``start()`` runs before the first message and
    messages sent meanwhile wait; standalone, the first ``on_message`` runs it.
    ``persist_events`` appends with ``expected_version=sequence_number``, so a second
    incarnation of the same id cannot interleave: the loser gets ``ConcurrencyError``
    and catches up from the store before its next message.

    Class attributes: ``aggregate_type`` (recorded as the stream type of every append;
    default the class name), ``snapshot_config`` (a default for instances),
    ``snapshot_version`` (bump it to retire snapshots taken by older code).

    >>> import asyncio, eventador as ev
    >>> class Incremented(ev.Event, event_type="doc.Incremented"):
    ...     by: int
    >>> class Counter(ev.PersistentActor):
    ...     value = 0
    ...     async def command_handler(self, command: int) -> int:
    ...         await self.persist_event(Incremented(by=command))
    ...         return self.value
    ...     def event_handler(self, event: ev.Event) -> None:
    ...         if isinstance(event, Incremented):
    ...             self.value += event.by
    >>> store = ev.open_store()
    >>> counter = Counter(persistence_id="counter-1", event_store=store)
    >>> asyncio.run(counter.on_message(5)), asyncio.run(counter.on_message(3))
    (5, 8)
    >>> again = Counter(persistence_id="counter-1", event_store=store)
    >>> asyncio.run(again.start()); again.value, again.sequence_number
    (8, 2)
    """

    aggregate_type: ClassVar[str] = "PersistentActor"
    snapshot_version: ClassVar[int] = 1
    snapshot_config: SnapshotConfig | None = None

    # Class-level defaults: an idle instance stores only what differs from them.
    _sequence_number: int = 0
    _recovered: bool = False
    _stale: bool = False
    _recovery: asyncio.Future[None] | None = None
    _since_snapshot: int = 0
    _last_snapshot_at: datetime | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "aggregate_type" not in cls.__dict__:
            cls.aggregate_type = cls.__name__

    def __init__(
        self, *, persistence_id: str, event_store: EventStore, snapshot_config: SnapshotConfig | None = None
    ) -> None:
        if not isinstance(persistence_id, str) or not persistence_id:
            raise InvalidInputError(f"persistence_id must be a non-empty str, got {persistence_id!r}")
        self.persistence_id = persistence_id
        self.event_store = event_store
        if snapshot_config is not None:
            if not isinstance(snapshot_config, SnapshotConfig):
                raise InvalidInputError(f"snapshot_config must be an ev.SnapshotConfig, got {snapshot_config!r}")
            self.snapshot_config = snapshot_config
        if self.snapshot_config is not None and not self._snapshots_supported():
            raise InvalidInputError(
                f"{type(self).__name__} has a snapshot_config but does not override "
                "get_snapshot_state() and on_snapshot(); define both, or drop the config"
            )

    # -- the hooks a subclass overrides -------------------------------------------------

    async def command_handler(self, command: Any) -> Any:
        """Returns the answer to `command` (what ``ask`` gets); by default calls ``unhandled``."""
        self.unhandled(command)
        return None

    def event_handler(self, event: Event) -> Awaitable[None] | None:
        """Returns nothing; applies one persisted or recovered `event` to this actor's fields."""
        return None

    def get_snapshot_state(self) -> Any:
        """Returns the state to snapshot (any value the codec stores; may be async).

        Raises:
            NotImplementedError: by default: this actor takes no snapshots.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define get_snapshot_state()")

    def on_snapshot(self, state: Any, sequence_number: int) -> Awaitable[None] | None:
        """Returns nothing; restores this actor's fields from a snapshot's `state` (may be async).

        Raises:
            NotImplementedError: by default: this actor takes no snapshots.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define on_snapshot()")

    # -- what a subclass calls ------------------------------------------------------------

    @property
    def sequence_number(self) -> int:
        """Returns the version of the stream this instance has applied (0: no events yet)."""
        return self._sequence_number

    @property
    def is_recovered(self) -> bool:
        """Returns whether ``start()`` has finished."""
        return self._recovered

    async def persist_event(self, event: Event, *, metadata: dict[str, Any] | None = None) -> int:
        """Returns the stream's new version, once `event` is stored and applied.

        The same as ``persist_events([event])``; see there for costs and errors.
        """
        return await self.persist_events([event], metadata=metadata)

    async def persist_events(self, events: Iterable[Event], *, metadata: dict[str, Any] | None = None) -> int:
        """Returns the stream's new version, once `events` are stored (all or none) and applied.

        One append with ``expected_version=sequence_number``, then ``event_handler``
        for each event, then a snapshot if the ``snapshot_config`` says so. With
        ``durability="fsync"`` on disk the append runs in the store's thread pool and
        returns after its fsync (shared with concurrent appends).

        Raises:
            ConcurrencyError: another writer appended to the stream first; nothing was
                stored. This instance catches up from the store before its next message.
            SerializationError: an event cannot be stored; nothing was stored.

        In a ``command_handler``, with the stream at version 0::

            await self.persist_events([Opened(...), Deposited(...)])  # returns 2
        """
        batch = as_events(events, "persist_events")
        await self._ensure_current()
        if not batch:
            return self._sequence_number
        version = await self._append(batch, metadata=metadata, occurred_at=None)
        try:
            for recorded_version, event in enumerate(batch, version - len(batch) + 1):
                result = self.event_handler(event)
                if result is not None:
                    await _settle(result)
                self._sequence_number = recorded_version
        except BaseException:
            # Stored but not applied: the rest comes from the store before the next message.
            self._stale = True
            raise
        self._since_snapshot += len(batch)
        if self.snapshot_config is not None:
            await self._maybe_snapshot()
        return version

    async def create_snapshot(self) -> Snapshot | None:
        """Returns the snapshot it stored of the current state (None before the first event).

        Encodes ``get_snapshot_state()``, saves it in ``store.snapshots`` and prunes all
        but the newest ``max_snapshots_to_keep``. On a store on disk the save (a catalog
        write) runs in the store's thread pool.

        Raises:
            NotImplementedError: the actor does not define ``get_snapshot_state``.
            SerializationError: the state holds a value the codec cannot store.

        In a coroutine, for the ``Counter`` of the class's example after two commands::

            await counter.create_snapshot()  # Snapshot('counter-1', version=2, builtins:dict, 8 B)
        """
        await self._ensure_current()
        version = self._sequence_number
        if version == 0:
            return None
        state = await _settle(self.get_snapshot_state())
        config = self.snapshot_config or _DEFAULT_CONFIG
        store = self.event_store
        snapshot = encode_snapshot(
            self.persistence_id,
            version,
            state,
            taken_at=store.clock.now(),
            config=config,
            snapshot_version=type(self).snapshot_version,
        )

        def save() -> None:
            store.snapshots.save(snapshot)
            store.snapshots.prune(snapshot.stream_id, keep=config.max_snapshots_to_keep)

        await _off_loop(store, _on_disk(store), save)
        self._since_snapshot = 0
        self._last_snapshot_at = snapshot.taken_at
        return snapshot

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Returns once the state is recovered: the newest usable snapshot, then later events.

        Idempotent: later calls return at once; concurrent calls wait for the first.
        Costs one ``stream_version`` lookup, one snapshot lookup (kept in memory by the
        store once seen) when the stream has 32 events or more, and one
        ``read_stream(from_version=...)``; nothing for a new stream. On a store on disk
        the reads run in the store's thread pool. An unusable snapshot (undecodable,
        changed class, unknown type) is skipped with a ``SnapshotWarning``.

        Raises:
            StoreError: the store failed (the next call tries again).
        """
        if self._recovered:
            return
        pending = self._recovery
        if pending is not None:
            # shield: a caller cancelled while waiting must not cancel the recovery itself.
            await asyncio.shield(pending)
            return
        pending = self._recovery = asyncio.get_running_loop().create_future()
        try:
            await self._recover()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                pending.cancel()
            else:
                pending.set_exception(exc)
                pending.exception()  # retrieved: a failure nobody waited for is not logged twice
            raise
        else:
            pending.set_result(None)
        finally:
            self._recovery = None

    async def on_message(self, message: Any) -> Any:
        """Returns what ``command_handler`` returned for `message`, after recovery if needed."""
        if not self._recovered or self._stale:
            await self._ensure_current()
        return await _settle(self.command_handler(message))

    # -- internals -----------------------------------------------------------------------------

    def _snapshots_supported(self) -> bool:
        cls = type(self)
        return (
            cls.get_snapshot_state is not PersistentActor.get_snapshot_state
            and cls.on_snapshot is not PersistentActor.on_snapshot
        )

    def _snapshot_type(self) -> type | None:
        """The state class snapshots of this actor must hold (None: any, found by name)."""
        return None

    async def _ensure_current(self) -> None:
        if not self._recovered:
            await self.start()
        elif self._stale:
            await self._catch_up()

    async def _recover(self) -> None:
        if self._sequence_number:
            # An earlier attempt applied events up to here before it failed: go on from there
            # (replaying them again would apply them twice to this instance's fields).
            await self._catch_up()
            self._recovered = True
            return
        store = self.event_store
        pid = self.persistence_id
        if store.stream_version(pid) == 0:
            loaded = Loaded(None, None, NO_EVENTS, [])
        else:
            load = functools.partial(
                load_stream,
                store,
                pid,
                expected_type=self._snapshot_type(),
                snapshot_version=type(self).snapshot_version,
                use_snapshots=self._snapshots_supported(),
            )
            loaded = await _load_off_loop(store, load)
        warn_unusable(pid, loaded.problems, stacklevel=4)
        snapshot = loaded.snapshot
        if snapshot is not None:
            await _settle(self.on_snapshot(loaded.state, snapshot.version))
            self._sequence_number = snapshot.version
            self._last_snapshot_at = snapshot.taken_at
        await self._replay_events(loaded.replay)
        self._since_snapshot = self._sequence_number - (snapshot.version if snapshot is not None else 0)
        config = self.snapshot_config
        if snapshot is None and config is not None and config.uses_time:
            self._last_snapshot_at = store.clock.now()  # time rules count from here
        self._stale = False
        self._recovered = True

    async def _catch_up(self) -> None:
        """Applies the stream's events after sequence_number: another writer's, or ones stored but not applied."""
        store = self.event_store
        read = functools.partial(store.read_stream, self.persistence_id, from_version=self._sequence_number + 1)
        records = await _off_loop(store, _on_disk(store), read)
        await self._replay_events(Replay.of(records))
        self._since_snapshot += len(records)
        self._stale = False

    async def _replay_events(self, replay: Replay) -> None:
        handler = self.event_handler
        for version, event in enumerate(replay.events, replay.first_version):
            result = handler(event)
            if result is not None:
                await _settle(result)
            self._sequence_number = version

    async def _append(
        self, batch: list[Event], *, metadata: dict[str, Any] | None, occurred_at: datetime | None
    ) -> int:
        store = self.event_store
        try:
            if _appends_block(store):
                # Checked and encoded here (a bad event fails now, writing nothing); written
                # with the other actors' appends of this loop, under one fsync.
                prepared = store.prepare_append(
                    self.persistence_id, batch, expected_version=self._sequence_number, metadata=metadata,
                    occurred_at=occurred_at, stream_type=type(self).aggregate_type,
                )
                return await append_in_group(store, prepared)
            return store.append(
                self.persistence_id,
                batch,
                expected_version=self._sequence_number,
                metadata=metadata,
                occurred_at=occurred_at,
                stream_type=type(self).aggregate_type,
            )
        except Exception:
            # A conflict, or a failure after which the append may or may not have landed:
            # either way, read the stream again before the next message.
            self._stale = True
            raise

    async def _maybe_snapshot(self) -> None:
        config = self.snapshot_config
        if config is None or not config.should_snapshot(
            events_since_snapshot=self._since_snapshot,
            last_snapshot_at=self._last_snapshot_at,
            clock=self.event_store.clock,
        ):
            return
        try:
            await self.create_snapshot()
        except (SerializationError, NotImplementedError) as exc:
            # The events are stored: a snapshot that cannot be taken must not fail the command.
            self._since_snapshot = 0
            warnings.warn(SnapshotWarning(f"no snapshot of {self.persistence_id!r}: {exc}"), stacklevel=4)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.persistence_id!r}, sequence_number={self._sequence_number})"

