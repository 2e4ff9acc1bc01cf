"""The lake's data files: one publish's rows written as a Parquet file by pyarrow, and the Delta
add action that names it, with the statistics readers skip files by.

``write_deltalake`` re-encodes a publish with every column dictionary-encoded and every
column's statistics gathered (about half of a publish's time). Here only the columns with
few distinct values are dictionary-encoded, the Parquet statistics are those of the columns
readers filter by, and the Delta statistics come from one Arrow pass per column. The file goes
through delta-rs's own object store (the table's storage options: the same endpoint, keys and
timeouts) under a new unique name, so a commit that fails and is retried writes another file:
a file written but never committed is not in the table (Delta's vacuum removes it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eventador.store.lake_schema import SHARD
from eventador.store.wal import fsync_directory

__all__ = ["add_action", "encode_file", "file_stats", "link_file", "put_file", "table_path"]

_DICTIONARY = ["stream_id", "event_type", "stream_type", "metadata_json"]  # few distinct values
_PARQUET_STATISTICS = ["position", "stream_id", "version", "event_type", "recorded_at", "occurred_at"]
_NO_BOUNDS = frozenset({"payload_json", "metadata_json"})  # long texts nobody filters by
_TEXT_BOUND = 32  # characters: Delta readers compare string bounds of at most this length
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def encode_file(rows: pa.Table, shard: str) -> tuple[str, pa.Buffer, str]:
    """`rows` (the lake's layout, shard `shard`) as a new Parquet file of the table: its path
    in the table (a new unique name), its bytes and its Delta statistics."""
    buffer = pa.BufferOutputStream()
    data = rows.drop_columns([SHARD])
    pq.write_table(
        data, buffer, compression="snappy", use_dictionary=[c for c in _DICTIONARY if c in data.column_names],
        write_statistics=[c for c in _PARQUET_STATISTICS if c in data.column_names],
    )
    return table_path(shard, f"part-{uuid.uuid4().hex}.parquet"), buffer.getvalue(), file_stats(rows)


def table_path(shard: str, name: str) -> str:
    """The path in the table of a data file `name` of shard `shard`: in the partition's
    folder, by name only (the add action's partition value is what counts)."""
    return f"{SHARD}={_UNSAFE.sub('_', shard)}/{name}"


def link_file(source: Path, target: Path) -> None:
    """`source` (a store's data file, never changed once written) at `target` in a local
    table's folder: a hard link, or a copy where the two are on different file systems.
    Through a temporary name, so `target` only ever holds the whole file, and durable before
    the commit that names it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and os.path.samefile(source, target):
        return  # placed before a crash came between the placing and its commit (a rename onto
        # another link of the same file does nothing, and would leave the temporary name behind)
    temp = target.with_name(f".{target.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    try:
        os.link(source, temp)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, temp)
        with open(temp, "rb") as copy:
            os.fsync(copy.fileno())
    os.replace(temp, target)
    fsync_directory(target.parent)


def put_file(handler: Any, path: str, body: bytes) -> None:
    """Write `body` at `path` of the table that `handler` (deltalake's ``DeltaFileSystemHandler``) reaches."""
    out = handler.open_output_stream(path)
    try:
        out.write(body)
    finally:
        out.close()


def add_action(path: str, size: int, shard: str, stats: str) -> Any:
    """The Delta add action of a new data file of shard `shard`."""
    from deltalake.transaction import AddAction

    return AddAction(path, size, {SHARD: shard}, int(time.time() * 1000), True, stats)


def file_stats(rows: pa.Table) -> str:
    """The Delta statistics of `rows` (a data file's): rows, and each column's null count and
    bounds (texts only where short, times widened to the millisecond Delta writes)."""
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for field in rows.schema:
        kind = field.type
        if field.name == SHARD or pa.types.is_binary(kind) or pa.types.is_fixed_size_binary(kind):
            continue  # the partition value is in the add action; binaries have no statistics
        column = rows.column(field.name)
        nulls[field.name] = column.null_count
        if field.name in _NO_BOUNDS or pa.types.is_boolean(kind) or column.null_count == len(column):
            continue
        bounds = pc.min_max(column)
        low, high = _bound(bounds["min"].as_py(), down=True), _bound(bounds["max"].as_py(), down=False)
        if low is not None and high is not None:
            lows[field.name], highs[field.name] = low, high
    return json.dumps({"numRecords": rows.num_rows, "minValues": lows, "maxValues": highs, "nullCount": nulls})


def _bound(value: object, *, down: bool) -> object:
    """`value` as a Delta statistic, rounded outwards (`down` for a minimum); None: left out."""
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
        millis = value.replace(microsecond=value.microsecond // 1000 * 1000)
        if not down and millis != value:
            millis += timedelta(milliseconds=1)
        return millis.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return value if len(value) <= _TEXT_BOUND else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value if isinstance(value, int) else None
