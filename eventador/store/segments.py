"""Flushed events: immutable segments, each covering a contiguous range of positions.

On disk a segment is one Parquet file sorted by (stream_id, version), with small
row groups whose statistics locate one stream without scanning the file. The
in-memory store keeps the same sorted tables in memory. Files are written
atomically: a temporary name, fsync, rename, fsync of the directory. Each
carries a checksum of its bytes, checked before a process first reads it
(``checksums.py``).
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eventador.codec import Decoder
from eventador.errors import CorruptionError, SchemaError
from eventador.messages import Event
from eventador.store.cache import column_cache, holding, needs_disk
from eventador.store.catalog import FileEntry, FileFacts
from eventador.store.checksums import PLACEHOLDER, remember, seal, verify_once
from eventador.store.columns import column_name, exact_columns
from eventador.store.records import RecordedEvent, build_records, current_types
from eventador.store.wal import fsync_directory
from eventador.upcasting import ColumnSource, column_plan, upcasters

__all__ = [
    "EvictedFile", "FileSegment", "MemorySegment", "Segment", "sort_for_segment", "to_events", "to_records",
    "write_segment",
]

SQL_HOLD_SECONDS = 60.0  # an evicted file fetched for SQL stays so long: a relation reads it by name when run
ROW_GROUP_ROWS = 4096  # small: reading one stream decodes 4,096 rows, not more; DuckDB scans lose ~10%
RECORD_COLUMNS = [
    "stream_id",
    "version",
    "position",
    "event_type",
    "payload",
    "event_id",
    "recorded_at",
    "occurred_at",
    "metadata",
    "schema_version",  # absent from files written before versions: read as 1
]
LEAN_COLUMNS = ["stream_id", "version", "event_type", "recorded_at", "occurred_at", "schema_version"]  # a replay's


def sort_for_segment(table: pa.Table) -> pa.Table:
    """`table` in (stream_id, version) order; as it is when already so (a bulk import's rows
    are), since taking every column in a new order costs more than the import's write."""
    order = pc.sort_indices(table, [("stream_id", "ascending"), ("version", "ascending")])
    if np.array_equal(order.to_numpy(), np.arange(len(table))):
        return table
    return table.take(order)


class NeedPayload(Exception):
    """Some rows could not be built from typed columns and the payload was not read."""


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while bulk reads build objects that hold no
    cycles: collections triggered by allocating them would cost a third of the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def to_records(
    table: pa.Table, decode: Decoder, classes: dict[str, type[Event]] | None = None
) -> list[RecordedEvent]:
    """RecordedEvents for every row of `table`, in its order.

    Events of types whose typed columns are exact (see ``exact_columns``) and
    present in `table` are built from those columns; the rest from CBOR.
    The cyclic garbage collector is paused meanwhile: the new objects hold no
    cycles, and collections triggered by allocating them cost a third of the time.
    """
    with paused_gc():
        return _to_records(table, decode, classes)


def to_events(
    table: pa.Table, decode: Decoder, classes: dict[str, type[Event]] | None = None
) -> list[Event]:
    """The typed event of every row of `table` (which has ``event_type``, and ``payload``
    unless every type is built from its typed columns), without the envelope."""
    with paused_gc():
        return _events(table, python_values(table.column("event_type")), decode, classes)


def python_values(column: pa.ChunkedArray) -> list[Any]:
    """``to_pylist``, quick for dictionary columns too (pyarrow builds a scalar per row
    for them): each distinct value is made once, and repeated."""
    out: list[Any]
    if not pa.types.is_dictionary(column.type):
        out = column.to_pylist()
        return out
    out = []
    for chunk in column.chunks:
        if chunk.null_count or len(chunk) * 4 < len(chunk.dictionary):  # a few rows: not the whole dictionary
            out.extend(chunk.dictionary.take(chunk.indices).to_pylist())
        else:
            out.extend(map(chunk.dictionary.to_pylist().__getitem__, chunk.indices.to_numpy().tolist()))
    return out


def schema_versions(table: pa.Table) -> list[int]:
    """Each row's schema version (1 in files written before versions were recorded)."""
    if "schema_version" not in table.column_names:
        return [1] * table.num_rows
    column = table.column("schema_version")
    return python_values(pc.fill_null(column, 1) if column.null_count else column)


def _located(exc: SchemaError, table: pa.Table, row: int) -> SchemaError:
    if "position" in table.column_names:
        return exc.at(table.column("position")[row].as_py())
    stream_id, version = table.column("stream_id")[row].as_py(), table.column("version")[row].as_py()
    return exc.at(where=f"stream {stream_id!r} version {version}")


def _events(
    table: pa.Table, types: list[str], decode: Decoder, classes: dict[str, type[Event]] | None
) -> list[Event]:
    events: list[Event | None] = [None] * table.num_rows
    if classes:
        _events_from_columns(table, types, classes, events)
    missing = [i for i, e in enumerate(events) if e is None]
    if missing:
        if "payload" not in table.column_names:
            raise NeedPayload  # rare: a typed column held a null; the caller reads again with CBOR
        payloads = table.column("payload")
        if len(missing) < len(events):
            payloads = payloads.take(missing)
        versions = schema_versions(table)
        for i, payload in zip(missing, payloads.to_pylist(), strict=True):
            try:
                events[i] = decode(types[i], payload, versions[i])
            except SchemaError as exc:
                raise _located(exc, table, i) from None
    return events  # type: ignore[return-value]  # every row has its event now


