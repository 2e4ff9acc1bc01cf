"""Persistent actors, aggregate roots, and the Repository that runs aggregates without actors.

A ``PersistentActor`` keeps its state as events in one stream of an event store
(its ``persistence_id``): ``start()`` recovers it (the newest usable snapshot, then
the later events in one read), ``persist_events`` appends with optimistic
concurrency and applies what was stored. An ``AggregateRoot`` is a persistent actor
whose state is a value: pure ``handle_command(state, command) -> events`` and
``apply_event(state, event) -> state``. A ``Repository`` runs the same aggregates
synchronously, from scripts and notebooks, with a cache of recent states.

Blocking store calls: on a store on disk with ``durability="fsync"`` appends run in
a pool of threads, so that appends from many actors overlap and share one fsync
(the store's group commit) while the event loop serves other actors. Recovery
reads and snapshot writes of stores on disk run in the same pool. Everything else
(in-memory stores, ``"batch"`` and ``"none"`` durability) runs inline: a thread hop
costs more than those appends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import html
import inspect
import random
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from eventador.actors import Actor
from eventador.codec import make_decoder
from eventador.errors import ConcurrencyError, InvalidInputError, SerializationError
from eventador.messages import Command, Event, State
from eventador.snapshots import SnapshotConfig, SnapshotWarning, decode_snapshot, encode_snapshot
from eventador.store import EventStore, RecordedEvent
from eventador.store.records import micros_to_datetime
from eventador.store.snapshots import Snapshot, SnapshotStore

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AggregateRoot", "PersistentActor", "Repository"]

S = TypeVar("S", bound=State)
T = TypeVar("T")

# Threads per store for blocking calls. Appends block ~0.3-0.5 ms in fdatasync; the
# store's group commit lets every append queued meanwhile share the next one, so
# more threads in flight means more appends per fsync.
_POOL_THREADS = 32
# Below this many events, replaying is cheaper than looking a snapshot up (a query).
_SNAPSHOT_LOOKUP_MIN = 32
_DEFAULT_CONFIG = SnapshotConfig()

_pools: weakref.WeakKeyDictionary[EventStore, ThreadPoolExecutor] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


def _pool(store: EventStore) -> ThreadPoolExecutor:
    """The thread pool for blocking calls on `store`; shut down when the store is collected."""
    # Keyed weakly by store, so a store re-created in a notebook cell does not keep
    # the old one's threads: they go when the old store is garbage.
    with _pools_lock:
        pool = _pools.get(store)
        if pool is None:
            pool = ThreadPoolExecutor(_POOL_THREADS, thread_name_prefix="eventador-store")
            _pools[store] = pool
            weakref.finalize(store, pool.shutdown, wait=False)
        return pool


def _on_disk(store: EventStore) -> bool:
    return getattr(store, "path", None) is not None


def _appends_block(store: EventStore) -> bool:
    return _on_disk(store) and getattr(store, "durability", None) == "fsync"


async def _off_loop(store: EventStore, blocking: bool, call: Callable[[], T]) -> T:
    """`call()`, in the store's thread pool when `blocking`, else right here."""
    if not blocking:
        return call()
    return await asyncio.get_running_loop().run_in_executor(_pool(store), call)


async def _settle(value: Any) -> Any:
    """Awaits `value` if a hook returned an awaitable, so hooks may be plain or async."""
    if inspect.isawaitable(value):
        return await value
    return value


def _as_events(produced: Any, where: str) -> list[Event]:
    if produced is None:
        return []
    batch = [produced] if isinstance(produced, Event) else list(produced)
    for event in batch:
        if not isinstance(event, Event):
            raise InvalidInputError(f"{where} must return ev.Event instances, got {event!r}")
    return batch


# -- loading a stream: newest usable snapshot, then the later events in one read ---------


@dataclasses.dataclass(slots=True)
class _Loaded:
    snapshot: Snapshot | None
    state: Any
    records: list[RecordedEvent]
    problems: list[str]


