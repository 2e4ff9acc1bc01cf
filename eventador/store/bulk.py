"""Bulk writes: whole new streams built straight into a segment's Arrow table.

Imports of event logs write hundreds of thousands of events at once. Going
through the log and the hot tier would build a Python object per event three
times over; here the envelope is built column by column (NumPy where it can),
the payloads arrive already encoded (``codec.encode_rows``), and the typed
columns come from the payload columns (``columns.data_columns``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from eventador.codec import Decoder
from eventador.messages import Event
from eventador.store.columns import ENVELOPE, data_columns

__all__ = ["NewStreams", "random_event_ids"]


@dataclass(frozen=True)
class NewStreams:
    """Events of streams that do not exist yet, grouped by stream and in version order.

    `occurred_us`: each event's own time in microseconds since the epoch;
    `payloads`: each event's CBOR payload; `data`: the same payloads as columns
    (``None`` where a row has no such key; an Arrow array: ``columns.uniform_array``
    of the values), for the typed columns.
    """

    stream_ids: list[str]
    event_types: list[str]
    occurred_us: np.ndarray
    payloads: list[bytes] | pa.BinaryArray
    data: dict[str, list[Any] | pa.Array]
    stream_type: str | None = None

    def __len__(self) -> int:
        return len(self.stream_ids)

    @functools.cached_property
    def versions(self) -> np.ndarray:
        """1, 2, ... within each run of one stream id."""
        n = len(self.stream_ids)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        ids = np.asarray(self.stream_ids, dtype=object)
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
        return np.arange(n, dtype=np.int64) - run_start + 1

    def stream_heads(self) -> dict[str, int]:
        """Each stream's version after the write."""
        return dict(zip(self.stream_ids, self.versions.tolist(), strict=True))

    def schema_versions(self, classes: dict[str, type[Event]]) -> list[int]:
        """Each row's schema version: its class's (the payloads are built from today's fields)."""
        known = {t: cls.schema_version for t, cls in classes.items()}
        return [known.get(t, 1) for t in self.event_types]

    def table(
        self, first_position: int, recorded_us: int, classes: dict[str, type[Event]],
        decode: Decoder,
    ) -> pa.Table:
        """The rows as a segment table (envelope, then typed columns), positions from `first_position`."""
        n = len(self)
        timestamp = ENVELOPE.field("recorded_at").type
        payloads = pa.array(self.payloads, pa.binary())  # an import's arrive as Arrow already
        arrays: list[pa.Array] = [
            pa.array(np.arange(first_position, first_position + n, dtype=np.int64)),
            pa.array(self.stream_ids, pa.string()),
            pa.array(self.versions),
            pa.array(self.event_types, pa.string()),
            pa.array(self.schema_versions(classes), pa.int16()),
            pa.array(self.schema_versions(classes), pa.int16()),  # typed columns: as written
            random_event_ids(n),
            pa.array(np.full(n, recorded_us, dtype=np.int64)).cast(timestamp),
            pa.array(np.asarray(self.occurred_us, dtype=np.int64)).cast(timestamp),
            pa.array([self.stream_type] * n, pa.string()),
            pa.nulls(n, pa.binary()),
            pa.nulls(n, pa.string()),
            payloads,
        ]
        table = pa.Table.from_arrays(arrays, schema=ENVELOPE)
        types = self.event_types
        typed = data_columns(types, self.data, classes, lambda i: decode(types[i], payloads[i].as_py()))
        for name, column in typed.items():
            table = table.append_column(name, column)
        return table


def random_event_ids(n: int) -> pa.FixedSizeBinaryArray:
    """n random version-4 UUIDs as a binary(16) column, made in one NumPy pass."""
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    array = pa.Array.from_buffers(pa.binary(16), n, [None, pa.py_buffer(raw.tobytes())])
    assert isinstance(array, pa.FixedSizeBinaryArray)
    return array