def _to_records(
    table: pa.Table, decode: Decoder, classes: dict[str, type[Event]] | None
) -> list[RecordedEvent]:
    types = python_values(table.column("event_type"))
    events = _events(table, types, decode, classes)
    cols: list[Sequence[Any]] = []
    for name in RECORD_COLUMNS:
        if name == "event_type":
            cols.append(current_types(types, events))
        elif name == "payload":
            cols.append(events)
        elif name == "schema_version":
            cols.append(schema_versions(table))
        else:
            column = table.column(name)
            if name == "occurred_at" and column.null_count < len(column):
                # Null where it is recorded_at, as in every tier (a file written for a lake has every one).
                column = pc.if_else(pc.equal(column, table.column("recorded_at")), pa.scalar(None, column.type), column)
            if name in ("recorded_at", "occurred_at"):
                column = column.cast(pa.int64())
            elif name == "event_id":
                column = column.cast(pa.binary())  # 4x quicker to_pylist than fixed-size binary
            cols.append(python_values(column))
    return build_records(cols)


def columns_versions(table: pa.Table) -> pa.ChunkedArray | pa.Array:
    """Each row's ``columns_version``: the schema version its typed columns hold (older
    files: the stored version, or 1)."""
    n = table.num_rows
    versions: Any = pa.nulls(n, pa.int16())
    for name in ("columns_version", "schema_version"):
        if name in table.column_names:
            versions = pc.coalesce(versions, table.column(name))
    return pc.fill_null(versions, 1)


def field_sources(event_type: str, cls: type[Event], version: int) -> dict[str, ColumnSource] | None:
    """Where each field of `cls` comes from for rows whose typed columns hold `version`
    of `event_type`: their own columns ({} when that is all), renamed ones, constants;
    None when only the payload can say (``upcasting.column_plan``)."""
    if version == cls.schema_version and upcasters.get(event_type, version) is None:
        return {}
    found = column_plan(event_type, version)
    if found is None or found[0] != cls.schema_version:
        return None
    return found[1]


def _source_columns(event_type: str, plan: dict[str, pa.DataType], sources: dict[str, ColumnSource]) -> list[str]:
    """The stored typed columns a field plan reads (renames resolved)."""
    out = []
    for field in plan:
        kind, value = sources.get(field, ("column", field))
        if kind != "value":
            out.append(column_name(event_type, value if kind == "column" else field))
    return out


def _usable(
    event_type: str, plan: dict[str, pa.DataType], sources: dict[str, ColumnSource], schema: pa.Schema
) -> list[str] | None:
    """The typed columns to read for a field plan, or None when the file lacks one (or
    holds it as another type): those rows then need the payload."""
    out = []
    for field, wanted in plan.items():
        kind, value = sources.get(field, ("column", field))
        if kind == "value":
            continue
        name = column_name(event_type, value if kind == "column" else field)
        index = schema.get_field_index(name)
        if index >= 0 and _value_type(schema.field(index).type) == wanted:
            out.append(name)
        elif kind == "column" or index >= 0:
            return None
    return out


def _events_from_columns(
    table: pa.Table, types: list[str], classes: dict[str, type[Event]], events: list[Event | None]
) -> None:
    names = set(table.column_names)
    distinct = set(types)
    new = object.__new__
    versions = columns_versions(table)
    present = pc.unique(versions).to_pylist()
    for event_type in distinct:
        cls = classes.get(event_type)
        plan = exact_columns(cls) if cls is not None else None
        if cls is None or plan is None:
            continue
        for version in present:
            sources = field_sources(event_type, cls, version)
            if sources is None:
                continue  # the payload, upcast in Python
            if len(distinct) == 1 and len(present) == 1:
                rows = None
                part = table
            else:
                mask = pc.and_(pc.equal(table.column("event_type"), event_type), pc.equal(versions, version))
                rows = pc.indices_nonzero(mask)
                if not len(rows):
                    continue
                part = table.take(rows)
            values = _field_values(event_type, plan, sources, part, names)
            if values is None:
                continue  # a column missing, of another type, or with a null: the payload decides
            if plan:
                # A constant field repeats without end: the rows bound the map (when every
                # field is a constant, an upcaster having added them all, nothing else does).
                built = list(itertools.islice(map(_maker(cls, tuple(plan)), *values), part.num_rows))
            else:
                built = list(map(new, itertools.repeat(cls, part.num_rows)))
            if rows is None:
                events[:] = built
            else:
                for i, obj in zip(rows.to_pylist(), built, strict=True):
                    events[i] = obj


def _field_values(
    event_type: str, plan: dict[str, pa.DataType], sources: dict[str, ColumnSource], part: pa.Table, names: set[str]
) -> list[Any] | None:
    """Per field of `plan`, its values for the rows of `part` (a list, or a repeat of a
    constant); None when some field cannot be taken from the columns exactly."""
    out: list[Any] = []
    for field, kind_wanted in plan.items():
        kind, value = sources.get(field, ("column", field))
        name = column_name(event_type, value if kind == "column" else field)
        if kind == "value" or (kind == "default" and (name not in names or part.column(name).null_count == len(part))):
            out.append(itertools.repeat(value if kind != "column" else None))
            continue
        if kind == "default" or name not in names:
            return None
        column = part.column(name)
        if _value_type(column.type) != kind_wanted or column.null_count:
            return None
        out.append(python_values(column))
    return out