def _usable_snapshot(
    snapshots: SnapshotStore,
    stream_id: str,
    head: int,
    expected_type: type | None,
    snapshot_version: int,
    *,
    newest: bool,
) -> tuple[Snapshot | None, Any, list[str]]:
    """The newest snapshot at or below `head` that decodes, its state, and why others did not.

    `newest`: ask for the stream's newest snapshot first (kept in memory by the store),
    else straight for the newest at or below `head`.
    """
    problems: list[str] = []
    candidate = snapshots.latest(stream_id) if newest else snapshots.latest(stream_id, max_version=head)
    if candidate is not None and candidate.version > head:
        candidate = snapshots.latest(stream_id, max_version=head)
    older: list[Snapshot] | None = None
    while candidate is not None:
        try:
            state = decode_snapshot(candidate, expected_type=expected_type, snapshot_version=snapshot_version)
        except SerializationError as exc:
            problems.append(str(exc))
        else:
            return candidate, state, problems
        if older is None:
            older = [s for s in snapshots.list(stream_id) if s.version <= head]
        older = [s for s in older if s.version < candidate.version]
        candidate = older[-1] if older else None
    return None, None, problems


def _load(
    store: EventStore, stream_id: str, *, expected_type: type | None, snapshot_version: int, use_snapshots: bool
) -> _Loaded:
    head = store.stream_version(stream_id)
    if head == 0:
        return _Loaded(None, None, [], [])
    snapshot: Snapshot | None = None
    state: Any = None
    problems: list[str] = []
    if use_snapshots and head >= _SNAPSHOT_LOOKUP_MIN:
        snapshot, state, problems = _usable_snapshot(
            store.snapshots, stream_id, head, expected_type, snapshot_version, newest=True
        )
    records = store.read_stream(stream_id, from_version=snapshot.version + 1 if snapshot is not None else 1)
    return _Loaded(snapshot, state, records, problems)


def _warn_unusable(stream_id: str, problems: list[str], stacklevel: int = 3) -> None:
    if problems:
        more = f" (and {len(problems) - 1} older)" if len(problems) > 1 else ""
        warnings.warn(
            SnapshotWarning(f"{problems[0]}{more}; recovering {stream_id!r} by replaying its events instead"),
            stacklevel=stacklevel,
        )


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

        >>> await self.persist_events([Opened(...), Deposited(...)])  # doctest: +SKIP
        2
        """
        batch = _as_events(events, "persist_events")
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
        await self._maybe_snapshot(len(batch))
        return version

    async def create_snapshot(self) -> Snapshot | None:
        """Returns the snapshot it stored of the current state (None before the first event).

        Encodes ``get_snapshot_state()``, saves it in ``store.snapshots`` and prunes all
        but the newest ``max_snapshots_to_keep``. On a store on disk the save (a catalog
        write) runs in the store's thread pool.

        Raises:
            NotImplementedError: the actor does not define ``get_snapshot_state``.
            SerializationError: the state holds a value the codec cannot store.

        >>> await counter.create_snapshot()  # doctest: +SKIP
        Snapshot('counter-1', version=2, builtins.dict, 8 B)
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
            loaded = _Loaded(None, None, [], [])
        else:
            load = functools.partial(
                _load,
                store,
                pid,
                expected_type=self._snapshot_type(),
                snapshot_version=type(self).snapshot_version,
                use_snapshots=self._snapshots_supported(),
            )
            loaded = await _off_loop(store, _on_disk(store), load)
        _warn_unusable(pid, loaded.problems, stacklevel=4)
        snapshot = loaded.snapshot
        if snapshot is not None:
            await _settle(self.on_snapshot(loaded.state, snapshot.version))
            self._sequence_number = snapshot.version
            self._last_snapshot_at = snapshot.taken_at
        await self._replay(loaded.records)
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
        await self._replay(records)
        self._since_snapshot += len(records)
        self._stale = False

    async def _replay(self, records: Sequence[RecordedEvent]) -> None:
        handler = self.event_handler
        for recorded in records:
            result = handler(recorded.event)
            if result is not None:
                await _settle(result)
            self._sequence_number = recorded.version

    async def _append(
        self, batch: list[Event], *, metadata: dict[str, Any] | None, occurred_at: datetime | None
    ) -> int:
        store = self.event_store
        call = functools.partial(
            store.append,
            self.persistence_id,
            batch,
            expected_version=self._sequence_number,
            metadata=metadata,
            occurred_at=occurred_at,
            stream_type=type(self).aggregate_type,
        )
        try:
            return await _off_loop(store, _appends_block(store), call)
        except Exception:
            # A conflict, or a failure after which the append may or may not have landed:
            # either way, read the stream again before the next message.
            self._stale = True
            raise

    async def _maybe_snapshot(self, appended: int) -> None:
        self._since_snapshot += appended
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


