"""Reading the store: streams, the whole log and SQL, now or at a past point.

``Reader`` holds the reads that the store and its views of the past share; it
works on a ``StoreState``, the files, hot buffers and visible position taken
under the store's lock in one step.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa

from eventador.codec import Decoder, make_decoder
from eventador.errors import InvalidInputError
from eventador.messages import Event, TypeRegistry, UnknownEvent, event_data
from eventador.store.buffer import HotBuffer
from eventador.store.records import RecordedEvent, datetime_to_micros
from eventador.store.segments import FileSegment, MemorySegment, NeedPayload, Segment, to_events, to_records, unify
from eventador.store.sqlguard import SqlRelation, sql_error
from eventador.store.views import SqlViews
from eventador.upcasting import upcasters

if TYPE_CHECKING:
    import pandas as pd

    from eventador.store.store import EventStore

__all__ = ["PastView", "Reader", "Replay", "StoreState"]

READ_BATCH = 16_384
SMALL_PAGE = 1_024  # positions read with a limit: up to this many are decoded from their payloads
T = TypeVar("T")
Classes = dict[str, type[Event]] | None


@dataclass(frozen=True, slots=True)
class Replay:
    """A stream's events (consecutive versions ending at `last_version`) and the last one's
    occurred time in µs since the epoch; no events: version 0."""

    events: list[Event]
    last_version: int
    last_occurred_us: int

    @classmethod
    def of(cls, records: Sequence[RecordedEvent]) -> Replay:
        if not records:
            return cls([], 0, 0)
        last = records[-1]
        return cls([r.event for r in records], last.version, last[7] if last[7] is not None else last[6])

    @property
    def first_version(self) -> int:
        return self.last_version - len(self.events) + 1


@dataclass(frozen=True)
class StoreState:
    """The store's files, hot buffers and visible position, taken together (``store.state()``)."""

    segments: tuple[Segment, ...]
    buffers: tuple[HotBuffer, ...]  # frozen ones (being flushed), then the active one
    visible: int

    def after(self, position: int) -> StoreState:
        """The same without the files and frozen buffers wholly at or below `position`: what a
        projection's next batch reads (their footers need not be read)."""
        if position <= 0:
            return self
        segments = tuple(s for s in self.segments if s.last_position > position)
        buffers = tuple(b for b in self.buffers[:-1] if b.last_position > position) + self.buffers[-1:]
        return StoreState(segments, buffers, self.visible)