def _value_type(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


_makers: weakref.WeakKeyDictionary[type, dict[tuple[str, ...], Callable[..., Event]]] = weakref.WeakKeyDictionary()


def _maker(cls: type[Event], fields: tuple[str, ...]) -> Callable[..., Event]:
    """A function of the field values (in `fields` order) that builds an instance of `cls`
    without ``__init__``, filling its ``__dict__`` in place: the quickest way CPython has,
    about twice as quick as building a dict per row and assigning it."""
    per_class = _makers.setdefault(cls, {})
    make = per_class.get(fields)
    if make is None:
        args = ", ".join(f"a{i}" for i in range(len(fields)))
        body = "".join(f"    d[{name!r}] = a{i}\n" for i, name in enumerate(fields))
        namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
        exec(f"def make({args}):\n    o = new(cls)\n    d = o.__dict__\n{body}    return o\n", namespace)
        make = per_class[fields] = namespace["make"]
    return make


class Segment:
    """Common reads over a sorted table of events; subclasses say where the table lives."""

    first_position: int
    last_position: int
    rows: int

    def schema(self) -> pa.Schema:
        raise NotImplementedError

    def _groups_for(self, stream_id: str, from_version: int = 1, to_version: int | None = None) -> list[int] | None:
        """Row groups that may hold the stream's events in the version range; None means all."""
        return None

    def _read(self, groups: list[int] | None, columns: list[str] | None) -> pa.Table:
        raise NotImplementedError

    def read_table(self) -> pa.Table:
        """Every row and column."""
        return self._read(None, None)

    def event_types(self) -> list[str]:
        """The distinct event types in the segment (read once)."""
        cached: list[str] | None = getattr(self, "_event_types", None)
        if cached is None:
            column = self._read(None, ["event_type"]).column("event_type")
            cached = self._event_types = [t for t in pc.unique(column).to_pylist() if t is not None]
        return cached

    def type_versions(self) -> dict[str, list[int]]:
        """The columns versions of each event type in the segment (read once)."""
        cached: dict[str, list[int]] | None = getattr(self, "_type_versions", None)
        if cached is None:
            schema = self.schema()
            kept = [n for n in ("columns_version", "schema_version") if schema.get_field_index(n) >= 0]
            names = ["event_type", *kept]
            table = self._read(None, names)
            pairs = pa.table({"t": table.column("event_type"), "v": columns_versions(table)})
            cached = {}
            distinct = pairs.group_by(["t", "v"]).aggregate([])
            for t, v in zip(distinct.column("t").to_pylist(), distinct.column("v").to_pylist(), strict=True):
                cached.setdefault(t, []).append(v)
            self._type_versions = cached
        return cached

    def read_columns(
        self, classes: dict[str, type[Event]] | None, types: list[str] | None = None, *, lean: bool = False
    ) -> list[str]:
        """The columns a read needs: the envelope (`lean`: only what a replay needs), the
        exact typed columns of the known types (of `types` only, when given), and the CBOR
        payload only if some type cannot be built from its columns."""
        schema = self.schema()
        envelope = [
            n for n in (LEAN_COLUMNS if lean else RECORD_COLUMNS)
            if n != "payload" and (n != "schema_version" or schema.get_field_index(n) >= 0)
        ]
        if schema.get_field_index("columns_version") >= 0:
            envelope.append("columns_version")
        typed: list[str] = []
        need_payload = not classes
        present = self.event_types() if classes else []
        wanted = present if types is None else sorted(set(present).intersection(types))
        versions = self.type_versions() if wanted else {}
        for event_type in wanted:
            cls = classes.get(event_type) if classes else None
            plan = exact_columns(cls) if cls is not None else None
            for version in versions.get(event_type, [1]):
                sources = None if cls is None or plan is None else field_sources(event_type, cls, version)
                columns = None if sources is None or plan is None else _usable(event_type, plan, sources, schema)
                if columns is None:
                    need_payload = True
                else:
                    typed.extend(c for c in columns if c not in typed)
        return [*envelope, *(["payload"] if need_payload else []), *typed]

    def stream_table(
        self,
        stream_id: str,
        from_version: int,
        to_version: int | None,
        classes: dict[str, type[Event]] | None = None,
        *,
        lean: bool = False,
        limit: int | None = None,
        newest: bool = False,
        upto_position: int | None = None,
    ) -> pa.Table | None:
        """The stream's rows in the version range, in version order (None when there are none);
        with `limit`, only the first `limit` of them (`newest`: the last), read from the row
        groups at that end until they hold enough; `upto_position`: only rows at or before it."""
        groups = self._groups_for(stream_id, from_version, to_version)
        if groups is not None and not groups:
            return None
        columns = self.read_columns(classes, lean=lean)
        cut = upto_position is not None and upto_position < self.last_position
        if limit is None or groups is None or cut:
            table = stream_rows(self._read(groups, columns), stream_id, from_version, to_version)
            if table is not None and cut:
                table = table.filter(pc.less_equal(table.column("position"), upto_position))
            if table is None or not table.num_rows:
                return None
            return table if limit is None else ends(table, limit, newest=newest)
        parts: list[pa.Table] = []
        found = 0
        for group in reversed(groups) if newest else groups:
            part = stream_rows(self._read([group], columns), stream_id, from_version, to_version)
            if part is not None:
                parts.append(part)
                found += part.num_rows
                if found >= limit:
                    break
        if not parts:
            return None
        return ends(pa.concat_tables(parts[::-1] if newest else parts), limit, newest=newest)

    def position_rows(
        self, from_position: int, to_position: int, types: list[str] | None,
        classes: dict[str, type[Event]] | None = None,
    ) -> pa.Table:
        """Like ``position_table``, taking only the rows of those positions (found by
        ``rows_by_position``): what reading a few events by position costs."""
        start = from_position - self.first_position
        rows = self.rows_by_position()[start : start + to_position - from_position + 1]
        table = self._take(rows, self.read_columns(classes, types))
        if types is not None:
            table = table.filter(pc.is_in(table.column("event_type"), value_set=pa.array(types, pa.string())))
        return table

    def rows_by_position(self) -> np.ndarray:
        """The row of each position (at index ``position - first_position``; read once): rows are
        sorted by stream, so the events of a range of positions are spread through the segment."""
        cached: np.ndarray | None = getattr(self, "_rows_by_position", None)
        if cached is None:
            cached = self._rows_by_position = self._position_index()
        return cached

    def _position_index(self) -> np.ndarray:
        positions = self._read(None, ["position"]).column("position").to_numpy()
        index = np.empty(self.rows, np.int32)  # a segment holds fewer than 2**31 rows
        index[positions - self.first_position] = np.arange(self.rows, dtype=np.int32)
        return index

    def _take(self, rows: np.ndarray, columns: list[str]) -> pa.Table:
        """The given rows' `columns`, in that order."""
        return self._read(None, columns).take(rows)

    def position_table(
        self, from_position: int, to_position: int, types: list[str] | None,
        classes: dict[str, type[Event]] | None = None,
    ) -> pa.Table:
        """Rows with from_position <= position <= to_position, in position order."""
        table = self._read(None, self.read_columns(classes, types))
        mask = None
        if from_position > self.first_position or to_position < self.last_position:
            pos = table.column("position")
            mask = pc.and_(pc.greater_equal(pos, from_position), pc.less_equal(pos, to_position))
        if types is not None:
            type_mask = pc.is_in(table.column("event_type"), value_set=pa.array(types, pa.string()))
            mask = type_mask if mask is None else pc.and_(mask, type_mask)
        if mask is not None:
            table = table.filter(mask)
        return table.take(pc.sort_indices(table.column("position")))

    def max_recorded_us(self) -> int:
        """The newest recorded_at in the segment, in µs since the epoch (read once)."""
        cached: int | None = getattr(self, "_max_recorded_us", None)
        if cached is None:
            column = self._read(None, ["recorded_at"]).column("recorded_at").cast(pa.int64())
            value = pc.max(column).as_py()
            cached = self._max_recorded_us = int(value) if value is not None else 0
        return cached

    def last_position_recorded_by(self, us: int) -> int:
        """The highest position recorded at or before `us` (µs since the epoch); 0 if none."""
        table = self._read(None, ["position", "recorded_at"])
        kept = pc.less_equal(table.column("recorded_at").cast(pa.int64()), us)
        value = pc.max(table.column("position").filter(kept)).as_py()
        return int(value) if value is not None else 0

    def heads(self) -> pa.Table:
        """stream_id and max version (``version_max``) of each stream in the segment."""
        table = self._read(None, ["stream_id", "version"])
        return table.group_by("stream_id").aggregate([("version", "max")])


def stream_rows(table: pa.Table, stream_id: str, from_version: int, to_version: int | None) -> pa.Table | None:
    """The rows of one stream in a version range, from a table sorted by (stream_id, version).

    The stream's rows are one contiguous run, found by binary search (a dozen values
    looked at, not thousands compared) and cut as a zero-copy slice.
    """
    keys = _Column(table.column("stream_id"))
    lo = bisect.bisect_left(keys, stream_id)
    hi = bisect.bisect_right(keys, stream_id, lo)
    if lo == hi:
        return None
    return versions_between(table.slice(lo, hi - lo), from_version, to_version)


def ends(table: pa.Table, limit: int, *, newest: bool) -> pa.Table:
    """The first `limit` rows of `table` (`newest`: the last), as a zero-copy slice."""
    if table.num_rows <= limit:
        return table
    return table.slice(table.num_rows - limit) if newest else table.slice(0, limit)


def versions_between(table: pa.Table, from_version: int, to_version: int | None) -> pa.Table | None:
    """The rows of one stream's `table` (in version order) with from_version <= version <= to_version."""
    if from_version > 1 or to_version is not None:
        versions = table.column("version")
        first, last = versions[0].as_py(), versions[-1].as_py()
        if last - first + 1 == table.num_rows:  # consecutive, as every file holds them: cut by arithmetic
            start = max(from_version, first) - first
            stop = (min(to_version, last) if to_version is not None else last) - first + 1
            table = table.slice(start, max(0, stop - start))
        else:
            mask = pc.greater_equal(versions, from_version)
            if to_version is not None:
                mask = pc.and_(mask, pc.less_equal(versions, to_version))
            table = table.filter(mask)
    return table if table.num_rows else None


class _Column(Sequence[Any]):
    """An Arrow column seen as a Python sequence, for ``bisect``."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        self._column = column

    def __len__(self) -> int:
        return len(self._column)

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]  # ints only
        return self._column[i].as_py()


class MemorySegment(Segment):
    """A sorted Arrow table kept in memory (the in-memory store's flushed events)."""

    def __init__(self, table: pa.Table, first_position: int, last_position: int) -> None:
        self.table = table
        self.first_position, self.last_position, self.rows = first_position, last_position, table.num_rows
        stream_ids = table.column("stream_id")
        self._starts = stream_ids.to_pylist() if table.num_rows <= 2_000_000 else None

    def schema(self) -> pa.Schema:
        return self.table.schema

    def stream_table(
        self,
        stream_id: str,
        from_version: int,
        to_version: int | None,
        classes: dict[str, type[Event]] | None = None,
        *,
        lean: bool = False,
        limit: int | None = None,
        newest: bool = False,
        upto_position: int | None = None,
    ) -> pa.Table | None:
        ids = self._starts
        if ids is None or (upto_position is not None and upto_position < self.last_position):
            return super().stream_table(
                stream_id, from_version, to_version, classes, lean=lean, limit=limit, newest=newest,
                upto_position=upto_position,
            )
        lo = bisect.bisect_left(ids, stream_id)
        hi = bisect.bisect_right(ids, stream_id, lo)
        if lo == hi:
            return None
        table = versions_between(self.table.slice(lo, hi - lo), from_version, to_version)
        return table if table is None or limit is None else ends(table, limit, newest=newest)

    def _read(self, groups: list[int] | None, columns: list[str] | None) -> pa.Table:
        return self.table.select(columns) if columns else self.table


@dataclass(frozen=True, slots=True)
class EvictedFile:
    """What a ``FileSegment`` opened without its file (evicted to the cold tier) knows of it, from
    the catalog: its size, its store's id (checked at the first read) and its newest recorded_at."""

    bytes: int
    store_id: str | None
    max_recorded_us: int


class FileSegment(Segment):
    """One Parquet file of the store.

    With a cold tier (store/coldtier.py) the file may be evicted from the local disk once a
    copy is in object storage: its footer's facts stay in memory, its handles are closed
    (``evict``), and the next read fetches it again (``_handles``, the one way a read reaches
    the file's bytes). A file evicted before the store was opened is opened from its catalog
    entry alone (``evicted``: its size, and what the catalog keeps of it): its footer is read,
    and checked against the entry, at its first read.
    """

    _meta: pq.FileMetaData  # these, from the footer: read at construction, or at the first read (``_ready``)
    _schema: pa.Schema
    _grouped_schema: pa.Schema
    _group_starts: np.ndarray
    _mins: list[str]
    _maxs: list[str]
    _versions: list[tuple[int, int] | None]  # per group: version range if it has min/max

    def __init__(
        self, path: Path, first_position: int, last_position: int, rows: int,
        fetch: Callable[[Path], None] | None = None, *, evicted: EvictedFile | None = None,
    ) -> None:
        self.path = path
        self.first_position, self.last_position, self.rows = first_position, last_position, rows
        self._lock = threading.Lock()
        self._token = column_cache.token()
        self._fetch = fetch
        self.uploaded = evicted is not None
        """Whether the cold tier holds a copy (the catalog said so): only then is the file evicted or fetched."""
        self.fetched = False
        """Whether this process fetched the file from the cold tier (since the last ``evict``)."""
        self.last_used = 0.0
        """When the file was last read (``time.monotonic``): eviction takes the least recently used first."""
        self.sql_until = 0.0
        """Until when a SQL relation may read the file by name (``time.monotonic``): it is not evicted before."""
        self._file: pq.ParquetFile | None = None
        self._grouped: pq.ParquetFile | None = None
        self._null_columns: dict[int, frozenset[str]] = {}
        self._footer_read = False
        self.bytes = 0
        """The file's size (kept: the file may be evicted)."""
        self._facts: bytes | None = None
        self._expected: EvictedFile | None = evicted
        if evicted is not None:  # nothing is fetched until a read needs the file
            self.bytes = evicted.bytes
            self._max_recorded_us = evicted.max_recorded_us
            return
        self._handles(uploaded=fetch is not None and not path.exists())

    def _ready(self) -> None:
        """The footer read (the file fetched if it must be, for a file opened evicted)."""
        if not self._footer_read:
            needs_disk()
            with holding(self._lock):
                self._handles()

    def _read_footer(self, file: pq.ParquetFile, grouped: pq.ParquetFile) -> None:
        """Take what the footer says (once), checked against the catalog's entry.

        Raises:
            CorruptionError: the file is not the one the entry names.
        """
        path = self.path
        meta = self._meta = file.metadata
        arrow_schema = self._schema = file.schema_arrow
        facts = (arrow_schema.metadata or {}).get(b"eventador")
        expected = self._expected
        if expected is not None:  # opened evicted: this is the fetched copy's first read
            described = FileFacts.from_schema(arrow_schema)
            if os.path.getsize(path) != expected.bytes or (
                described is not None and described.disagreement(self._entry(), expected.store_id) is not None
            ):
                raise CorruptionError(str(path), "the copy fetched from the lake's cold tier is another file")
        else:
            self.bytes = os.path.getsize(path)
        self._facts = facts
        if meta.num_rows != self.rows:
            raise CorruptionError(str(path), f"holds {meta.num_rows} events, the catalog says {self.rows}")
        if self.rows != self.last_position - self.first_position + 1:
            raise CorruptionError(
                str(path),
                f"the catalog says it holds {self.rows} events at positions {self.first_position}-{self.last_position}",
            )
        self._grouped_schema = grouped.schema_arrow
        # The first row of each row group, and one past the last.
        self._group_starts = np.cumsum([0, *(meta.row_group(g).num_rows for g in range(meta.num_row_groups))])
        index = arrow_schema.get_field_index("stream_id")
        version_index = arrow_schema.get_field_index("version")
        self._mins, self._maxs, self._versions = [], [], []
        self._check_positions(meta, arrow_schema.get_field_index("position"))
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            stats = group.column(index).statistics
            if stats is None or not stats.has_min_max:
                self._mins, self._maxs = [], []
                break
            self._mins.append(stats.min)
            self._maxs.append(stats.max)
            versions = group.column(version_index).statistics if version_index >= 0 else None
            if versions is not None and versions.has_min_max:
                self._versions.append((versions.min, versions.max))
            else:
                self._versions.append(None)
        self._footer_read = True

    def _entry(self) -> FileEntry:
        return FileEntry(self.path.name, self.first_position, self.last_position, self.rows, self.bytes)

    def _check_positions(self, meta: pq.FileMetaData, column: int) -> None:
        """The file's positions, by its row groups' statistics, are the catalog's range
        (rows are sorted by stream: any group may hold the first or the last)."""
        if column < 0:
            return
        lows, highs = [], []
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(column).statistics
            if stats is None or not stats.has_min_max:
                return
            lows.append(stats.min)
            highs.append(stats.max)
        if lows and (min(lows), max(highs)) != (self.first_position, self.last_position):
            raise CorruptionError(
                str(self.path),
                f"holds positions {min(lows)}-{max(highs)}, the catalog says "
                f"{self.first_position}-{self.last_position}",
            )

    @property
    def size(self) -> int:
        return self.bytes

    def _handles(self, *, uploaded: bool = False) -> tuple[pq.ParquetFile, pq.ParquetFile]:
        """The file opened twice (plain, and with text as dictionaries), fetched first if it was
        evicted; for a caller holding the segment's lock (or constructing it: `uploaded`, the
        catalog records a copy of a file that is not here).

        Raises:
            CorruptionError: the file is missing (and not in a cold tier), damaged, unreadable,
                or a fetched copy is not the file this segment was (its size or its facts).
            LakeError: it is in the cold tier, which cannot be reached.
        """
        self.last_used = time.monotonic()
        if self._file is not None and self._grouped is not None:
            return self._file, self._grouped
        path = self.path
        self.uploaded = self.uploaded or uploaded
        fetching = self._fetch is not None and self.uploaded and not path.exists()
        if fetching:
            assert self._fetch is not None
            self._fetch(path)  # downloads and checks it (the choke point of every read: store/coldtier.py)
            self.fetched = True
        verify_once(path)  # before anything reads it: DuckDB checks no page checksum, pyarrow no footer
        try:
            # No pre-buffering: on a local disk it only adds a copy (it halves the cost of small reads).
            file = pq.ParquetFile(path, page_checksum_verification=True, pre_buffer=False)
            # Row-group reads (a stream's rows) take text as dictionaries: a row group holds
            # a few distinct ids, types and values, and building its 4,096 strings per column,
            # to keep a quarter of them, cost a third of the read. The same footer, parsed once.
            texts = [f.name for f in file.schema_arrow if pa.types.is_string(f.type)]
            self._texts = frozenset(texts)
            grouped = pq.ParquetFile(
                path, metadata=file.metadata, read_dictionary=texts, page_checksum_verification=True,
                pre_buffer=False,
            )
        except (OSError, pa.ArrowException) as exc:
            raise CorruptionError(str(path), f"unreadable Parquet file: {exc}") from exc
        try:
            if not self._footer_read:
                self._read_footer(file, grouped)
            elif fetching:  # fetched again: the same file, not one of another store or range
                facts = (file.schema_arrow.metadata or {}).get(b"eventador")
                if os.path.getsize(path) != self.bytes or facts != self._facts:
                    raise CorruptionError(str(path), "the copy fetched from the lake's cold tier is another file")
        except CorruptionError:
            grouped.close()
            file.close()
            if fetching:
                path.unlink(missing_ok=True)  # not kept: the next read fetches again
            raise
        self._file, self._grouped = file, grouped
        return file, grouped

    def ensure_local(self, hold_for: float = 0.0) -> None:
        """Fetch the file if it was evicted, for readers that open it by name (DuckDB, pins);
        `hold_for`: seconds it is then kept from eviction (a SQL relation runs when read)."""
        if self._fetch is None:
            return  # no cold tier: never evicted
        with holding(self._lock):
            self.sql_until = max(self.sql_until, time.monotonic() + hold_for)
            self._handles()

    def evict(self, remove: Callable[[Path], bool]) -> bool:
        """Close the file's handles and delete it locally with `remove` (which may refuse: a
        reader pins it); True when it is gone. Never a file without a copy in the cold tier."""
        with holding(self._lock):
            if not self.uploaded or self.sql_until > time.monotonic():
                return False
            self._close_handles()
            gone = remove(self.path)
            self.fetched = self.fetched and not gone
            return gone

    def _close_handles(self) -> None:
        file, grouped, self._file, self._grouped = self._file, self._grouped, None, None
        if grouped is not None:
            grouped.close()
        if file is not None:
            file.close()

    def last_position_recorded_by(self, us: int) -> int:
        """As ``Segment``'s, reading only the row groups whose recorded_at statistics
        straddle `us` (a row group all before it answers from its position statistics)."""
        self._ready()
        meta = self._meta
        schema = self._schema
        recorded, position = schema.get_field_index("recorded_at"), schema.get_field_index("position")
        best = 0
        straddling: list[int] = []
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            times, positions = group.column(recorded).statistics, group.column(position).statistics
            if times is None or positions is None or not (times.has_min_max and positions.has_min_max):
                straddling.append(g)
            elif times.max_raw <= us:
                best = max(best, int(positions.max_raw))
            elif times.min_raw <= us:
                straddling.append(g)
        if straddling:
            table = self._read(straddling, ["position", "recorded_at"])
            kept = pc.less_equal(table.column("recorded_at").cast(pa.int64()), us)
            value = pc.max(table.column("position").filter(kept)).as_py()
            best = max(best, int(value) if value is not None else 0)
        return best

    def schema(self) -> pa.Schema:
        self._ready()
        return self._schema  # read once: pyarrow converts the Parquet schema anew on every call

    def _groups_for(self, stream_id: str, from_version: int = 1, to_version: int | None = None) -> list[int] | None:
        self._ready()
        if not self._mins:
            return None
        # Groups are sorted by stream_id: the candidates are one contiguous run.
        start = bisect.bisect_left(self._maxs, stream_id)
        stop = bisect.bisect_right(self._mins, stream_id)
        groups = list(range(start, stop))
        if from_version > 1 or to_version is not None:
            # A group holding only this stream can be skipped by its version range.
            groups = [g for g in groups if not self._outside(g, stream_id, from_version, to_version)]
        return groups

    def _outside(self, group: int, stream_id: str, from_version: int, to_version: int | None) -> bool:
        versions = self._versions[group]
        if versions is None or self._mins[group] != stream_id or self._maxs[group] != stream_id:
            return False
        low, high = versions
        return bool(high < from_version or (to_version is not None and low > to_version))

    def _read(self, groups: list[int] | None, columns: list[str] | None) -> pa.Table:
        try:
            with holding(self._lock):
                if groups is None or columns is None:
                    needs_disk()
                    file = self._handles()[0]
                    if groups is None:
                        return file.read(columns=columns)
                    return file.read_row_groups(groups, columns=columns)
                return pa.concat_tables([self._read_group(g, columns) for g in groups])
        except (OSError, pa.ArrowException) as exc:
            raise CorruptionError(str(self.path), f"cannot read: {exc}") from exc

    def _read_group(self, group: int, columns: list[str], *, plain: bool = False) -> pa.Table:
        """One row group's `columns`, decoding only those the cache does not hold, and
        none that its statistics say is all null (no metadata, no own occurred time).

        Text comes as dictionaries, unless `plain`: a few rows taken from many row groups
        join into one plain column at once, where dictionaries would first be unified.
        Plain text is cached apart; the other columns are the same either way.
        """
        keys = [f"{c} (plain)" if plain and c in self._texts else c for c in columns]
        found = column_cache.get(self._token, group, keys)
        missing = [c for c, key in zip(columns, keys, strict=True) if key not in found]
        if missing:
            nulls = self._all_null(group)
            decode = [c for c in missing if c not in nulls]
            schema = self._schema if plain else self._grouped_schema
            read: dict[str, pa.ChunkedArray] = {}
            if decode:
                needs_disk()
                file, grouped = self._handles()
                source = file if plain else grouped
                # One thread: for a few KB of pages, waking the pool costs more than it saves.
                table = source.read_row_groups([group], columns=decode, use_threads=False)
                read.update(zip(table.column_names, table.columns, strict=True))
            rows = self._meta.row_group(group).num_rows
            for c in missing:
                if c in nulls:
                    read[c] = pa.chunked_array([pa.nulls(rows, schema.field(c).type)])
            new = pa.table({keys[columns.index(c)]: column for c, column in read.items()})
            column_cache.put(self._token, group, new)
            found.update(zip(new.column_names, new.columns, strict=True))
        return pa.table([found[key] for key in keys], names=columns)

    def _position_index(self) -> np.ndarray:
        # Kept in the column cache (as a pseudo row group -1): bounded with everything else
        # it holds, forgotten with the file.
        name = "row by position"
        found = column_cache.get(self._token, -1, [name])
        if found:
            index: np.ndarray = found[name].chunk(0).to_numpy()
            return index
        index = super()._position_index()
        column_cache.put(self._token, -1, pa.table({name: index}))
        return index

    def rows_by_position(self) -> np.ndarray:
        return self._position_index()

    def _take(self, rows: np.ndarray, columns: list[str]) -> pa.Table:
        """The rows' `columns`, in that order, from the row groups that hold them only (through the cache)."""
        self._ready()
        if not len(rows):
            return self._schema.empty_table().select(columns)
        starts = self._group_starts
        groups = (np.searchsorted(starts, rows, side="right") - 1).tolist()
        local = (rows - starts[groups]).tolist()
        tables: dict[int, pa.Table] = {}
        parts = []
        try:
            with holding(self._lock):
                run = 0  # rows that follow each other in one group are taken as one slice
                for i, (group, row) in enumerate(zip(groups, local, strict=True)):
                    if i + 1 < len(local) and groups[i + 1] == group and local[i + 1] == row + 1:
                        run += 1
                        continue
                    table = tables.get(group)
                    if table is None:
                        table = tables[group] = self._read_group(group, columns, plain=True)
                    parts.append(table.slice(row - run, run + 1))
                    run = 0
        except (OSError, pa.ArrowException) as exc:
            raise CorruptionError(str(self.path), f"cannot read: {exc}") from exc
        return pa.concat_tables(parts).combine_chunks()

    def _all_null(self, group: int) -> frozenset[str]:
        """The columns holding only nulls in `group`, from its statistics (read once)."""
        nulls = self._null_columns.get(group)
        if nulls is None:
            meta = self._meta.row_group(group)
            names = []
            flat = meta.num_columns == len(self._schema.names)  # else leaves and fields do not pair up
            for i, name in enumerate(self._schema.names if flat else []):
                stats = meta.column(i).statistics
                if stats is not None and stats.has_null_count and stats.null_count == meta.num_rows:
                    names.append(name)
            nulls = self._null_columns[group] = frozenset(names)
        return nulls

    def close(self) -> None:
        column_cache.forget(self._token)
        with holding(self._lock):
            self._close_handles()


def write_segment(
    directory: Path, table: pa.Table, *, durable: bool, metadata: dict[str, str] | None = None
) -> FileSegment:
    """Write `table` (already sorted) as a new Parquet file, atomically; returns the segment.

    `metadata`: key-value pairs the file carries (in place of any the table has).
    Costs one pass of zstd compression (see ``column_layout``) and, when `durable`, two fsyncs.
    """
    if metadata is not None:
        table = table.replace_schema_metadata(metadata)
    positions = table.column("position")
    first = pc.min(positions).as_py()
    last = pc.max(positions).as_py()
    name = f"{first:012d}-{last:012d}.parquet"
    final = directory / name
    temp = directory / f".tmp-{name}"
    # The sink is closed even when the write fails (pyarrow's own file is not).
    with (
        pa.OSFile(str(temp), "wb") as sink,
        pq.ParquetWriter(sink, table.schema, write_page_checksum=True, **column_layout(table)) as writer,
    ):
        writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        writer.add_key_value_metadata(PLACEHOLDER)
    seal(temp)
    if durable:
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(temp, final)
    remember(final)  # its checksum was just taken from these bytes
    if durable:
        fsync_directory(directory)
    return FileSegment(final, first, last, table.num_rows)


_JSON_TEXTS = ("metadata_json", "payload_json")  # payload_json: in files written for a lake (store/lake_schema.py)
_DELTA_COLUMNS = ("position", "version")  # rising runs: delta-packed, they need no compression
_SMALL_DICTIONARY = 16 << 10


def column_layout(table: pa.Table) -> dict[str, Any]:
    """How each column is encoded and compressed (``pq.write_table`` keywords).

    Text columns use dictionaries: smaller files, faster GROUP BY. zstd goes only where
    it saves bytes. Dictionary indices of text with few distinct values (stream ids,
    event types, currencies) and random event ids do not shrink, and every compressed
    page read costs a fresh decompressor: about a tenth of reading one stream's rows.
    """
    # JSON texts are mostly unique: a dictionary would be built and dropped.
    texts = [f.name for f in table.schema if pa.types.is_string(f.type) and f.name not in _JSON_TEXTS]
    plain = ["event_id", *_DELTA_COLUMNS]
    for name in texts:
        distinct = pc.unique(table.column(name))
        # Few and short: a row group's dictionary page stays small uncompressed.
        if len(distinct) * 16 <= table.num_rows and distinct.nbytes <= _SMALL_DICTIONARY:
            plain.append(name)
    compression = {name: "none" if name in plain else "zstd" for name in table.column_names}
    return {
        "compression": compression,
        "use_dictionary": texts,
        "column_encoding": {n: "DELTA_BINARY_PACKED" for n in _DELTA_COLUMNS if n in table.column_names},
    }


def empty_like(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def unify(tables: list[pa.Table]) -> pa.Table:
    """Concatenate tables whose typed columns differ (missing columns read as null).

    A column whose type changed between them (a field retyped by a new version of its
    class) becomes text in all of them, exact, as DuckDB unites such Parquet files; the
    typed views cast it back per version, and reads decode the CBOR payload.
    """
    try:
        return pa.concat_tables(tables, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    kinds: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for field in table.schema:
            kinds.setdefault(field.name, set()).add(field.type)
    mixed = {name for name, found in kinds.items() if len(found - {pa.null()}) > 1}
    as_text = []
    for table in tables:
        for name in mixed.intersection(table.column_names):
            i = table.column_names.index(name)
            table = table.set_column(i, name, table.column(i).cast(pa.string()))
        as_text.append(table)
    return pa.concat_tables(as_text, promote_options="default")


def describe(segment: Segment) -> dict[str, Any]:
    return {
        "first_position": segment.first_position,
        "last_position": segment.last_position,
        "rows": segment.rows,
        "path": str(getattr(segment, "path", "(memory)")),
    }
