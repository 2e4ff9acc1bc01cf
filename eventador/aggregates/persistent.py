"""Persistent actors and aggregate roots: actors whose state is the fold of their own events.

A ``PersistentActor`` keeps its state as events in one stream of an event store
(its ``persistence_id``): ``start()`` recovers it (the newest usable snapshot, then
the later events in one read), ``persist_events`` appends with optimistic
concurrency and applies what was stored. An ``AggregateRoot`` is a persistent actor
whose state is a value: pure ``handle_command(state, command) -> events`` and
``apply_event(state, event) -> state``. ``eventador.repository.Repository`` runs the
same aggregates synchronously, from scripts and notebooks.

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
import inspect
import warnings
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar, cast

from eventador.actors import Actor
from eventador.actors.actor import BatchHandler, Outcome
from eventador.aggregates.snapshots import SnapshotConfig, SnapshotWarning, decode_snapshot, encode_snapshot
from eventador.errors import CommandRejected, InvalidInputError, SerializationError
from eventador.messages import Command, Event, State, fields_html
from eventador.store import EventStore
from eventador.store.aio import append_in_group, run_blocking
from eventador.store.cache import NotInMemory, memory_only
from eventador.store.reads import Replay
from eventador.store.records import micros_to_datetime
from eventador.store.segments import paused_gc
from eventador.store.snapshots import Snapshot, SnapshotStore

__all__ = ["AggregateRoot", "PersistentActor"]

S = TypeVar("S", bound=State)
T = TypeVar("T")

# Below this many events, replaying is cheaper than looking a snapshot up (a query).
_SNAPSHOT_LOOKUP_MIN = 32
_DEFAULT_CONFIG = SnapshotConfig()
_NOTHING = Replay([], 0, 0)


async def _load_off_loop(store: EventStore, load: Callable[[], _Loaded]) -> _Loaded:
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
    replay: Replay
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
        return _Loaded(None, None, _NOTHING, [])
    snapshot: Snapshot | None = None
    state: Any = None
    problems: list[str] = []
    if use_snapshots and head >= _SNAPSHOT_LOOKUP_MIN:
        snapshot, state, problems = _usable_snapshot(
            store.snapshots, stream_id, head, expected_type, snapshot_version, newest=True
        )
    replay = store.replay(stream_id, from_version=snapshot.version + 1 if snapshot is not None else 1)
    return _Loaded(snapshot, state, replay, problems)


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
            loaded = _Loaded(None, None, _NOTHING, [])
        else:
            load = functools.partial(
                _load,
                store,
                pid,
                expected_type=self._snapshot_type(),
                snapshot_version=type(self).snapshot_version,
                use_snapshots=self._snapshots_supported(),
            )
            loaded = await _load_off_loop(store, load)
        _warn_unusable(pid, loaded.problems, stacklevel=4)
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


# -- aggregates --------------------------------------------------------------------------------


_PAUSE_GC_FROM = 64  # events folded at once from which the cyclic collector waits


def _apply_all(apply: Callable[[S, Event], S], state: S, events: Sequence[Event]) -> tuple[S, S]:
    """The state before the last event and after all of them."""
    before_last = state
    for event in events:
        before_last = state
        state = apply(state, event)
    return before_last, state


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
        ((ok, answer),) = await self._handle_commands([command])  # one command: one outcome
        if not ok:
            raise answer
        return cast(S, answer)

    def _batch_handler(self) -> BatchHandler | None:
        # Only when commands reach handle_command the ordinary way: an override of
        # on_message or command_handler may do anything, so it sees one message at a time.
        cls = type(self)
        if cls.command_handler is AggregateRoot.command_handler and cls.on_message is PersistentActor.on_message:
            return self._handle_commands
        return None

    async def _handle_commands(self, commands: list[Any]) -> list[Outcome]:
        """Handles queued commands as one after another would, and writes all their events
        in one append: one lock, one log record and one fsync for the lot. A command on
        its own (``command_handler``) is a batch of one: both ways run this code.

        Each command is decided on the state after the ones before it, and each answer is
        the state after its own command. Returns an outcome for each of a prefix of
        `commands`: it stops after a failure (not a rejection), and when the append fails
        the first command with events takes the error, as it would have alone; the
        commands after it are handled again later (``handle_command`` is pure). When an
        event cannot be stored and several commands had events, they are handled again one
        at a time, so that only the command whose event is bad fails.
        """
        if not self._recovered or self._stale:
            await self._ensure_current()
        where = f"{type(self).__name__}.handle_command"
        state = self.state
        version = self._sequence_number
        when = self.event_store.clock.now()
        events: list[Event] = []
        outcomes: list[Outcome] = []
        first_writer = last_writer = -1  # the first and last commands with events
        for command in commands:
            try:
                produced = _as_events(self.handle_command(state, command), where)
                if produced:
                    before_last, after = self._fold(state, produced)
                    version += len(produced)
                    state = _stamp(before_last, after, version, when)
                    if first_writer < 0:
                        first_writer = len(outcomes)
                    last_writer = len(outcomes)
                    events.extend(produced)
            except CommandRejected as rejected:
                outcomes.append((False, rejected))
                continue
            except Exception as failed:
                outcomes.append((False, failed))
                break
            outcomes.append((True, state))
        if not events:
            return outcomes
        try:
            await self._append(events, metadata=None, occurred_at=when)
        except (SerializationError, InvalidInputError) as failed:  # checked before writing: nothing was written
            if first_writer == last_writer:  # only one command had events: the bad event is its own
                return [*outcomes[:first_writer], (False, failed)]
            return [*outcomes[:first_writer], *await self._one_by_one(commands[first_writer : len(outcomes)])]
        except Exception as failed:
            return [*outcomes[:first_writer], (False, failed)]
        self._state = state
        self._sequence_number = version
        self._since_snapshot += len(events)
        if self.snapshot_config is not None:
            try:
                await self._maybe_snapshot()
            except Exception as failed:  # the events are stored: the last command answers for it
                return [*outcomes[:last_writer], (False, failed)]
        return outcomes

    async def _one_by_one(self, commands: list[Any]) -> list[Outcome]:
        """Each command as a batch of one, until one fails (a rejection is not a failure)."""
        outcomes: list[Outcome] = []
        for command in commands:
            outcomes += await self._handle_commands([command])
            ok, answer = outcomes[-1]
            if not ok and not isinstance(answer, CommandRejected):
                break
        return outcomes

    async def persist_events(self, events: Iterable[Event], *, metadata: dict[str, Any] | None = None) -> int:
        """Returns the stream's new version, once `events` are folded, stored (all or none) and applied.

        ``apply_event`` runs before the append, so an event it cannot apply is never
        stored. See ``PersistentActor.persist_events`` for costs.

        Raises:
            ConcurrencyError: another writer appended first; nothing was stored.
            SerializationError: an event cannot be stored; nothing was stored.
        """
        batch = _as_events(events, "persist_events")
        if not self._recovered or self._stale:
            await self._ensure_current()
        if not batch:
            return self._sequence_number
        return await self._persist(batch, metadata)

    async def _persist(self, batch: list[Event], metadata: dict[str, Any] | None) -> int:
        before = self.state
        before_last, after = self._fold(before, batch)
        when = self.event_store.clock.now()
        version = await self._append(batch, metadata=metadata, occurred_at=when)
        self._state = _stamp(before_last, after, version, when)
        self._sequence_number = version
        self._since_snapshot += len(batch)
        if self.snapshot_config is not None:
            await self._maybe_snapshot()
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

    def _fold(self, state: S, events: Sequence[Event]) -> tuple[S, S]:
        """The state before the last event and after all of them.

        For a replay the cyclic collector waits meanwhile: it allocates a state per event,
        and the collections that would trigger cost more than the fold (and vary run to run).
        """
        if len(events) < _PAUSE_GC_FROM:  # a command's events: pausing would cost more than it saves
            before_last, state = _apply_all(self.apply_event, state, events)
        else:
            with paused_gc():
                before_last, state = _apply_all(self.apply_event, state, events)
        if not isinstance(state, State):
            raise InvalidInputError(f"{type(self).__name__}.apply_event returned {state!r}, not an ev.State")
        return before_last, state

    async def _replay_events(self, replay: Replay) -> None:
        if not replay.events:
            return
        before_last, after = self._fold(self.state, replay.events)
        self._state = _stamp(before_last, after, replay.last_version, micros_to_datetime(replay.last_occurred_us))
        self._sequence_number = replay.last_version

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.persistence_id!r}, version={self._sequence_number}, state={self.state!r})"

    def _repr_html_(self) -> str:
        return _state_html(f"{type(self).__name__} {self.persistence_id}", self.state)


def _state_html(title: str, state: State) -> str:
    return fields_html(title, ((f.name, getattr(state, f.name)) for f in dataclasses.fields(state)))