# -- aggregates --------------------------------------------------------------------------------


def _stamp(before_last: S, after: S, version: int, when: datetime) -> S:
    """`after` with version = `version` and, unless the last apply_event set it, last_modified = `when`."""
    changes: dict[str, Any] = {}
    if after.version != version:
        changes["version"] = version
    if after.last_modified == before_last.last_modified and after.last_modified != when:
        changes["last_modified"] = when
    if not changes:
        return after
    fields = getattr(after, "__dict__", None)
    if fields is None:  # a slotted State: the ordinary way
        return after.copy_with(**changes)
    # Once per command: skip __init__ (the codec builds decoded messages the same way);
    # only the two framework fields change, so nothing needs validating again.
    stamped: S = object.__new__(type(after))
    object.__setattr__(stamped, "__dict__", {**fields, **changes})
    return stamped


class AggregateRoot(PersistentActor, Generic[S]):
    """A persistent actor whose state is a value ``S`` changed only by its own events.

    Define ``initial_state`` (a property), ``handle_command(state, command)`` (returns
    the events to persist, or raises ``ev.CommandRejected``) and ``apply_event(state,
    event)`` (returns the next state; pure). ``command_handler`` ties them together:
    decide, fold the new events (so a failing ``apply_event`` persists nothing), append
    them in one atomic append, and return the new state (what ``ask`` answers).

    After every command and after recovery the framework sets two fields of the
    state: ``version`` is always the stream version, and ``last_modified`` is the time
    of the last event (its ``occurred_at``: the store clock's reading when the command
    was handled) unless the ``apply_event`` of that last event set it. Snapshots store
    the state itself, with its class name and field-layout fingerprint.

    Spawn aggregates with ``supervisor=ev.Supervisor.resume()``: a rejected command
    leaves the state unchanged, and after a ``ConcurrencyError`` the instance catches
    up by itself, so restarting it (the default) would only cost a recovery.

    >>> import asyncio, eventador as ev
    >>> class Deposited(ev.Event, event_type="doc.Deposited"):
    ...     amount: int
    >>> class Deposit(ev.Command):
    ...     amount: int
    >>> class Balance(ev.State):
    ...     balance: int = 0
    >>> class Account(ev.AggregateRoot[Balance]):
    ...     @property
    ...     def initial_state(self) -> Balance:
    ...         return Balance()
    ...     def handle_command(self, state: Balance, command: ev.Command) -> list[ev.Event]:
    ...         if isinstance(command, Deposit) and command.amount <= 0:
    ...             raise ev.CommandRejected("deposits must be positive")
    ...         return [Deposited(amount=command.amount)] if isinstance(command, Deposit) else []
    ...     def apply_event(self, state: Balance, event: ev.Event) -> Balance:
    ...         return state.copy_with(balance=state.balance + event.amount) if isinstance(event, Deposited) else state
    >>> account = Account(persistence_id="acc-1", event_store=ev.open_store())
    >>> asyncio.run(account.on_message(Deposit(amount=5))).balance
    5
    """

    _state: S | None = None

    @property
    def initial_state(self) -> S:
        """Returns the state before the first event.

        Raises:
            NotImplementedError: a subclass must define it.
        """
        raise NotImplementedError(f"{type(self).__name__} must define the initial_state property")

    def handle_command(self, state: S, command: Command) -> Sequence[Event]:
        """Returns the events `command` causes in `state` (empty: nothing happens); pure.

        Raises:
            CommandRejected: a business rule refuses the command; nothing is persisted.
        """
        raise NotImplementedError(f"{type(self).__name__} must define handle_command(state, command)")

    def apply_event(self, state: S, event: Event) -> S:
        """Returns the state after `event`; pure, and must accept every event it ever produced."""
        raise NotImplementedError(f"{type(self).__name__} must define apply_event(state, event)")

    @property
    def state(self) -> S:
        """Returns the current state (``initial_state`` before recovery and before any event)."""
        state = self._state
        if state is None:
            state = self._state = self.initial_state
        return state

    async def command_handler(self, command: Any) -> S:
        """Returns the state after `command`: its events are persisted and applied.

        Costs ``handle_command``, one ``apply_event`` per new event and one append.

        Raises:
            CommandRejected: from ``handle_command``; nothing was persisted.
            ConcurrencyError: another writer appended first; nothing was persisted.
        """
        await self._ensure_current()
        events = _as_events(self.handle_command(self.state, command), f"{type(self).__name__}.handle_command")
        if events:
            await self.persist_events(events)
        return self.state

    async def persist_events(self, events: Iterable[Event], *, metadata: dict[str, Any] | None = None) -> int:
        """Returns the stream's new version, once `events` are folded, stored (all or none) and applied.

        ``apply_event`` runs before the append, so an event it cannot apply is never
        stored. See ``PersistentActor.persist_events`` for costs.

        Raises:
            ConcurrencyError: another writer appended first; nothing was stored.
            SerializationError: an event cannot be stored; nothing was stored.
        """
        batch = _as_events(events, "persist_events")
        await self._ensure_current()
        if not batch:
            return self._sequence_number
        before = self.state
        before_last, after = self._fold(before, batch)
        when = self.event_store.clock.now()
        version = await self._append(batch, metadata=metadata, occurred_at=when)
        self._state = _stamp(before_last, after, version, when)
        self._sequence_number = version
        await self._maybe_snapshot(len(batch))
        return version

    def event_handler(self, event: Event) -> None:
        """Returns nothing; folds `event` into ``state`` (the aggregate's own fold)."""
        self._state = self.apply_event(self.state, event)

    def get_snapshot_state(self) -> S:
        """Returns ``state``: aggregates snapshot their state value."""
        return self.state

    def on_snapshot(self, state: Any, sequence_number: int) -> None:
        """Returns nothing; makes the snapshot's `state` the current state."""
        self._state = cast(S, state)

    def _snapshot_type(self) -> type | None:
        return type(self.state)

    def _fold(self, state: S, events: Iterable[Event]) -> tuple[S, S]:
        """The state before the last event and after all of them."""
        apply = self.apply_event
        before_last = state
        for event in events:
            before_last = state
            state = apply(state, event)
        if not isinstance(state, State):
            raise InvalidInputError(f"{type(self).__name__}.apply_event returned {state!r}, not an ev.State")
        return before_last, state

    async def _replay(self, records: Sequence[RecordedEvent]) -> None:
        if not records:
            return
        before_last, after = self._fold(self.state, [r.event for r in records])
        last = records[-1]
        self._state = _stamp(before_last, after, last.version, last.occurred_at)
        self._sequence_number = last.version

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.persistence_id!r}, version={self._sequence_number}, state={self.state!r})"

    def _repr_html_(self) -> str:
        return _state_html(f"{type(self).__name__} {self.persistence_id}", self.state)


