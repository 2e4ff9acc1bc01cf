"""The Repository: aggregates without actors, for scripts, notebooks and request handlers.

``Repository(store, AggregateClass)`` runs the same ``AggregateRoot`` classes as the
actors do, synchronously: ``execute`` a command, ``get`` a state (now or as of a past
point), and look at ``history`` and ``states`` as pandas DataFrames. Recent states are
cached; writers that race on one aggregate are told apart by the append's expected
version, and the loser retries.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
import warnings
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from eventador.aggregates import recovery, replay
from eventador.aggregates.recovery import as_events, load_stream, stamp, usable_snapshot, warn_unusable
from eventador.aggregates.root import AggregateRoot, fold
from eventador.aggregates.snapshots import SnapshotWarning, encode_snapshot
from eventador.codec import make_decoder
from eventador.errors import ConcurrencyError, InvalidInputError, SerializationError
from eventador.messages import Command, State, redefinitions
from eventador.store import EventStore
from eventador.store.records import micros_to_datetime

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Repository"]

S = TypeVar("S", bound=State)


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
    >>> repo = ev.Repository(ev.open_store(), BankAccount)
    >>> repo.execute("acc-1", Deposit(amount=100.0)).balance
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
        if hasattr(store, "shard_of"):  # a ShardedStore (a layer above: named by what it has)
            raise InvalidInputError(
                f"Repository needs one store; for a sharded store use store.repository({aggregate_class.__name__}), "
                "which sends each aggregate to its shard"
            )
        self.store = store
        self.aggregate_class = aggregate_class
        self.cache_size = cache_size
        self.max_retries = max_retries
        self._cache: OrderedDict[str, _Entry[S]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._generation = redefinitions.generation
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

        >>> repo.execute("acc-0", Deposit(amount=25.0)).balance
        2665.0
        """
        lock = self._lock_for(aggregate_id)
        delay = 0.0005
        for attempt in range(self.max_retries + 1):
            with lock:
                entry = self._current(aggregate_id)
                aggregate = entry.aggregate
                events = as_events(
                    aggregate.handle_command(entry.state, command), f"{type(aggregate).__name__}.handle_command"
                )
                if not events:
                    return entry.state
                before_last, after = fold(aggregate, entry.state, events)
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
                    state = stamp(before_last, after, version, when)
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

        >>> repo.get("acc-0", as_of=2).balance
        2600.0
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
        if head >= recovery.SNAPSHOT_LOOKUP_MIN:
            snapshot, value, problems = usable_snapshot(
                self.store.snapshots,
                aggregate_id,
                head,
                type(state),
                self.aggregate_class.snapshot_version,
                newest=False,
            )
            warn_unusable(aggregate_id, problems)
            if snapshot is not None:
                state = value
                records = [r for r in records if r.version > snapshot.version]
        if not records:
            return state
        before_last, after = fold(aggregate, state, [r.event for r in records])
        return stamp(before_last, after, head, records[-1].occurred_at)

    def history(self, aggregate_id: str) -> pd.DataFrame:
        """Returns a DataFrame of the aggregate's state after each of its events, oldest first.

        Columns: position, version, recorded_at, event_type, then the state's fields
        (a field named like an envelope column gets a ``state_`` prefix). Costs one
        ``read_stream`` and a fold from the initial state (snapshots are not used: the
        states in between are wanted). Imports pandas.

        >>> repo.history("acc-0")[["version", "event_type", "balance"]]
           version event_type  balance
        0        1  Deposited    100.0
        1        2  Deposited   2600.0
        2        3  Deposited   2640.0
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
            state = stamp(before, apply(before, recorded.event), recorded.version, recorded.occurred_at)
            rows.append(
                [recorded.position, recorded.version, recorded.recorded_at, recorded.event_type]
                + [getattr(state, n) for n in names if n != "version"]
            )
        return pd.DataFrame(rows, columns=envelope + columns)

    def states(
        self, *, as_of: int | datetime | None = None, by: Literal["recorded_at", "occurred_at"] = "recorded_at"
    ) -> pd.DataFrame:
        """Returns a DataFrame with one row per aggregate of this type (index: aggregate_id).

        The aggregates are the streams with an event recorded under stream type
        ``aggregate_class.aggregate_type``; all of a stream's events are folded, as in
        ``get``. Computed in bulk (``eventador/aggregates/replay.py``): one SQL query for
        the stream heads, the newest usable snapshot of each stream long enough to have
        one, then one SQL query for the events after those snapshots, decoded and folded
        per stream. `as_of`: a position or aware datetime, as in ``get``; `by`: what a
        datetime is compared with, as in ``store.as_of``. ``ev.fleet.states(repo, client)``
        computes the same on a Dask cluster. Imports pandas.

        Raises:
            InvalidInputError: `as_of` is a naive datetime or not a position, or `by` is unknown.

        >>> repo.states()["balance"].to_dict()
        {'acc-0': 2640.0}
        """
        store = self.store
        found = replay.plan(store, self.aggregate_class, as_of, by)
        classes = store.registry.classes()
        query = replay.EVENTS_AFTER.format(wanted=replay.typed_columns(classes), source="_all")
        table = found.source.sql(query, [[sid for sid, _ in found.heads], [found.after(sid) for sid, _ in found.heads]])
        table = table.arrow()
        if hasattr(table, "read_all"):  # newer DuckDB hands back a RecordBatchReader
            table = table.read_all()
        finals = replay.fold_streams(self._new, table, make_decoder(store.registry), classes, found.starts)
        order = [sid for sid, _ in found.heads]
        return replay.state_frame(found.state_type, order, replay.state_rows(found.state_type, order, finals))

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
        if self._generation != redefinitions.generation:  # a class was redefined: fold again with the new ones
            self._generation = redefinitions.generation
            self.evict()
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
                    before_last, after = fold(entry.aggregate, entry.state, [r.event for r in records])
                    last = records[-1]
                    entry = dataclasses.replace(
                        entry,
                        state=stamp(before_last, after, last.version, last.occurred_at),
                        version=last.version,
                        since_snapshot=entry.since_snapshot + len(records),
                    )
        self._remember(aggregate_id, entry)
        return entry

    def _recover(self, aggregate_id: str) -> _Entry[S]:
        aggregate = self._new(aggregate_id)
        state = aggregate.initial_state
        loaded = load_stream(
            self.store,
            aggregate_id,
            expected_type=type(state),
            snapshot_version=self.aggregate_class.snapshot_version,
            use_snapshots=True,
        )
        warn_unusable(aggregate_id, loaded.problems, stacklevel=5)
        version = 0
        last_snapshot_at = None
        if loaded.snapshot is not None:
            state, version, last_snapshot_at = loaded.state, loaded.snapshot.version, loaded.snapshot.taken_at
        base = version
        replay = loaded.replay
        if replay.events:
            before_last, after = fold(aggregate, state, replay.events)
            occurred = micros_to_datetime(replay.last_occurred_us)
            state, version = stamp(before_last, after, replay.last_version, occurred), replay.last_version
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