class Reader:
    """Reads shared by the store and its views of the past."""

    registry: TypeRegistry

    def state(self) -> StoreState:
        """The files, hot buffers and visible position the reads see, taken in one step."""
        raise NotImplementedError

    def _keep(self, record: RecordedEvent) -> bool:
        return True

    def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """The stream's events in version order (an empty list for an unknown stream).

        `reverse`: newest first. `limit`: at most that many (the first ones in the order
        asked for). Costs one lookup per Parquet file whose statistics may hold the stream,
        then one decode per event returned; with a `limit`, the files are read from the
        wanted end and the reading stops once enough are found (the latest event of a long
        stream is one row group read, one decode).
        """
        check_stream_id(stream_id)
        check_limit(limit)
        if limit == 0:
            return []
        snap = self.state()
        decode = make_decoder(self.registry)
        classes = self.registry.classes()
        keep = self._keep if type(self)._keep is not Reader._keep else None
        cut = limit if keep is None else None  # a past view's time filter goes first: whole parts
        parts: list[Segment | HotBuffer] = [*snap.segments, *snap.buffers]
        out: list[RecordedEvent] = []
        for part in reversed(parts) if reverse else parts:
            if isinstance(part, HotBuffer):
                found = part.stream_records(
                    stream_id, from_version, to_version, visible_rows(part, snap), decode, limit=cut, newest=reverse
                )
            elif part.first_position > snap.visible:
                continue  # wholly after a past view's point
            else:
                beyond = part.last_position > snap.visible  # straddles a past view's point
                table = _stream_part(
                    part, stream_id, from_version, to_version, to_records, decode, classes,
                    limit=None if beyond else cut, newest=reverse,
                )
                found = [] if table is None else table[1]
                if beyond:
                    found = [r for r in found if r.position <= snap.visible]
            if keep is not None:
                found = [r for r in found if keep(r)]
            out.extend(reversed(found) if reverse else found)
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    def read_stream_df(
        self, stream_id: str, *, from_version: int = 1, to_version: int | None = None
    ) -> pd.DataFrame:
        """The stream's events as a DataFrame, one row per event in version order.

        Columns: ``position, stream_id, version, event_type, recorded_at, occurred_at``,
        then each payload field (the union over the stream's event types; a field named
        like an envelope column is prefixed ``event.``). Costs what ``read_stream`` does.
        """
        import pandas as pd

        envelope = ["position", "stream_id", "version", "event_type", "recorded_at", "occurred_at"]
        rows = []
        for r in self.read_stream(stream_id, from_version=from_version, to_version=to_version):
            row: dict[str, Any] = {
                "position": r.position, "stream_id": r.stream_id, "version": r.version,
                "event_type": r.event_type, "recorded_at": r.recorded_at, "occurred_at": r.occurred_at,
            }
            for name, value in event_data(r.event).items():
                row[f"event.{name}" if name in envelope else name] = value
            rows.append(row)
        return pd.DataFrame(rows, columns=None if rows else envelope)

    def replay(self, stream_id: str, *, from_version: int = 1) -> Replay:
        """The stream's typed events from `from_version` on, without their envelopes:
        what recovering an aggregate needs, read from fewer columns and built with
        no ``RecordedEvent`` per event."""
        if type(self)._keep is not Reader._keep:  # a past view filters by time: it needs envelopes
            return Replay.of(self.read_stream(stream_id, from_version=from_version))
        check_stream_id(stream_id)
        snap = self.state()
        decode = make_decoder(self.registry)
        classes = self.registry.classes()
        events: list[Event] = []
        last_version, last_occurred = 0, 0
        for segment in snap.segments:
            found = _stream_part(segment, stream_id, from_version, None, to_events, decode, classes, lean=True)
            if found is None:
                continue
            table, built = found
            events.extend(built)
            last_version = table.column("version")[-1].as_py()
            occurred = table.column("occurred_at")[-1]
            last_occurred = (occurred if occurred.is_valid else table.column("recorded_at")[-1]).value
        hot: list[RecordedEvent] = []
        for buffer in snap.buffers:
            hot.extend(buffer.stream_records(stream_id, from_version, None, visible_rows(buffer, snap), decode))
        tail = Replay.of(hot)
        if tail.events:
            return Replay(events + tail.events, tail.last_version, tail.last_occurred_us)
        return Replay(events, last_version, last_occurred)

    def read_all(
        self,
        *,
        from_position: int = 1,
        to_position: int | None = None,
        event_types: Iterable[str | type[Event]] | None = None,
        limit: int | None = None,
    ) -> Iterator[RecordedEvent]:
        """Every event in position order, lazily, in batches.

        `event_types` (names or classes) is applied before decoding: events of
        other types cost nothing but the scan of their type column. `limit`: at
        most that many events; only those are read and decoded (a page of the log,
        ``read_all(from_position=p, limit=10)``, costs about ten rows' reads, not a
        batch of 16,384).
        """
        for batch in self.read_batches(
            from_position=from_position, to_position=to_position, event_types=event_types, limit=limit
        ):
            yield from batch

    def read_batches(
        self,
        *,
        from_position: int = 1,
        to_position: int | None = None,
        event_types: Iterable[str | type[Event]] | None = None,
        limit: int | None = None,
    ) -> Iterator[list[RecordedEvent]]:
        """Like ``read_all``, a list of up to 16,384 events at a time (no step per event, no empty list)."""
        check_limit(limit)
        snap = self.state()
        last = snap.visible if to_position is None else min(to_position, snap.visible)
        types = type_names(event_types)
        type_set = None if types is None else set(types)
        decode = make_decoder(self.registry)
        classes = self.registry.classes()
        keep: Callable[[RecordedEvent], bool] | None = self._keep if type(self)._keep is not Reader._keep else None
        if type_set is not None and upcasters.renames_types:
            # Stored under older names too; which of them are wanted is known once decoded.
            wanted = type_set
            type_set = upcasters.stored_types_of(wanted)
            types = sorted(type_set)
            keep = _and(keep, lambda r: r.event_type in wanted)
        remaining = limit
        parts: tuple[Segment | HotBuffer, ...] = (*snap.segments, *snap.buffers)
        for part in parts:
            if remaining == 0:
                return
            if isinstance(part, HotBuffer):
                first, top = part.first_position, part.first_position + visible_rows(part, snap) - 1
                pages: Callable[[int, int, int], list[RecordedEvent]] = functools.partial(
                    _buffer_page, part, type_set, decode
                )
            else:
                first, top = part.first_position, part.last_position
                pages = _SegmentPages(part, types, classes, decode, indexed=limit is not None)
            lo, hi = max(from_position, first), min(last, top)
            # Positions looked at per step: all, or with a limit, as many as are still
            # wanted, doubling while the filters drop events.
            window = None if remaining is None else min(max(remaining, 1), READ_BATCH)
            while lo <= hi and remaining != 0:
                upto = hi if window is None else min(hi, lo + window - 1)
                cut = READ_BATCH if remaining is None else min(remaining, READ_BATCH)
                batch = pages(lo, upto, cut)
                lo = batch[-1].position + 1 if len(batch) == cut else upto + 1
                if keep is not None:
                    batch = list(filter(keep, batch))
                if batch:
                    if remaining is not None:
                        remaining -= len(batch)
                    yield batch
                if window is not None:
                    window = min(2 * window, READ_BATCH)

    def to_event_log(self, stream_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """The events as an event log for process-mining tools: one row per event, in pm4py's
        column names, the input ``read_xes`` gives and ``import_dataframe`` takes.

        ``case:concept:name`` (the stream id), ``concept:name`` (the event type),
        ``time:timestamp`` (``occurred_at``, aware UTC), then the events' fields in the
        order they first appear (missing ones NaN/None). Rows go case by case (cases in
        order of their first event), each in version order. `stream_ids` picks streams
        (in that order); ``store.as_of(when).to_event_log()`` gives the log as it stood then.

        >>> store.to_event_log()[["case:concept:name", "concept:name", "amount"]]
          case:concept:name concept:name  amount
        0             acc-0    Deposited   100.0
        1             acc-0    Deposited  2500.0
        2             acc-0    Deposited    40.0

        The frame is what process-mining tools read, e.g. ``pm4py.discover_dfg(store.to_event_log())``.
        """
        import pandas as pd

        if stream_ids is None:
            by_case: dict[str, list[RecordedEvent]] = {}
            for batch in self.read_batches():
                for record in batch:
                    by_case.setdefault(record.stream_id, []).append(record)
            streams: Iterable[list[RecordedEvent]] = by_case.values()
        else:
            ids = [stream_ids] if isinstance(stream_ids, str) else list(stream_ids)
            for stream_id in ids:
                check_stream_id(stream_id)
            streams = (self.read_stream(stream_id) for stream_id in dict.fromkeys(ids))
        case_ids, types, micros, fields = [], [], [], []
        for records in streams:
            for r in records:
                case_ids.append(r.stream_id)
                types.append(r.event_type)
                micros.append(r[6] if r[7] is None else r[7])  # occurred, else recorded (µs)
                fields.append(_fields(r.event))
        times = pd.DatetimeIndex(np.array(micros, dtype="datetime64[us]")).tz_localize("UTC")
        envelope = pd.DataFrame({"case:concept:name": case_ids, "concept:name": types, "time:timestamp": times})
        return pd.concat([envelope, pd.DataFrame(fields, index=envelope.index)], axis=1)

    def _arrow_sources(self, snap: StoreState, classes: dict[str, type[Event]]) -> tuple[Any, ...]:
        files = tuple(s for s in snap.segments if isinstance(s, FileSegment))
        tables = tuple(s.table for s in snap.segments if isinstance(s, MemorySegment))
        decode = make_decoder(self.registry)
        hot_parts = [b.to_arrow(visible_rows(b, snap), classes, decode) for b in snap.buffers]
        hot = unify(hot_parts) if len(hot_parts) > 1 else hot_parts[0]
        return files, tables, hot


def _and(
    first: Callable[[RecordedEvent], bool] | None, second: Callable[[RecordedEvent], bool]
) -> Callable[[RecordedEvent], bool]:
    return second if first is None else (lambda r: first(r) and second(r))


def _stream_part(
    segment: Segment,
    stream_id: str,
    from_version: int,
    to_version: int | None,
    build: Callable[[pa.Table, Decoder, dict[str, type[Event]]], list[T]],
    decode: Decoder,
    classes: dict[str, type[Event]],
    *,
    lean: bool = False,
    limit: int | None = None,
    newest: bool = False,
) -> tuple[pa.Table, list[T]] | None:
    """One segment's rows of the stream (`limit`: the first or `newest` ones) and what `build`
    makes of them: from the typed columns where they hold the values, else (rarely, a null
    in one) read again with CBOR."""
    table = segment.stream_table(stream_id, from_version, to_version, classes, lean=lean, limit=limit, newest=newest)
    if table is None:
        return None
    try:
        return table, build(table, decode, classes)
    except NeedPayload:
        table = segment.stream_table(stream_id, from_version, to_version, limit=limit, newest=newest)
        assert table is not None
        return table, build(table, decode, classes)


def _buffer_page(
    buffer: HotBuffer, types: set[str] | None, decode: Decoder, lo: int, hi: int, limit: int
) -> list[RecordedEvent]:
    """The hot buffer's events at positions lo..hi (of `types`; the first `limit` of them)."""
    return buffer.records(lo - buffer.first_position, hi - buffer.first_position + 1, types, decode, limit=limit)


class _SegmentPages:
    """A segment's events by ranges of positions, in position order (``read_batches``).

    `indexed` (a read with a limit): each range's rows are taken alone (``position_rows``),
    until the ranges asked for add up to a quarter of the segment; then, as reads without
    a limit always do, the segment is read once and the ranges are cut from that.
    """

    def __init__(
        self, segment: Segment, types: list[str] | None, classes: dict[str, type[Event]], decode: Decoder, *,
        indexed: bool,
    ) -> None:
        self.segment, self.types, self.classes, self.decode = segment, types, classes, decode
        self.budget = segment.rows // 4 if indexed else 0  # positions still to take alone
        self.whole: pa.Table | None = None
        self.positions = np.empty(0, np.int64)  # the whole table's, once read

    def __call__(self, lo: int, hi: int, limit: int) -> list[RecordedEvent]:
        if self.whole is None and hi - lo + 1 <= self.budget:
            self.budget -= hi - lo + 1
            # A few rows' payloads cost less to read (and decode) than their typed columns.
            classes = self.classes if hi - lo + 1 > SMALL_PAGE else None
            return self._records(lambda c: self.segment.position_rows(lo, hi, self.types, c).slice(0, limit), classes)
        return self._records(lambda c: self._cut(lo, hi, c).slice(0, limit), self.classes)

    def _records(self, rows: Callable[[Classes], pa.Table], classes: Classes) -> list[RecordedEvent]:
        """The records of `rows(classes)`: from typed columns where they hold the values, else
        (rarely, a null in one) of `rows(None)`, read with the payload."""
        try:
            return to_records(rows(classes), self.decode, classes)
        except NeedPayload:
            self.whole, self.classes = None, {}  # read with the payload from now on
            return to_records(rows(None), self.decode, None)

    def _cut(self, lo: int, hi: int, classes: Classes) -> pa.Table:
        """Positions lo..hi of the whole segment, read once."""
        if self.whole is None:
            segment = self.segment
            self.whole = segment.position_table(segment.first_position, segment.last_position, self.types, classes)
            self.positions = self.whole.column("position").to_numpy()
        start, stop = np.searchsorted(self.positions, [lo, hi + 1])
        return self.whole.slice(start, stop - start)


def _fields(event: Event) -> dict[str, Any]:
    """An event's fields by name: a known class's dataclass fields, an unknown type's data."""
    if isinstance(event, UnknownEvent):
        return event.data
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}


