"""The hot tier: appended events not yet in a Parquet file, held as growing columns.

Appends extend Python lists (cheap); readers and SQL get an Arrow table built
from them on demand and cached until the next append. The typed instances the
caller appended are kept too, so reading recent events decodes nothing; when a
class is redefined (a notebook cell run again), its instances are decoded again
from their payloads, as the new class, on the next read.
"""

from __future__ import annotations

import itertools
import json
import operator
from typing import Any

import pyarrow as pa

from eventador.codec import Decoder, decode_value
from eventador.errors import SchemaError
from eventador.messages import Event, UnknownEvent, redefinitions
from eventador.store.columns import ENVELOPE, typed_columns
from eventador.store.records import RecordedEvent, build_records, current_types

__all__ = ["HotBuffer"]


def _metadata_json(rows: list[bytes | None]) -> list[str | None]:
    # One append shares one metadata object across its events: convert each once.
    done: dict[bytes, str] = {}
    out: list[str | None] = []
    for raw in rows:
        if raw is None:
            out.append(None)
            continue
        text = done.get(raw)
        if text is None:
            text = done[raw] = json.dumps(decode_value(raw), default=str)
        out.append(text)
    return out


class HotBuffer:
    """Rows with positions ``first_position ..``, in commit order."""

    def __init__(self, first_position: int) -> None:
        self.first_position = first_position
        self.stream_ids: list[str] = []
        self.versions: list[int] = []
        self.event_types: list[str] = []
        self.event_ids: list[bytes] = []
        self.recorded: list[int] = []
        self.occurred: list[int | None] = []
        self.stream_types: list[str | None] = []
        self.metadata: list[bytes | None] = []
        self.payloads: list[bytes] = []
        self.events: list[Event | None] = []  # None: recovered from the log, decoded on demand
        self.schema_versions: list[int] = []
        self.by_stream: dict[str, list[int]] = {}
        self._chunks: list[pa.Table] = []  # Arrow form of rows [0, _chunked_rows)
        self._chunked_rows = 0
        self._table: pa.Table | None = None
        self._classes: frozenset[tuple[str, type[Event]]] = frozenset()
        self._generation = redefinitions.generation

    def __len__(self) -> int:
        return len(self.payloads)

    @property
    def last_position(self) -> int:
        return self.first_position + len(self.payloads) - 1

    def add(
        self,
        stream_id: str,
        first_version: int,
        recorded_us: int,
        stream_type: str | None,
        metadata: bytes | None,
        event_types: list[str],
        event_ids: list[bytes],
        occurred: list[int | None],
        payloads: list[bytes],
        events: list[Event] | None,
        schema_versions: list[int],
    ) -> None:
        """Add one append's rows, given as columns (one entry per event in each)."""
        start = len(self.payloads)
        n = len(payloads)
        if recorded_us in occurred:  # kept as null, as every tier reads an occurred_at equal to recorded_at
            occurred = [None if t == recorded_us else t for t in occurred]
        self.stream_ids.extend([stream_id] * n)
        self.versions.extend(range(first_version, first_version + n))
        self.recorded.extend([recorded_us] * n)
        self.stream_types.extend([stream_type] * n)
        self.metadata.extend([metadata] * n)
        self.event_types.extend(event_types)
        self.event_ids.extend(event_ids)
        self.occurred.extend(occurred)
        self.payloads.extend(payloads)
        self.events.extend(events if events is not None else [None] * n)
        self.schema_versions.extend(schema_versions)
        self.by_stream.setdefault(stream_id, []).extend(range(start, start + n))

    def _follow_redefinitions(self) -> None:
        """Forget the decoded events whose class was redefined since the last read: they
        are decoded again, as the newest class, when read. One comparison when none was."""
        if self._generation == redefinitions.generation:
            return
        self._generation = redefinitions.generation
        events, replaced = self.events, redefinitions.replaced
        stale = {kind for kind in set(map(type, events)) if replaced(kind)}
        if stale:
            for i, event in enumerate(events):
                if type(event) in stale:
                    events[i] = None

    def _event(self, i: int, decode: Decoder) -> Event:
        event = self.events[i]
        if event is None:
            try:
                event = self.events[i] = decode(self.event_types[i], self.payloads[i], self.schema_versions[i])
            except SchemaError as exc:
                raise exc.at(self.first_position + i) from None
        return event

    def _records(self, rows: list[int], decode: Decoder) -> list[RecordedEvent]:
        """RecordedEvents for the given row indices, built column by column."""
        if not rows:
            return []
        self._follow_redefinitions()
        for i in rows:
            if self.events[i] is None:
                self._event(i, decode)
        take = operator.itemgetter(*rows) if len(rows) > 1 else (lambda column: (column[rows[0]],))
        first = self.first_position
        events = take(self.events)
        columns = [
            take(self.stream_ids),
            take(self.versions),
            [first + i for i in rows],
            current_types(take(self.event_types), events),
            events,
            take(self.event_ids),
            take(self.recorded),
            take(self.occurred),
            take(self.metadata),
            take(self.schema_versions),
        ]
        return build_records(columns)

    def stream_records(
        self,
        stream_id: str,
        from_version: int,
        to_version: int | None,
        upto_row: int,
        decode: Decoder,
        *,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[RecordedEvent]:
        """The stream's rows before `upto_row` (the visible prefix), within the version range,
        in version order; with `limit`, only the first `limit` of them (`newest`: the last)."""
        rows = self.by_stream.get(stream_id)
        if not rows:
            return []
        versions = self.versions
        wanted = [
            i
            for i in rows
            if i < upto_row and versions[i] >= from_version and (to_version is None or versions[i] <= to_version)
        ]
        if limit is not None and len(wanted) > limit:
            wanted = wanted[len(wanted) - limit :] if newest else wanted[:limit]
        return self._records(wanted, decode)

    def records(
        self, start_row: int, stop_row: int, types: set[str] | None, decode: Decoder, *, limit: int | None = None
    ) -> list[RecordedEvent]:
        """RecordedEvents of rows start_row..stop_row-1 (of `types` only, when given; the
        first `limit` of them, when given)."""
        if types is None:
            rows = list(range(start_row, stop_row if limit is None else min(stop_row, start_row + limit)))
        else:
            event_types = self.event_types
            found = (i for i in range(start_row, stop_row) if event_types[i] in types)
            rows = list(found if limit is None else itertools.islice(found, limit))
        return self._records(rows, decode)

    def to_arrow(
        self, upto_row: int, classes: dict[str, type[Event]], decode: Decoder
    ) -> pa.Table:
        """Rows before `upto_row` as an Arrow table (envelope + typed columns).

        Built incrementally: only rows added since the last call are converted.
        """
        self._follow_redefinitions()
        signature = frozenset(classes.items())
        if signature != self._classes:  # a class was (re)defined: typed columns change
            self._chunks, self._chunked_rows, self._table, self._classes = [], 0, None, signature
        while self._chunked_rows < upto_row:
            stop = upto_row
            self._chunks.append(self._build(self._chunked_rows, stop, classes, decode))
            self._chunked_rows = stop
            self._table = None
            if len(self._chunks) > 32:
                merged = pa.concat_tables(self._chunks, promote_options="default").combine_chunks()
                self._chunks = [merged]
        if self._table is None:
            if not self._chunks:
                self._table = ENVELOPE.empty_table()
            else:
                self._table = pa.concat_tables(self._chunks, promote_options="default")
        table = self._table
        return table if table.num_rows == upto_row else table.slice(0, upto_row)

    def _typed_events(self, start: int, stop: int, decode: Decoder) -> tuple[list[Event | None], list[int]]:
        """The events whose fields become the rows' typed columns, and the schema version
        those columns hold (``columns_version``): today's class's, upcast, for rows that
        keep their type; the stored fields as they are for rows an upcaster gives another
        type (SQL applies the declared renames to those); 0, no typed columns, for rows
        that do not decode (a ``SchemaError``: reads name it; SQL refuses them)."""
        events: list[Event | None] = []
        versions: list[int] = []
        for i in range(start, stop):
            stored_type, stored_version = self.event_types[i], self.schema_versions[i]
            try:
                event: Event | None = self._event(i, decode)
            except SchemaError:
                events.append(None)
                versions.append(0)
                continue
            assert event is not None
            if event.event_type != stored_type:
                event = UnknownEvent(event_type=stored_type, data=decode_value(self.payloads[i]))
            events.append(event)
            versions.append(stored_version if isinstance(event, UnknownEvent) else type(event).schema_version)
        return events, versions

    def _build(
        self, start: int, stop: int, classes: dict[str, type[Event]], decode: Decoder
    ) -> pa.Table:
        events, columns_versions = self._typed_events(start, stop, decode)
        first = self.first_position + start
        arrays: list[Any] = [
            pa.array(range(first, first + stop - start), pa.int64()),
            pa.array(self.stream_ids[start:stop], pa.string()),
            pa.array(self.versions[start:stop], pa.int64()),
            pa.array(self.event_types[start:stop], pa.string()),
            pa.array(self.schema_versions[start:stop], pa.int16()),
            pa.array(columns_versions, pa.int16()),
            pa.array(self.event_ids[start:stop], pa.binary(16)),
            pa.array(self.recorded[start:stop], pa.int64()).cast(ENVELOPE.field("recorded_at").type),
            pa.array(self.occurred[start:stop], pa.int64()).cast(ENVELOPE.field("occurred_at").type),
            pa.array(self.stream_types[start:stop], pa.string()),
            pa.array(self.metadata[start:stop], pa.binary()),
            pa.array(_metadata_json(self.metadata[start:stop]), pa.string()),
            pa.array(self.payloads[start:stop], pa.binary()),
        ]
        table = pa.Table.from_arrays(arrays, schema=ENVELOPE)
        for name, column in typed_columns(self.event_types[start:stop], events, classes).items():
            table = table.append_column(name, column)
        return table
