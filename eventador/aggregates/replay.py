"""Every aggregate of a type replayed in bulk: the pieces ``Repository.states`` is made of.

``plan`` finds the aggregates (the stream heads, as of a point) and the newest usable
snapshot of each; ``EVENTS_AFTER`` is the one SQL query for the events after those
snapshots; ``fold_streams`` decodes and folds them per stream. The repository runs them
in one process; ``eventador.fleet`` runs ``fold_streams`` per bucket of streams on a Dask
cluster, over the same query, and so gets the same states.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from eventador.aggregates import recovery
from eventador.aggregates.recovery import stamp, usable_snapshot, warn_unusable
from eventador.aggregates.root import AggregateRoot, fold
from eventador.aggregates.snapshots import snapshot_decoder
from eventador.codec import Decoder
from eventador.errors import SerializationError
from eventador.messages import Event, State
from eventador.store.columns import column_name, exact_columns
from eventador.store.records import micros_to_datetime
from eventador.store.segments import paused_gc, to_events
from eventador.store.views import literal

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from eventador.store import EventStore
    from eventador.store.reads import PastView

__all__ = ["EVENTS_AFTER", "Plan", "fold_streams", "plan", "state_frame", "state_rows", "typed_columns"]

S = TypeVar("S", bound=State)

# The events after each stream's start (its snapshot's version, or 0), from a relation
# `{source}` with the store's columns (`_all`, or the files and tail a fleet task reads).
# With the typed columns of the known classes: events are built from those columns (no
# CBOR decoding) wherever they hold the values exactly. COLUMNS(...) takes those of them
# that exist (a type may have no events yet), and stream_type, so that it never comes
# out empty (DuckDB refuses that). Parameters: stream ids, starts.
EVENTS_AFTER = (
    "SELECT a.stream_id, a.version, a.event_type, a.payload, epoch_us(coalesce(a.occurred_at, a.recorded_at)), "
    "a.schema_version, COLUMNS(lambda c: list_contains({wanted}, c)) FROM {source} a "
    "JOIN (SELECT unnest(?::VARCHAR[]) AS sid, unnest(?::BIGINT[]) AS after) s ON a.stream_id = s.sid "
    "WHERE a.version > s.after ORDER BY a.stream_id, a.version"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What a bulk replay of one aggregate type starts from."""

    source: PastView  # the store as of the point asked for
    heads: list[tuple[str, int]]  # (stream id, version at the point), by stream id
    starts: dict[str, tuple[Any, int]]  # stream id -> (snapshot state, its version)
    state_type: type[State]

    def after(self, stream_id: str) -> int:
        """The version after which the stream's events are folded (its snapshot's, or 0)."""
        start = self.starts.get(stream_id)
        return 0 if start is None else start[1]


def plan(
    store: EventStore,
    aggregate_class: type[AggregateRoot[Any]],
    as_of: int | datetime | None,
    by: Literal["recorded_at", "occurred_at"] = "recorded_at",
) -> Plan:
    """The aggregates of `aggregate_class` in `store` as of a point, and their snapshots.

    A stream is one of these aggregates if any of its events says so (its first events
    may have been appended without a stream type, and they count too). One SQL query for
    the heads, then the newest usable snapshot of each stream long enough to have one.

    Raises:
        InvalidInputError: `as_of` is a naive datetime or not a position, or `by` is unknown.
    """
    source = store.as_of(as_of, by=by) if as_of is not None else store.as_of(store.last_position)
    kind = aggregate_class.aggregate_type
    heads = source.sql(
        "SELECT stream_id, max(version) FROM events GROUP BY stream_id "
        "HAVING bool_or(stream_type = ?) ORDER BY stream_id",
        [kind],
    ).fetchall()
    state_type = type(aggregate_class(persistence_id="_", event_store=store).initial_state)
    snapshot_version = aggregate_class.snapshot_version
    long_enough = {sid: head for sid, head in heads if head >= recovery.SNAPSHOT_LOOKUP_MIN}
    decode_snapshot = snapshot_decoder(state_type, snapshot_version=snapshot_version)
    starts: dict[str, tuple[Any, int]] = {}
    problems: list[str] = []
    with paused_gc():
        for stream_id, candidate in store.snapshots.newest(long_enough).items():
            try:
                starts[stream_id] = (decode_snapshot(candidate), candidate.version)
            except SerializationError:  # rare: look for an older usable one, and say why
                snapshot, value, found = usable_snapshot(
                    store.snapshots, stream_id, long_enough[stream_id], state_type, snapshot_version, newest=False
                )
                problems.extend(found)
                if snapshot is not None:
                    starts[stream_id] = (value, snapshot.version)
    if problems:
        warn_unusable(f"{len(problems)} {kind} aggregates", problems)
    return Plan(source, heads, starts, state_type)


def typed_columns(classes: dict[str, type[Event]]) -> str:
    """The SQL list literal of the typed columns of `classes` (and stream_type), for ``EVENTS_AFTER``."""
    typed = [column_name(t, f) for t, cls in classes.items() for f in (exact_columns(cls) or {})]
    return "[" + ", ".join(literal(c) for c in ["stream_type", *typed]) + "]"


def fold_streams(
    new: Callable[[str], AggregateRoot[S]],
    table: pa.Table,
    decode: Decoder,
    classes: dict[str, type[Event]],
    starts: dict[str, tuple[Any, int]],
) -> dict[str, S]:
    """Each stream's final state: `table` (rows of ``EVENTS_AFTER``) decoded and folded per
    stream into its start (a snapshot's state, else ``initial_state``), then stamped with
    the stream's version and last event time. Streams with a start and no row keep it.
    `new(stream_id)` builds the stream's aggregate."""
    events = to_events(table, decode, classes)
    stream_ids, versions, occurred = (table.column(i).to_pylist() for i in (0, 1, 4))
    finals: dict[str, S] = {sid: value for sid, (value, _) in starts.items()}
    total = len(events)
    start = 0
    with paused_gc():  # states are values: a fold of 100,000 events makes no cycles
        while start < total:
            stream_id = stream_ids[start]
            stop = start + 1
            while stop < total and stream_ids[stop] == stream_id:
                stop += 1
            aggregate = new(stream_id)
            first = finals.get(stream_id)
            state = aggregate.initial_state if first is None else first
            before_last, after = fold(aggregate, state, events[start:stop])
            when = micros_to_datetime(occurred[stop - 1])
            finals[stream_id] = stamp(before_last, after, versions[stop - 1], when)
            start = stop
    return finals


def state_rows(state_type: type[State], order: list[str], finals: dict[str, Any]) -> list[list[Any]]:
    """The fields of each final state, in `order`: the rows of ``state_frame``."""
    names = [f.name for f in dataclasses.fields(state_type)]
    return [[getattr(finals[sid], n) for n in names] for sid in order]


def state_frame(state_type: type[State], order: list[str], rows: list[list[Any]]) -> pd.DataFrame:
    """The DataFrame ``Repository.states`` returns: one row per aggregate, by `order` (index: aggregate_id)."""
    import pandas as pd

    names = [f.name for f in dataclasses.fields(state_type)]
    frame = pd.DataFrame(rows, columns=names, index=pd.Index(order))
    frame.index.name = "aggregate_id"
    return frame