def visible_rows(buffer: HotBuffer, snap: StoreState) -> int:
    return max(0, min(len(buffer), snap.visible - buffer.first_position + 1))


def type_names(event_types: Iterable[str | type[Event]] | str | type[Event] | None) -> list[str] | None:
    """Type names from names or classes; a single name or class is taken as a list of one."""
    if event_types is None:
        return None
    if isinstance(event_types, (str, type)):
        return [type_name(event_types)]
    return [type_name(t) for t in event_types]


def type_name(t: str | type[Event]) -> str:
    if isinstance(t, str):
        return t
    if isinstance(t, type) and issubclass(t, Event):
        return t.event_type
    raise InvalidInputError(f"event_types takes names or Event classes, got {t!r}")


def check_limit(limit: object) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise InvalidInputError(f"limit must be None or an int >= 0, got {limit!r}")


def check_stream_id(stream_id: object) -> None:
    if not isinstance(stream_id, str) or not stream_id:
        raise InvalidInputError(f"stream_id must be a non-empty str, got {stream_id!r}")


class PastView(Reader):
    """The store as it was at a past point: read_stream, read_all, stream_version and sql."""

    def __init__(
        self, store: EventStore, position: int, *, occurred_before: datetime | None = None
    ) -> None:
        self.store = store
        self.registry = store.registry
        self.position = position
        self.occurred_before = occurred_before
        self._occurred_us = None if occurred_before is None else datetime_to_micros(occurred_before)
        self._views: SqlViews | None = None

    def state(self) -> StoreState:
        # Events at or below the point never change, whichever files hold them now.
        snap = self.store.state()
        return StoreState(snap.segments, snap.buffers, min(self.position, snap.visible))

    def _keep(self, record: RecordedEvent) -> bool:
        if self._occurred_us is None:
            return True
        occurred = record[7] if record[7] is not None else record[6]
        return bool(occurred <= self._occurred_us)

    def stream_version(self, stream_id: str) -> int:
        """The stream's version at this point (0 when it did not exist yet): its newest event's, one read."""
        events = self.read_stream(stream_id, reverse=True, limit=1)
        return events[0].version if events else 0

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> SqlRelation:
        """Like ``EventStore.sql``, over the events up to this point only."""
        if self._views is None:
            self._views = SqlViews(self.store._user_connection())
        with self.store.bind_views(
            self.state(), self._views, position_limit=self.position, occurred_limit=self.occurred_before, query=query
        ) as views:
            return self.store._run_user_sql(views, query, params)

    def __repr__(self) -> str:
        if self.occurred_before is not None:
            return f"PastView(occurred at or before {self.occurred_before.isoformat()})"
        return f"PastView(position <= {self.position})"


def run_sql(
    views: SqlViews, query: str, params: Sequence[Any] | dict[str, Any] | None, files: Sequence[Path] = ()
) -> SqlRelation:
    """Run `query` on `views`' connection; every DuckDB error, now or when the result is
    fetched, is a SqlError (a SqlCorruptionError when it names one of the data `files`)."""
    try:
        return SqlRelation(views.con.sql(query, params=params), files)
    except duckdb.Error as exc:
        raise sql_error(exc, files) from exc
