"""Reading a lake table without the store's writer: ``ev.open_lake(uri)``.

``sql`` runs DuckDB over the whole table (every shard) as the view ``events``, in the lake's
schema (store/lake_schema.py). The store's reads (``read_stream``, ``read_all``,
``stream_version``, ``as_of`` by position, ``recorded_at`` or ``occurred_at``) and
``Repository(lake.events, ...).get`` work on one shard's events, as the store that published them
reads them: positions are a shard's own (there is no position across shards). They load the
shard's envelope and CBOR payloads (not its typed columns) into memory once; ``refresh``
loads what was published since. Delta's own time travel is by commit time, which is neither
``recorded_at`` nor ``occurred_at``: ``as_of`` is the store's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from eventador.errors import InvalidInputError, LakeError
from eventador.messages import TypeRegistry
from eventador.store.buffer import HotBuffer
from eventador.store.lake import load_table, table_schema
from eventador.store.lake_schema import LAKE_ENVELOPE, SHARD, to_store_layout
from eventador.store.opening import _Recovered
from eventador.store.reads import PastView
from eventador.store.records import RecordedEvent
from eventador.store.segments import MemorySegment, sort_for_segment
from eventador.store.sqlguard import sql_error
from eventador.store.store import EventStore

__all__ = ["Lake", "open_lake"]

_READ = [name for name in LAKE_ENVELOPE.names if name != "payload_json"]


def open_lake(
    uri: str | os.PathLike[str],
    *,
    storage_options: dict[str, str] | None = None,
    shard: str | None = None,
    registry: TypeRegistry | None = None,
) -> Lake:
    """The lake table at `uri` (a path or ``s3://bucket/prefix``), read-only.

    `storage_options`: deltalake's (as for ``LakeTarget``). `shard`: whose events the store's
    reads see (None: the table's only shard).

    Raises:
        LakeError: there is no lake table at `uri`, or it cannot be reached.
    """
    return Lake(os.fspath(uri), storage_options or {}, shard, registry)


class Lake:
    """A lake table, read-only; see ``open_lake``."""

    def __init__(
        self, uri: str, storage_options: dict[str, str], shard: str | None, registry: TypeRegistry | None
    ) -> None:
        self.uri = uri
        self.table = load_table(uri, storage_options)
        """The ``deltalake.DeltaTable`` (its file list, ``to_pyarrow_dataset``, history)."""
        if not set(LAKE_ENVELOPE.names) <= set(table_schema(self.table).names):
            raise LakeError(uri, "is a Delta table without eventador's columns")
        self._shard = shard
        self._registry = registry
        self._events: EventStore | None = None
        self._con: duckdb.DuckDBPyConnection | None = None

    # -- the whole table ------------------------------------------------------------------

    def dataset(self) -> Any:
        """The table's current files as a ``pyarrow.dataset.Dataset`` (what DuckDB and Dask read)."""
        return self.table.to_pyarrow_dataset()

    def files(self) -> list[str]:
        """The URIs of the table's current data files (for engines that read Parquet: Dask, Spark)."""
        return list(self.table.file_uris())

    def file_schema(self) -> pa.Schema:
        """The columns of the table's data files, all of them (a file written before a typed column
        existed lacks it). The partition column ``shard`` is in the files' paths
        (``shard=<name>/``), not in them. Dask needs the table's schema and that partition
        (``lake.dataset().schema``, README.md): given this schema alone it fails on such a file."""
        schema = table_schema(self.table)
        return pa.schema([f for f in schema if f.name != SHARD])

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> duckdb.DuckDBPyRelation:
        """DuckDB `query` over the view ``events``: every shard's events, in the lake's schema.

        Raises:
            SqlError: DuckDB refused the query.
        """
        if self._con is None:
            self._con = duckdb.connect()
            self._con.register("events", self.dataset())
        try:
            return self._con.sql(query, params=params)
        except duckdb.Error as exc:
            raise sql_error(exc) from exc

    def refresh(self) -> None:
        """See what was published since opening (or the last refresh)."""
        self.table.update_incremental()
        self.close()

    def close(self) -> None:
        """Let go of what reads loaded (the lake itself holds nothing open); reads load it again."""
        con, events, self._con, self._events = self._con, self._events, None, None
        if con is not None:
            con.close()
        if events is not None:
            events.close()

    def __enter__(self) -> Lake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one shard, as the store reads it ---------------------------------------------------

    @property
    def shard(self) -> str:
        """The shard whose events the store's reads see."""
        if self._shard is None:
            shards = sorted({p[SHARD] for p in self.table.partitions()})
            if len(shards) > 1:
                raise InvalidInputError(
                    f"lake {self.uri} holds shards {shards}: open_lake(..., shard=...) says whose events to read"
                )
            self._shard = shards[0] if shards else "main"
        return self._shard

    @property
    def events(self) -> EventStore:
        """The shard's events as a read-only in-memory store (loaded once; ``refresh`` loads anew):
        what ``Repository(lake.events, ...)`` and every other reader of a store take."""
        if self._events is None:
            self._events = self._load()
        return self._events

    def _load(self) -> EventStore:
        rows = self.dataset().to_table(columns=_READ, filter=pc.field(SHARD) == self.shard)
        table = sort_for_segment(to_store_layout(rows))
        n = table.num_rows
        positions = table.column("position")
        if n and (pc.min(positions).as_py(), pc.max(positions).as_py(), pc.count_distinct(positions).as_py()) != (
            1, n, n
        ):
            raise LakeError(self.uri, f"shard {self.shard!r} does not hold positions 1-{n} once each")
        store = EventStore(None, registry=self._registry)
        segment = MemorySegment(table, 1, n)
        heads = dict(zip(*(segment.heads().column(c).to_pylist() for c in ("stream_id", "version_max")), strict=True))
        recorded = segment.max_recorded_us() if n else 0
        store._install(_Recovered([segment] if n else [], heads, HotBuffer(n + 1), n, recorded, {}))
        store.read_only = True
        return store

    @property
    def last_position(self) -> int:
        """The shard's last published position."""
        return self.events.last_position

    def stream_version(self, stream_id: str) -> int:
        return self.events.stream_version(stream_id)

    def read_stream(self, stream_id: str, **options: Any) -> list[RecordedEvent]:
        """As ``EventStore.read_stream``."""
        return self.events.read_stream(stream_id, **options)

    def read_all(self, **options: Any) -> Iterator[RecordedEvent]:
        """As ``EventStore.read_all``."""
        return self.events.read_all(**options)

    def as_of(self, when: datetime | int, *, by: Literal["recorded_at", "occurred_at"] = "recorded_at") -> PastView:
        """As ``EventStore.as_of``: the shard at a position, or a ``recorded_at`` / ``occurred_at`` time."""
        return self.events.as_of(when, by=by)

    def __repr__(self) -> str:
        return f"Lake({self.uri!r}, version {self.table.version()})"

