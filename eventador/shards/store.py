"""A sharded store: streams split by a stable hash over several ordinary stores (shards).

Each shard is an ``EventStore`` in its own directory (on its own disk if given), with its
own lock, log and files: appends to different shards never wait for each other, and
several processes can write one sharded store, one process per shard. A stream lives in
exactly one shard (``layout.py``), so everything about one stream (its versions, expected
versions, its order) is that shard's. Across shards there is no global position and no
atomic append: events of different shards are ordered by ``recorded_at`` only.
"""

from __future__ import annotations

import dataclasses
import heapq
import html
import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

from eventador.clock import Clock
from eventador.errors import (
    CrossShardError,
    InvalidInputError,
    ShardLockedError,
    ShardNotWritableError,
    StoreClosedError,
    StoreLockedError,
)
from eventador.messages import Event, State, TypeRegistry
from eventador.messages import registry as default_registry
from eventador.shards.layout import ShardLayout
from eventador.shards.repository import ShardedRepository
from eventador.store import ANY, EventStore, ExpectedVersion, RecordedEvent, open_store
from eventador.store.core import Durability
from eventador.store.lake import LakeTarget
from eventador.store.reads import Replay, check_limit, check_stream_id, run_sql
from eventador.store.segments import unify
from eventador.store.sqlguard import SqlRelation, check_query, fixed_names, restrict
from eventador.store.views import Sources, SqlViews

if TYPE_CHECKING:
    from eventador.aggregates.root import AggregateRoot

S = TypeVar("S", bound=State)

__all__ = ["ShardedStore", "open_shard", "open_sharded", "shard_lake"]


def open_sharded(
    root: str | os.PathLike[str],
    *,
    shards: int | None = None,
    buckets: int | None = None,
    directories: Sequence[str | os.PathLike[str]] | None = None,
    writable: Iterable[int] | None = None,
    read_only: bool = False,
    durability: Durability = "fsync",
    clock: Clock | None = None,
    registry: TypeRegistry | None = None,
    allow_external: bool = False,
    shard_options: Callable[[int], Mapping[str, Any]] | None = None,
    **options: Any,
) -> ShardedStore:
    """A sharded store at `root`, made with `shards` shards if there is none yet.

    `buckets` (default 256) and `directories` (default ``root/shard-<i>``; absolute paths
    put shards on other disks) are fixed when the store is made, in ``root/shards.json``;
    giving other values later is refused. `writable`: the shards this process writes (by
    default all, none when `read_only`); the others open read-only when first read, and
    show what their writers had logged then (``refresh()`` looks again). `durability`,
    `clock`, `registry`, `allow_external` and `options` (``flush_every``...) go to every
    shard's ``open_store``; `shard_options(i)` adds options for shard ``i`` alone. A `lake`
    (a URI or ``LakeTarget``) is one table for all: shard ``i`` publishes under the partition
    ``shard_lake`` names (``"<i>"``, or ``"<name>-<i>"`` for a ``LakeTarget(shard=name)``).

    Raises:
        ShardLockedError: another process writes one of the `writable` shards (names it).
        ShardLayoutError: the recorded layout differs from `shards`, `buckets` or `directories`.
        InvalidInputError: no store at `root` and no `shards`; a shard number out of range.

    For example (shard 1 holds ``acc-1``; ``open_shard("bank", 1)`` in another process would
    write it alone)::

        with ev.open_sharded("bank", shards=2, durability="batch") as bank:
            bank.append("acc-1", [Deposited(amount=5)])      # on shard bank.shard_of("acc-1") == 1
            bank.sql("SELECT sum(amount) FROM Deposited").fetchall()   # over both shards
    """
    return ShardedStore(
        root, shards=shards, buckets=buckets, directories=directories, writable=writable, read_only=read_only,
        durability=durability, clock=clock, registry=registry, allow_external=allow_external,
        shard_options=shard_options, **options,
    )


def shard_lake(lake: str | LakeTarget, shard: int) -> LakeTarget:
    """The lake target of shard `shard` of a sharded store given `lake`: the same table, the
    partition ``"<shard>"`` (``"<name>-<shard>"`` when `lake` names a shard other than ``main``)."""
    target = lake if isinstance(lake, LakeTarget) else LakeTarget(lake)
    return dataclasses.replace(target, shard=str(shard) if target.shard == "main" else f"{target.shard}-{shard}")


def open_shard(root: str | os.PathLike[str], shard: int, **options: Any) -> ShardedStore:
    """The sharded store at `root`, writing shard `shard` only: one process per shard.

    Appends to streams of other shards raise ``ShardNotWritableError``; reads of them
    open those shards read-only. The same as ``open_sharded(root, writable=[shard], ...)``.

    Raises:
        ShardLockedError: another process writes that shard.
    """
    return open_sharded(root, writable=[shard], **options)