def _state_html(title: str, state: State) -> str:
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(f.name)}</th>"
        f"<td>{html.escape(repr(getattr(state, f.name)))}</td></tr>"
        for f in dataclasses.fields(state)
    )
    return f"<div><strong>{html.escape(title)}</strong><table>{rows}</table></div>"


# -- the repository ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry(Generic[S]):
    """What a Repository caches of one aggregate."""

    aggregate: AggregateRoot[S]
    state: S
    version: int
    since_snapshot: int
    last_snapshot_at: datetime | None


class Repository(Generic[S]):
    """Returns a synchronous way to run aggregates of `aggregate_class`, without actors.

    For scripts, notebooks and request handlers: ``execute(id, command)`` and
    ``get(id, as_of=...)``, plus ``history(id)`` and ``states()`` as DataFrames. Each
    aggregate is built as ``aggregate_class(persistence_id=id, event_store=store)``, and
    its ``snapshot_config`` (class attribute) decides when snapshots are taken.

    The `cache_size` most recently used aggregates keep their state in memory, so a hot
    aggregate is not replayed for each command; a cached state is checked against the
    stream's version (a dictionary lookup) and caught up with any newer events first.
    Thread-safe: commands on one aggregate through one Repository run one at a time;
    between Repositories (or processes' actors) the append's expected version decides,
    and the loser reloads and retries the command up to `max_retries` times.

    >>> import eventador as ev
    >>> repo = ev.Repository(ev.open_store(), BankAccount)  # doctest: +SKIP
    >>> repo.execute("acc-1", OpenAccount(account_id="acc-1", initial_balance=100.0)).balance  # doctest: +SKIP
    100.0
    """

    def __init__(
        self,
        store: EventStore,
        aggregate_class: type[AggregateRoot[S]],
        *,
        cache_size: int = 1024,
        max_retries: int = 5,
    ) -> None:
        if not (isinstance(aggregate_class, type) and issubclass(aggregate_class, AggregateRoot)):
            raise InvalidInputError(f"Repository needs an ev.AggregateRoot subclass, got {aggregate_class!r}")
        if cache_size < 0 or max_retries < 0:
            raise InvalidInputError("cache_size and max_retries must be 0 or more")
        self.store = store
        self.aggregate_class = aggregate_class
        self.cache_size = cache_size
        self.max_retries = max_retries
        self._cache: OrderedDict[str, _Entry[S]] = OrderedDict()
        self._cache_lock = threading.Lock()
        # Striped locks: commands on one aggregate through this Repository run one at a time.
        self._locks = [threading.Lock() for _ in range(64)]

    # -- commands and reads --------------------------------------------------------------------

    def execute(self, aggregate_id: str, command: Command) -> S:
        """Returns the aggregate's state after `command`, whose events are now stored.

        Costs ``handle_command``, the new events' ``apply_event`` and one append (with
        ``durability="fsync"``, one fsync shared with concurrent appends); for an
        aggregate not in the cache, a recovery first.

        Raises:
            CommandRejected: from ``handle_command``; nothing was stored.
            ConcurrencyError: other writers won the race `max_retries` + 1 times in a row.

        >>> repo.execute("acc-1", DepositMoney(account_id="acc-1", amount=25.0)).balance  # doctest: +SKIP
        125.0
        """
        lock = self._lock_for(aggregate_id)
        delay = 0.0005
        for attempt in range(self.max_retries + 1):
            with lock:
                entry = self._current(aggregate_id)
                aggregate = entry.aggregate
                events = _as_events(
                    aggregate.handle_command(entry.state, command), f"{type(aggregate).__name__}.handle_command"
                )
                if not events:
                    return entry.state
                before_last, after = aggregate._fold(entry.state, events)
                when = self.store.clock.now()
                try:
                    version = self.store.append(
                        aggregate_id,
                        events,
                        expected_version=entry.version,
                        occurred_at=when,
                        stream_type=self.aggregate_class.aggregate_type,
                    )
                except ConcurrencyError:
                    if attempt == self.max_retries:
                        raise
                else:
                    state = _stamp(before_last, after, version, when)
                    updated = dataclasses.replace(
                        entry, state=state, version=version, since_snapshot=entry.since_snapshot + len(events)
                    )
                    self._remember(aggregate_id, self._maybe_snapshot(aggregate_id, updated))
                    return state
            # Lost the race: back off a little (with jitter, so two losers do not collide again).
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 0.05)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, aggregate_id: str, *, as_of: int | datetime | None = None) -> S:
        """Returns the aggregate's state now, or as it was at position or aware datetime `as_of`.

        Now: from the cache (caught up with newer events), else a recovery (newest usable
        snapshot, then later events). In the past: one ``read_stream`` of the store as of
        then, folded from the newest snapshot at or below that version. A stream that
        does not exist (yet) gives ``initial_state``.

        Raises:
            InvalidInputError: `as_of` is a naive datetime or not a position.

        >>> repo.get("acc-1", as_of=datetime(2026, 1, 1, tzinfo=UTC)).balance  # doctest: +SKIP
        100.0
        """
        if as_of is None:
            with self._lock_for(aggregate_id):
                return self._current(aggregate_id).state
        aggregate = self._new(aggregate_id)
        records = self.store.as_of(as_of).read_stream(aggregate_id)
        state = aggregate.initial_state
        if not records:
            return state
        head = records[-1].version
        snapshot = None
        if head >= _SNAPSHOT_LOOKUP_MIN:
            snapshot, value, problems = _usable_snapshot(
                self.store.snapshots,
                aggregate_id,
                head,
                type(state),
                self.aggregate_class.snapshot_version,
                newest=False,
            )
            _warn_unusable(aggregate_id, problems)
            if snapshot is not None:
                state = value
                records = [r for r in records if r.version > snapshot.version]
        if not records:
            return state
        before_last, after = aggregate._fold(state, [r.event for r in records])
        return _stamp(before_last, after, head, records[-1].occurred_at)

    def history(self, aggregate_id: str) -> pd.DataFrame:
        """Returns a DataFrame of the aggregate's state after each of its events, oldest first.

        Columns: position, version, recorded_at, event_type, then the state's fields
        (a field named like an envelope column gets a ``state_`` prefix). Costs one
        ``read_stream`` and a fold from the initial state (snapshots are not used: the
        states in between are wanted). Imports pandas.

        >>> repo.history("acc-1")[["version", "event_type", "balance"]]  # doctest: +SKIP
        """
        import pandas as pd

        aggregate = self._new(aggregate_id)
        state = aggregate.initial_state
        names = [f.name for f in dataclasses.fields(state)]
        envelope = ["position", "version", "recorded_at", "event_type"]
        columns = [n if n not in envelope else f"state_{n}" for n in names if n != "version"]
        rows: list[list[Any]] = []
        apply = aggregate.apply_event
        for recorded in self.store.read_stream(aggregate_id):
            before = state
            state = _stamp(before, apply(before, recorded.event), recorded.version, recorded.occurred_at)
            rows.append(
                [recorded.position, recorded.version, recorded.recorded_at, recorded.event_type]
                + [getattr(state, n) for n in names if n != "version"]
            )
        return pd.DataFrame(rows, columns=envelope + columns)

    def states(self, *, as_of: int | datetime | None = None) -> pd.DataFrame:
        """Returns a DataFrame with one row per aggregate of this type (index: aggregate_id).

        The aggregates are the streams whose recorded stream type is
        ``aggregate_class.aggregate_type``. Computed in bulk: one SQL query for the
        stream heads, the newest usable snapshot of each stream long enough to have
        one, then one SQL query for the events after those snapshots, decoded and
        folded per stream. `as_of`: a position or aware datetime, as in ``get``.
        Imports pandas.

        Raises:
            InvalidInputError: `as_of` is a naive datetime or not a position.

        >>> repo.states()["balance"].sum()  # doctest: +SKIP
        """
        import pandas as pd

        store = self.store
        source: Any = store.as_of(as_of) if as_of is not None else store.as_of(store.last_position)
        kind = self.aggregate_class.aggregate_type
        heads = source.sql(
            "SELECT stream_id, max(version) FROM events WHERE stream_type = ? GROUP BY stream_id ORDER BY stream_id",
            [kind],
        ).fetchall()
        probe = self._new("_")
        state_type = type(probe.initial_state)
        starts: dict[str, tuple[Any, int]] = {}
        problems: list[str] = []
        for stream_id, head in heads:
            if head < _SNAPSHOT_LOOKUP_MIN:
                continue
            snapshot, value, found = _usable_snapshot(
                store.snapshots, stream_id, head, state_type, self.aggregate_class.snapshot_version, newest=True
            )
            problems.extend(found)
            if snapshot is not None:
                starts[stream_id] = (value, snapshot.version)
        if problems:
            _warn_unusable(f"{len(problems)} {kind} aggregates", problems)
        query = (
            "SELECT e.stream_id, e.version, e.event_type, e.payload, epoch_us(e.occurred_at) FROM events e "
            "LEFT JOIN (SELECT unnest(?::VARCHAR[]) AS sid, unnest(?::BIGINT[]) AS after) s ON e.stream_id = s.sid "
            "WHERE e.stream_type = ? AND e.version > coalesce(s.after, 0) ORDER BY e.stream_id, e.version"
        )
        table = source.sql(query, [list(starts), [v for _, v in starts.values()], kind]).arrow()
        if hasattr(table, "read_all"):  # newer DuckDB hands back a RecordBatchReader
            table = table.read_all()
        ids, versions, types, payloads, occurred = (table.column(i).to_pylist() for i in range(5))
        decode = make_decoder(store.registry)
        finals: dict[str, S] = {sid: value for sid, (value, _) in starts.items()}
        start = 0
        total = len(ids)
        while start < total:
            stream_id = ids[start]
            stop = start
            while stop < total and ids[stop] == stream_id:
                stop += 1
            aggregate = self._new(stream_id)
            first = finals.get(stream_id)
            state = aggregate.initial_state if first is None else first
            events = [decode(types[i], payloads[i]) for i in range(start, stop)]
            before_last, after = aggregate._fold(state, events)
            finals[stream_id] = _stamp(before_last, after, versions[stop - 1], micros_to_datetime(occurred[stop - 1]))
            start = stop
        names = [f.name for f in dataclasses.fields(state_type)]
        order = [stream_id for stream_id, _ in heads]
        frame = pd.DataFrame(
            [[getattr(finals[sid], n) for n in names] for sid in order], columns=names, index=pd.Index(order)
        )
        frame.index.name = "aggregate_id"
        return frame

    def evict(self, aggregate_id: str | None = None) -> None:
        """Returns nothing; forgets the cached state of one aggregate (or of all)."""
        with self._cache_lock:
            if aggregate_id is None:
                self._cache.clear()
            else:
                self._cache.pop(aggregate_id, None)

    # -- internals ---------------------------------------------------------------------------------

    def _lock_for(self, aggregate_id: str) -> threading.Lock:
        return self._locks[hash(aggregate_id) % len(self._locks)]

    def _new(self, aggregate_id: str) -> AggregateRoot[S]:
        return self.aggregate_class(persistence_id=aggregate_id, event_store=self.store)

    def _current(self, aggregate_id: str) -> _Entry[S]:
        """The cached entry caught up with the store, or a freshly recovered one (cached)."""
        with self._cache_lock:
            entry = self._cache.get(aggregate_id)
            if entry is not None:
                self._cache.move_to_end(aggregate_id)
        store = self.store
        if entry is None:
            entry = self._recover(aggregate_id)
        else:
            head = store.stream_version(aggregate_id)
            if head < entry.version:
                entry = self._recover(aggregate_id)  # the stream is not what we cached: start over
            elif head > entry.version:
                records = store.read_stream(aggregate_id, from_version=entry.version + 1)
                if records:
                    before_last, after = entry.aggregate._fold(entry.state, [r.event for r in records])
                    last = records[-1]
                    entry = dataclasses.replace(
                        entry,
                        state=_stamp(before_last, after, last.version, last.occurred_at),
                        version=last.version,
                        since_snapshot=entry.since_snapshot + len(records),
                    )
        self._remember(aggregate_id, entry)
        return entry

    def _recover(self, aggregate_id: str) -> _Entry[S]:
        aggregate = self._new(aggregate_id)
        state = aggregate.initial_state
        loaded = _load(
            self.store,
            aggregate_id,
            expected_type=type(state),
            snapshot_version=self.aggregate_class.snapshot_version,
            use_snapshots=True,
        )
        _warn_unusable(aggregate_id, loaded.problems, stacklevel=5)
        version = 0
        last_snapshot_at = None
        if loaded.snapshot is not None:
            state, version, last_snapshot_at = loaded.state, loaded.snapshot.version, loaded.snapshot.taken_at
        base = version
        if loaded.records:
            before_last, after = aggregate._fold(state, [r.event for r in loaded.records])
            last = loaded.records[-1]
            state, version = _stamp(before_last, after, last.version, last.occurred_at), last.version
        config = aggregate.snapshot_config
        if last_snapshot_at is None and config is not None and config.uses_time:
            last_snapshot_at = self.store.clock.now()
        return _Entry(aggregate, state, version, version - base, last_snapshot_at)

    def _remember(self, aggregate_id: str, entry: _Entry[S]) -> None:
        if self.cache_size == 0:
            return
        with self._cache_lock:
            cached = self._cache.get(aggregate_id)
            if cached is not None and cached.version > entry.version:
                return  # a newer state got here first
            self._cache[aggregate_id] = entry
            self._cache.move_to_end(aggregate_id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _maybe_snapshot(self, aggregate_id: str, entry: _Entry[S]) -> _Entry[S]:
        config = entry.aggregate.snapshot_config
        store = self.store
        if config is None or not config.should_snapshot(
            events_since_snapshot=entry.since_snapshot, last_snapshot_at=entry.last_snapshot_at, clock=store.clock
        ):
            return entry
        try:
            snapshot = encode_snapshot(
                aggregate_id,
                entry.version,
                entry.state,
                taken_at=store.clock.now(),
                config=config,
                snapshot_version=self.aggregate_class.snapshot_version,
            )
        except SerializationError as exc:
            warnings.warn(SnapshotWarning(f"no snapshot of {aggregate_id!r}: {exc}"), stacklevel=4)
            return dataclasses.replace(entry, since_snapshot=0)
        store.snapshots.save(snapshot)
        store.snapshots.prune(aggregate_id, keep=config.max_snapshots_to_keep)
        return dataclasses.replace(entry, since_snapshot=0, last_snapshot_at=snapshot.taken_at)

    def __repr__(self) -> str:
        return f"Repository({self.aggregate_class.__name__}, {len(self._cache)} cached, store={self.store!r})"
