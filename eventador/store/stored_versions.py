"""Which schema versions the stored rows' typed columns hold, from what is cheap to read.

The typed views (``store/typed_sql.py``) need a ``CASE`` over versions only where the
rows they read hold several: Parquet footers' statistics of ``columns_version`` and
``schema_version`` answer for the whole store in the usual case (every class at one
version); else each file's (and memory segment's) event types and versions are read
once per process, since they never change.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eventador.store.typed_sql import Versions

__all__ = ["stored_versions"]


def stored_versions(hot: pa.Table, segments: Sequence[pa.Table], files: Sequence[Path]) -> Versions:
    """The columns versions the rows of the views' sources hold: one for all of them when
    that is cheap to see (the hot tier's min and max, the Parquet footers of `files`, the
    in-memory `segments`' types and versions, read once each: the usual case, every class
    at one version); else per event type (each Parquet file's type and version columns read
    once per process: files never change; the hot tier's each time)."""
    found: set[int] = set()
    if hot.num_rows:
        found.update(_table_bounds(hot))
    for segment in segments:
        found.update(*_memory_by_type(segment).values())
    for path in files:
        found.update(_file_bounds(path))
    if len(found) == 1:
        return Versions(uniform=found.pop())
    by_type: dict[str, set[int]] = {}
    parts = [_table_by_type(hot), *(_memory_by_type(t) for t in segments), *(_file_by_type(p) for p in files)]
    for part in parts:
        if part is None:
            return Versions()
        for event_type, versions in part.items():
            by_type.setdefault(event_type, set()).update(versions)
    return Versions(by_type={t: frozenset(v) for t, v in by_type.items()})


def _row_versions(table: pa.Table) -> pa.ChunkedArray | pa.Array:
    """coalesce(columns_version, schema_version, 1) over `table`."""
    values: Any = None
    for name in ("columns_version", "schema_version"):
        if name in table.column_names:
            values = table.column(name) if values is None else pc.coalesce(values, table.column(name))
    if values is None:
        return pa.array([1] * table.num_rows, pa.int16())
    return pc.fill_null(values, 1)


def _table_bounds(table: pa.Table) -> set[int]:
    bounds = pc.min_max(_row_versions(table))
    return {bounds["min"].as_py(), bounds["max"].as_py()}


def _table_by_type(table: pa.Table) -> dict[str, frozenset[int]]:
    pairs = pa.table({"t": table.column("event_type"), "v": _row_versions(table)}).group_by(["t", "v"]).aggregate([])
    out: dict[str, set[int]] = {}
    for event_type, version in zip(pairs.column("t").to_pylist(), pairs.column("v").to_pylist(), strict=True):
        out.setdefault(event_type, set()).add(version)
    return {t: frozenset(v) for t, v in out.items()}


_memory_versions: dict[int, tuple[weakref.ref[pa.Table], dict[str, frozenset[int]]]] = {}


def _memory_by_type(table: pa.Table) -> dict[str, frozenset[int]]:
    """`_table_by_type` of an in-memory segment's table, once per table (they never change)."""
    entry = _memory_versions.get(id(table))
    if entry is not None and entry[0]() is table:
        return entry[1]
    found = _table_by_type(table)
    key = id(table)
    _memory_versions[key] = (weakref.ref(table, lambda _: _memory_versions.pop(key, None)), found)
    return found


_UNKNOWN = frozenset({-1, -2})  # two "versions": never uniform


def _file_key(path: Path) -> tuple[Path, int, int]:
    stat = path.stat()
    return path, stat.st_size, stat.st_mtime_ns


def _file_bounds(path: Path) -> frozenset[int]:
    try:
        return _file_bounds_cached(_file_key(path))
    except (OSError, pa.ArrowException):
        return _UNKNOWN  # SQL will name the problem when it reads the file


def _file_by_type(path: Path) -> dict[str, frozenset[int]] | None:
    try:
        return _file_by_type_cached(_file_key(path))
    except (OSError, pa.ArrowException):
        return None


@functools.lru_cache(maxsize=4096)
def _file_bounds_cached(key: tuple[Path, int, int]) -> frozenset[int]:
    """The columns versions a Parquet file's statistics allow (two or more: mixed)."""
    metadata = pq.ParquetFile(key[0]).metadata
    names = metadata.schema.names
    found: set[int] = set()
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        covered = False
        for name in ("columns_version", "schema_version"):
            if name not in names:
                continue
            stats = group.column(names.index(name)).statistics
            if stats is None or not stats.has_null_count:
                return _UNKNOWN
            if stats.null_count < group.num_rows:
                if not stats.has_min_max:
                    return _UNKNOWN
                found.update({stats.min, stats.max})
            if stats.null_count == 0:
                covered = True
                break
        if not covered and group.num_rows:
            found.add(1)  # rows with neither version: written before versions, read as 1
    return frozenset(found)


@functools.lru_cache(maxsize=4096)
def _file_by_type_cached(key: tuple[Path, int, int]) -> dict[str, frozenset[int]]:
    names = pq.ParquetFile(key[0]).schema_arrow.names
    wanted = [n for n in ("event_type", "columns_version", "schema_version") if n in names]
    return _table_by_type(pq.read_table(key[0], columns=wanted))