class ShardedStore:
    """Several event stores, one per shard, behind the reads and appends of one; see ``open_sharded``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        shards: int | None = None,
        buckets: int | None = None,
        directories: Sequence[str | os.PathLike[str]] | None = None,
        writable: Iterable[int] | None = None,
        read_only: bool = False,
        durability: Durability = "fsync",
        clock: Clock | None = None,
        registry: TypeRegistry | None = None,
        allow_external: bool = False,
        shard_options: Callable[[int], Mapping[str, Any]] | None = None,
        **options: Any,
    ) -> None:
        self.root = Path(root).absolute()
        self.layout = ShardLayout.open(self.root, shards=shards, buckets=buckets, directories=directories)
        count = self.layout.shards
        if read_only:
            writes: frozenset[int] = frozenset()
        elif writable is None:
            writes = frozenset(range(count))
        else:
            writes = frozenset(writable)
            bad = [s for s in writes if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < count]
            if bad:
                raise InvalidInputError(f"writable names shards {bad!r}; {self.root} has shards 0 to {count - 1}")
        self.writable = writes
        """The shards this process writes."""
        self.read_only = not writes
        self.registry = registry or default_registry
        self.allow_external = allow_external or bool(writes)
        self._options: dict[str, Any] = {
            "durability": durability, "clock": clock, "registry": registry, "allow_external": allow_external,
            **options,
        }
        self._shard_options = shard_options
        self._stores: dict[int, EventStore] = {}
        self._open_lock = threading.Lock()
        self._sql_lock = threading.RLock()
        self._views: SqlViews | None = None
        self._closed = False
        try:
            for shard in sorted(writes):
                self._stores[shard] = self._open(shard, write=True)
        except BaseException:
            self.close()
            raise

    # -- where streams live ---------------------------------------------------------------------

    @property
    def shards(self) -> int:
        """How many shards the store has."""
        return self.layout.shards

    def shard_of(self, stream_id: str) -> int:
        """The shard that holds `stream_id` (the same in every process: ``crc32`` of its id)."""
        check_stream_id(stream_id)
        return self.layout.shard_of(stream_id)

    def shard(self, shard: int) -> EventStore:
        """Shard `shard`'s own ``EventStore`` (opened read-only on first use unless this process writes it).

        For what only a shard can answer: its checkpoints, live views, snapshots, ``as_of``.

        Raises:
            InvalidInputError: no such shard, or (read-only) its writer has not made it yet.
        """
        store = self._reader(shard)
        if store is None:
            raise InvalidInputError(f"shard {shard} of {self.root} has no store yet (its writer has not opened it)")
        return store

    # -- appending ------------------------------------------------------------------------------

    def append(
        self,
        stream_id: str,
        events: Event | Sequence[Event],
        *,
        expected_version: int | ExpectedVersion = ANY,
        metadata: dict[str, Any] | None = None,
        occurred_at: datetime | Sequence[datetime] | None = None,
        stream_type: str | None = None,
    ) -> int:
        """``EventStore.append`` on the stream's shard; returns the stream's new version.

        Raises:
            ShardNotWritableError: another process writes the stream's shard.
            ConcurrencyError, SerializationError, InvalidInputError: as ``EventStore.append``.
        """
        return self._writer(stream_id).append(
            stream_id, events, expected_version=expected_version, metadata=metadata, occurred_at=occurred_at,
            stream_type=stream_type,
        )

    def append_many(
        self,
        appends: Iterable[tuple[str, Event | Sequence[Event]]],
        *,
        expected_version: int | ExpectedVersion = ANY,
        occurred_at: Iterable[datetime | Sequence[datetime] | None] | None = None,
        stream_type: str | None = None,
    ) -> list[int]:
        """``EventStore.append_many`` (atomic) on the one shard that holds every stream named.

        Raises:
            CrossShardError: the streams live in more than one shard; nothing is written.
            ShardNotWritableError, ConcurrencyError, SerializationError, InvalidInputError: as ``append``.
        """
        items = list(appends)
        for item in items:
            if not isinstance(item, tuple) or len(item) != 2:
                raise InvalidInputError(f"append_many takes (stream_id, events) pairs, got {item!r}")
        if not items:
            return []
        store = self._writer_of_all([stream_id for stream_id, _ in items])
        return store.append_many(items, expected_version=expected_version, occurred_at=occurred_at,
                                 stream_type=stream_type)

    def append_streams(
        self,
        appends: Iterable[tuple[str, Event | Sequence[Event], int | ExpectedVersion]],
        *,
        checkpoint: tuple[str, int] | None = None,
        metadata: dict[str, Any] | None = None,
        stream_type: str | None = None,
    ) -> list[int]:
        """``EventStore.append_streams`` (atomic, with a checkpoint) on the one shard that holds
        every stream named; returns each event's position in that shard. The checkpoint is
        that shard's (``store.shard(i).checkpoint(name)``).

        Raises:
            CrossShardError: the streams live in more than one shard; nothing is written.
            InvalidInputError: a malformed triple, or no stream at all (a checkpoint alone
                names no shard: record it with ``store.shard(i).append_streams``).
            ShardNotWritableError, ConcurrencyError, CheckpointConflict, SerializationError: as there.
        """
        items = list(appends)
        for item in items:
            if not isinstance(item, tuple) or len(item) != 3:
                raise InvalidInputError(
                    f"append_streams takes (stream_id, events, expected_version) triples, got {item!r}"
                )
        if not items:
            if checkpoint is None:
                return []
            raise InvalidInputError(
                "a checkpoint without streams names no shard: record it with store.shard(i).append_streams"
            )
        store = self._writer_of_all([item[0] for item in items])
        return store.append_streams(items, checkpoint=checkpoint, metadata=metadata, stream_type=stream_type)

    def flush(self) -> None:
        """Flush every shard this process writes (hot tier -> Parquet)."""
        self._check_open()
        for shard in sorted(self.writable):
            self._stores[shard].flush()

    # -- reading one stream: its shard answers ----------------------------------------------------

    def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """``EventStore.read_stream`` on the stream's shard (its positions are that shard's)."""
        store = self._reader(self.shard_of(stream_id))
        if store is None:
            return []
        return store.read_stream(stream_id, from_version=from_version, to_version=to_version, reverse=reverse,
                                 limit=limit)

    def stream_version(self, stream_id: str) -> int:
        """The stream's version in its shard (0 when it does not exist)."""
        store = self._reader(self.shard_of(stream_id))
        return 0 if store is None else store.stream_version(stream_id)

    def replay(self, stream_id: str, *, from_version: int = 1) -> Replay:
        """``EventStore.replay`` on the stream's shard."""
        store = self._reader(self.shard_of(stream_id))
        return Replay([], 0, 0) if store is None else store.replay(stream_id, from_version=from_version)

    # -- reading everything: every shard answers --------------------------------------------------

    def read_all(
        self, *, event_types: Iterable[str | type[Event]] | None = None, limit: int | None = None
    ) -> Iterator[RecordedEvent]:
        """Every event of every shard, lazily, merged by ``recorded_at`` (ties: lower shard first).

        There is no global position: each event's ``position`` is its shard's. Within a
        stream the order is its versions'; across shards it is by time only. Each shard
        is read in batches as ``EventStore.read_all`` does.
        """
        check_limit(limit)
        types = None if event_types is None else list(event_types)
        parts = [store.read_all(event_types=types) for store in self._all_readers()]
        merged = heapq.merge(*parts, key=lambda r: r.recorded_at)
        return merged if limit is None else itertools.islice(merged, limit)

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> SqlRelation:
        """A DuckDB relation over ``events`` and the typed views of every shard's events, as one.

        The views are a store's (``EventStore.sql``), over every shard's Parquet files and
        hot rows together: ``SELECT sum(amount) FROM Deposited`` sums all shards. The
        ``position`` column is each event's shard's, so it repeats across shards; a stream's
        rows are told apart by (``stream_id``, ``version``). Live views and projections are
        per shard (``store.shard(i)``).

        Raises:
            SqlError: the query does not parse, bind or run, or is refused.
        """
        self._check_open()
        with self._sql_lock:
            stores = self._all_readers()
            if not stores:
                raise InvalidInputError(f"no shard of {self.root} has a store yet (their writers have not opened them)")
            sources = [store.sql_sources() for store in stores]
            views = self._sql_views()
            views.update(
                Sources(
                    files=tuple(f for s in sources for f in s.files),
                    schemas=tuple(schema for s in sources for schema in s.schemas),
                    tables=tuple(t for s in sources for t in s.tables),
                    hot=unify([s.hot for s in sources]),
                ),
                self.registry.classes(),
                query=query,
            )

            def protected() -> dict[str, str]:
                names = fixed_names()
                names.update((v.lower(), f"the typed view of event type {t!r}") for t, v in views.view_names.items())
                return names

            check_query(query, restricted=not self.allow_external, protected=protected)
            return run_sql(views, query, params, [f for s in sources for f in s.files])

    def refresh(self) -> None:
        """Look again at the shards other processes write: their new events become readable."""
        self._check_open()
        for shard in range(self.shards):
            if shard not in self.writable:
                store = self._reader(shard)
                if store is not None:
                    store.refresh()

    # -- aggregates ------------------------------------------------------------------------------

    def repository(self, aggregate_class: type[AggregateRoot[S]], **options: Any) -> ShardedRepository[S]:
        """A ``ShardedRepository`` of `aggregate_class`: each aggregate on its stream's shard."""
        return ShardedRepository(self, aggregate_class, **options)

    # -- the shards themselves ------------------------------------------------------------------

    def _open(self, shard: int, *, write: bool) -> EventStore:
        options = dict(self._options)
        if options.get("lake") is not None:  # one table: each shard publishes under a partition of its own
            options["lake"] = shard_lake(options["lake"], shard)
        if self._shard_options is not None:
            options.update(self._shard_options(shard))
        path = self.layout.directories[shard]
        if not write:
            return open_store(path, read_only=True, **options)
        try:
            return open_store(path, **options)
        except StoreLockedError as exc:
            raise ShardLockedError(shard, str(path), exc.holder) from exc

    def _reader(self, shard: int) -> EventStore | None:
        """Shard `shard`'s store, opened read-only on first use; None while it has no store."""
        self._check_open()
        if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < self.shards:
            raise InvalidInputError(f"{self.root} has shards 0 to {self.shards - 1}, not {shard!r}")
        store = self._stores.get(shard)
        if store is not None:
            return store
        with self._open_lock:
            store = self._stores.get(shard)
            if store is None:
                try:
                    store = self._open(shard, write=False)
                except InvalidInputError:
                    return None  # its writer has not made it yet
                self._stores[shard] = store
            return store

    def _all_readers(self) -> list[EventStore]:
        return [s for s in (self._reader(i) for i in range(self.shards)) if s is not None]

    def _writer(self, stream_id: str) -> EventStore:
        shard = self.shard_of(stream_id)
        self._check_open()
        if shard not in self.writable:
            raise ShardNotWritableError(stream_id, shard, str(self.root))
        return self._stores[shard]

    def _writer_of_all(self, stream_ids: list[str]) -> EventStore:
        """The writer of the one shard all `stream_ids` live in."""
        by_shard: dict[int, list[str]] = {}
        for stream_id in stream_ids:
            by_shard.setdefault(self.shard_of(stream_id), []).append(stream_id)
        if len(by_shard) > 1:
            raise CrossShardError({s: list(dict.fromkeys(ids)) for s, ids in by_shard.items()})
        return self._writer(stream_ids[0])

    def _sql_views(self) -> SqlViews:
        if self._views is None:
            con = duckdb.connect()
            if not self.allow_external:
                restrict(con, [d / "data" for d in self.layout.directories])
            self._views = SqlViews(con)
        return self._views

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed")

    # -- closing ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once ``close()`` has run."""
        return self._closed

    def close(self) -> None:
        """Close every shard opened (each flushes what it writes). Idempotent.

        Raises:
            StoreError: the first shard's close that failed (the others are closed anyway).
        """
        if self._closed:
            return
        self._closed = True
        failed: BaseException | None = None
        for shard in sorted(self._stores):
            try:
                self._stores[shard].close()
            except BaseException as exc:  # close the others first
                failed = failed or exc
        if self._views is not None:
            self._views.close()
        if failed is not None:
            raise failed

    def __enter__(self) -> ShardedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> dict[str, Any]:
        """Per shard: its directory, whether this process writes it, its events and streams
        (``EventStore.info`` of each shard that has a store), and the totals."""
        shards = []
        for shard in range(self.shards):
            store = self._reader(shard)
            found = {} if store is None else store.info()
            shards.append({
                "shard": shard, "path": str(self.layout.directories[shard]), "writable": shard in self.writable,
                "events": found.get("events", 0), "streams": found.get("streams", 0), "bytes": found.get("bytes", 0),
            })
        return {
            "root": str(self.root), "buckets": self.layout.buckets, "shards": shards,
            "events": sum(s["events"] for s in shards), "streams": sum(s["streams"] for s in shards),
        }

    def _repr_html_(self) -> str:
        if self._closed:
            return f"<p>{html.escape(repr(self))}</p>"
        info = self.info()
        rows = "".join(
            f"<tr><td>{s['shard']}</td><td><code>{html.escape(s['path'])}</code></td>"
            f"<td>{'writes' if s['writable'] else 'reads'}</td><td style='text-align:right'>{s['streams']:,}</td>"
            f"<td style='text-align:right'>{s['events']:,}</td></tr>"
            for s in info["shards"]
        )
        return (
            f"<div><b>ShardedStore</b> <code>{html.escape(info['root'])}</code>: {info['events']:,} events in "
            f"{info['streams']:,} streams, {self.shards} shards, {info['buckets']} buckets"
            f"<table><tr><th>shard</th><th>directory</th><th>this process</th><th>streams</th><th>events</th></tr>"
            f"{rows}</table></div>"
        )

    def __repr__(self) -> str:
        writes = ", ".join(map(str, sorted(self.writable))) or "none"
        return f"ShardedStore({self.root}: {self.shards} shards, {self.layout.buckets} buckets, writes {writes})"
