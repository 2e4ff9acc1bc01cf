"""Fleet-wide work on a Dask cluster: every aggregate's state, and projections built per bucket.

The streams, in the order the store's SQL sorts their ids, are cut into ``buckets``
contiguous runs with about as many events to read each, and each bucket is one task: no
shuffle, since a stream's events never leave their bucket. Runs, not a hash (the shards'
``bucket_of``): the store's Parquet files are sorted by (stream id, version), so a run of
ids lies in few row groups, and a task's ``stream_id BETWEEN first AND last`` lets DuckDB
skip the others by their statistics (a hash bucket is spread over every row group, and
each task read all of them). The answer does not depend on the split. The driver (this
process) finds the streams and their snapshots (``eventador/aggregates/replay.py``, as
``Repository.states`` does) and sends each task only what it needs to read the events
itself: the paths of the store's flushed Parquet files (pinned for the run, so a
compaction cannot remove them), the point to cut at (a position, and a time for
``by="occurred_at"``), its streams with the version to fold from, and the bucket's share
of the unflushed tail as an Arrow table (the tail is at most ``flush_every`` events;
flushing first would need the writer and would change the store). A task checks each
file's checksum once per worker process, reads its range of the files and its tail with
DuckDB (the query ``Repository.states`` runs over ``_all``), decodes and folds its
streams, and returns plain rows, boxed so that Dask pickles them in one piece. So the
workers must see the store's directory at the same path (one machine, or a shared file
system).

Classes travel with the tasks, pickled by cloudpickle: those of an importable module by
reference (the workers import it), those defined in a notebook or script (``__main__``)
by value. So do the driver's upcasters, registered in each worker before it decodes.
dask and distributed are an extra (``pip install eventador[fleet]``), imported only here,
when a function runs.

>>> import eventador as ev
>>> from distributed import Client, LocalCluster
>>> cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True)  # doctest: +SKIP
>>> client = Client(cluster)  # doctest: +SKIP
>>> ev.fleet.states(repo, client)  # the DataFrame repo.states() returns  # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast

from eventador.aggregates import AggregateRoot, Repository, replay
from eventador.codec import Decoder, make_decoder
from eventador.errors import InvalidInputError, StoreError
from eventador.messages import Event, State, TypeRegistry
from eventador.store.checksums import verify_once
from eventador.store.pins import Pins
from eventador.store.records import RecordedEvent
from eventador.store.segments import RECORD_COLUMNS, FileSegment, to_records
from eventador.store.views import literal
from eventador.upcasting import Upcaster, upcasters

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

    from eventador.store import EventStore
    from eventador.store.reads import PastView

__all__ = ["FleetProjection", "rebuild", "states"]

P = TypeVar("P")
R = TypeVar("R")
T = TypeVar("T")


class FleetProjection(Generic[P, R]):
    """A read model built from every stream in parts, one per bucket, then merged.

    ``fold(records)`` gets the events of one bucket's streams, grouped by stream (in
    stream id order) and each stream's in version order, and returns a partial result;
    ``merge(partials)`` gets the partials of all buckets (in bucket order) and returns the
    result. So the result must not depend on how streams are split into buckets nor on
    the order between streams (position order is not kept across streams): sums, counts,
    per-stream facts keyed by stream id. ``rebuild(projection, store, client)`` runs it;
    the instance is pickled to the workers, the partials back.

    >>> class EventsPerType(FleetProjection[dict[str, int], dict[str, int]]):
    ...     def fold(self, records):
    ...         counts = {}
    ...         for r in records:
    ...             counts[r.event_type] = counts.get(r.event_type, 0) + 1
    ...         return counts
    ...     def merge(self, partials):
    ...         total = {}
    ...         for part in partials:
    ...             for k, n in part.items():
    ...                 total[k] = total.get(k, 0) + n
    ...         return total
    """

    def fold(self, records: Sequence[RecordedEvent]) -> P:
        """Returns the partial result of one bucket's `records` (its streams' events, stream by stream)."""
        raise NotImplementedError(f"{type(self).__name__} must define fold(records)")

    def merge(self, partials: Sequence[P]) -> R:
        """Returns the result from every bucket's partial (bucket order)."""
        raise NotImplementedError(f"{type(self).__name__} must define merge(partials)")


@dataclasses.dataclass(frozen=True, slots=True)
class _Reads:
    """What one task reads: the store's files and its share of the tail, cut at a point."""

    files: tuple[str, ...]
    tail: pa.Table | None
    position: int
    occurred_before: datetime | None
    classes: dict[str, type[Event]]
    upcasters: tuple[Upcaster, ...]  # the driver's: a worker decodes old events as the driver does
    stream_ids: list[str]  # a contiguous run of the streams in SQL order: the task reads only their range
    afters: list[int]  # per stream: the version after which its events are read


@dataclasses.dataclass(frozen=True, slots=True)
class _StatesTask:
    reads: _Reads
    aggregate_class: type[AggregateRoot[Any]]
    state_type: type[State]
    starts: dict[str, tuple[Any, int]]


@dataclasses.dataclass(frozen=True, slots=True)
class _ProjectionTask:
    reads: _Reads
    projection: FleetProjection[Any, Any]


def states(
    repo: Repository[Any],
    client: Any,
    *,
    buckets: int | None = None,
    as_of: int | datetime | None = None,
    by: Literal["recorded_at", "occurred_at"] = "recorded_at",
) -> pd.DataFrame:
    """Returns ``repo.states(as_of=as_of, by=by)``, computed by one task per bucket on `client`.

    `client`: a running ``distributed.Client``, or None to run the buckets here one after
    another (the same tasks, no cluster). `buckets`: how many runs of stream ids the streams
    are cut into, with about as many events each (default: the cluster's worker threads; 1
    without a cluster); the answer is the same for any number. The driver runs the
    heads query and loads snapshots; the tasks read, decode and fold.

    Raises:
        InvalidInputError: `client` is closed or not a Dask client, `buckets` < 1, or as ``Repository.states``.
    """
    n = _buckets(client, buckets)
    store = repo.store
    found = replay.plan(store, repo.aggregate_class, as_of, by)
    order = [sid for sid, _ in found.heads]
    to_read = [head - found.after(sid) for sid, head in found.heads]
    classes = _stored_classes(found.source, store)
    with _pinned(found.source) as (files, tail):
        tasks = [
            _StatesTask(
                _reads(found.source, files, tail, classes, ids, [found.after(sid) for sid in ids]),
                repo.aggregate_class,
                found.state_type,
                {sid: found.starts[sid] for sid in ids if sid in found.starts},
            )
            for ids in _ranges(order, to_read, n)
        ]
        parts = _run(client, _states_task, tasks)
    rows = [row for part in parts for row in part]  # the buckets are runs of `order`, in order
    return replay.state_frame(found.state_type, order, rows)


def rebuild(
    projection: FleetProjection[Any, R],
    store: EventStore,
    client: Any,
    *,
    buckets: int | None = None,
    as_of: int | datetime | None = None,
    by: Literal["recorded_at", "occurred_at"] = "recorded_at",
) -> R:
    """Returns ``projection.merge`` of its ``fold`` of each bucket of `store`'s streams, as of a point.

    Every stream counts (of any type). `client`, `buckets`, `as_of` and `by`: as in ``states``.

    Raises:
        InvalidInputError: `projection` is not a ``FleetProjection``, `client` is closed, `buckets` < 1.
    """
    if not isinstance(projection, FleetProjection):
        raise InvalidInputError(f"rebuild needs an ev.fleet.FleetProjection, got {projection!r}")
    n = _buckets(client, buckets)
    source = store.as_of(as_of, by=by) if as_of is not None else store.as_of(store.last_position)
    counts = source.sql("SELECT stream_id, count(*) FROM _all GROUP BY 1 ORDER BY 1").fetchall()
    order = [sid for sid, _ in counts]
    classes = _stored_classes(source, store)
    with _pinned(source) as (files, tail):
        tasks = [
            _ProjectionTask(_reads(source, files, tail, classes, ids, [0] * len(ids)), projection)
            for ids in _ranges(order, [n for _, n in counts], n)
        ]
        parts = _run(client, _projection_task, tasks)
    return projection.merge(parts)


# -- the driver ----------------------------------------------------------------------------------


def _buckets(client: Any, buckets: int | None) -> int:
    if buckets is not None and (isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1):
        raise InvalidInputError(f"buckets must be an int of 1 or more, got {buckets!r}")
    if client is None:
        return buckets or 1
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - the extra is installed where tests run
        raise InvalidInputError("ev.fleet needs dask's distributed: pip install 'eventador[fleet]'") from exc
    if not isinstance(client, Client):
        raise InvalidInputError(f"client must be a distributed.Client or None, got {client!r}")
    if client.status != "running":
        raise InvalidInputError(f"the Dask client is {client.status}, not running: connect a new Client")
    if buckets is not None:
        return buckets
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def _ranges(order: list[str], events: list[int], buckets: int) -> list[list[str]]:
    """`order` (stream ids as the store's SQL sorts them) cut into `buckets` contiguous runs
    with about as many events to read each (`events`, per stream; a stream costs at least
    one): a run's rows lie in few row groups of the files sorted by stream id."""
    ends = list(itertools.accumulate(max(e, 1) for e in events))
    total = ends[-1] if ends else 0
    cuts = [min(bisect.bisect_left(ends, total * k / buckets) + 1, len(order)) for k in range(1, buckets)]
    bounds = [0, *cuts, len(order)]
    return [order[a:b] for a, b in itertools.pairwise(bounds)]


@contextlib.contextmanager
def _pinned(source: PastView) -> Iterator[tuple[tuple[str, ...], pa.Table | None]]:
    """The store's Parquet files up to the point (pinned meanwhile) and the rest of its events up
    to the point as one Arrow table (None when there is none): the unflushed tail, or, for a
    store in memory, everything."""
    pins = Pins()
    try:
        for _ in range(3):
            snap = source.state()
            segments = [s for s in snap.segments if isinstance(s, FileSegment) and s.first_position <= snap.visible]
            try:
                for segment in segments:
                    segment.ensure_local()  # an evicted file is fetched (store/coldtier.py), then pinned
                    pins.pin(segment.path)
            except FileNotFoundError:  # merged away meanwhile: the next state names the new file
                pins.release()
                continue
            break
        else:
            raise StoreError("the store's files kept changing (compactions) while a fleet run listed them")
        flushed = max((s.last_position for s in segments), default=0)
        table = None
        if snap.visible > flushed:
            tail = source.sql("SELECT * FROM _all WHERE position > ? ORDER BY stream_id, version", [flushed])
            table = _arrow(tail.arrow())
        yield tuple(str(s.path) for s in segments), (table if table is not None and table.num_rows else None)
    finally:
        pins.release()


def _reads(
    source: PastView, files: tuple[str, ...], tail: pa.Table | None, classes: dict[str, type[Event]],
    ids: list[str], afters: list[int],
) -> _Reads:
    if tail is not None:
        import pyarrow as pa
        import pyarrow.compute as pc

        tail = tail.filter(pc.is_in(tail.column("stream_id"), value_set=pa.array(ids, pa.string())))
    return _Reads(files, tail, source.position, source.occurred_before, classes, tuple(upcasters), ids, afters)


def _stored_classes(source: PastView, store: EventStore) -> dict[str, type[Event]]:
    """The classes of the event types stored (and of those upcasters turn them into): all a
    task decodes. Not the whole registry: a process may define classes (in a function, say)
    that a worker could not unpickle, and would never need."""
    stored = {row[0] for row in source.sql("SELECT DISTINCT event_type FROM _all").fetchall()}
    chains = [u for u in upcasters]
    if any(not isinstance(u.to_type, str) for u in chains if u.event_type in stored):
        return store.registry.classes()  # a Split may lead to any type
    wanted, grown = set(stored), True
    while grown:
        targets = {u.to_type for u in chains if u.event_type in wanted and isinstance(u.to_type, str)}
        grown = not targets <= wanted
        wanted |= targets
    return {name: cls for name, cls in store.registry.classes().items() if name in wanted}


def _run(client: Any, function: Callable[[Any], T], tasks: list[Any]) -> list[T]:
    if client is None:
        return [function(task) for task in tasks]
    futures = [client.submit(_boxed, function, task, pure=False) for task in tasks]
    return [box.value for box in cast(list[_Box[T]], client.gather(futures))]


@dataclasses.dataclass(frozen=True)
class _Box(Generic[T]):
    """A task's result, in a box Dask pickles in one piece: it sends a list, tuple or dict
    item by item (5,000 rows of states took 0.3-0.9 s to come back, boxed 0.02-0.05 s)."""

    value: T


def _boxed(function: Callable[[Any], T], task: Any) -> _Box[T]:
    return _Box(function(task))


# -- the tasks (run on the workers) --------------------------------------------------------------


def _states_task(task: _StatesTask) -> list[list[Any]]:
    """The bucket's streams' final states, as rows of their fields (plain values travel back
    more cheaply than states, and their classes need not be the driver's)."""
    reads = task.reads
    classes = reads.classes
    query = replay.EVENTS_AFTER.format(wanted=replay.typed_columns(classes), source="src")
    table = None
    if reads.stream_ids:
        with _connection(reads) as con:
            table = _fetch(con, query, [reads.stream_ids, reads.afters])
    aggregate_class = task.aggregate_class

    def new(stream_id: str) -> AggregateRoot[Any]:
        # apply_event is pure: the aggregate needs no store to fold (and a worker has none).
        return aggregate_class(persistence_id=stream_id, event_store=cast("EventStore", None))

    finals: dict[str, Any] = {sid: value for sid, (value, _) in task.starts.items()}
    if table is not None:
        finals = replay.fold_streams(new, table, _decoder(reads), classes, task.starts)
    return replay.state_rows(task.state_type, reads.stream_ids, finals)


def _projection_task(task: _ProjectionTask) -> Any:
    reads = task.reads
    classes = reads.classes
    selected = ", ".join(f"a.{name}" for name in RECORD_COLUMNS)
    query = (
        f"SELECT {selected}, COLUMNS(lambda c: list_contains({replay.typed_columns(classes)}, c)) FROM src a "
        "JOIN (SELECT unnest(?::VARCHAR[]) AS sid) s ON a.stream_id = s.sid ORDER BY a.stream_id, a.version"
    )
    records: list[RecordedEvent] = []
    if reads.stream_ids:
        with _connection(reads) as con:
            table = _fetch(con, query, [reads.stream_ids])
        records = to_records(table, _decoder(reads), classes)
    return task.projection.fold(records)


@contextlib.contextmanager
def _connection(reads: _Reads) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection with view ``src``: the task's files and tail, cut at its point
    (the rows the driver's ``_all`` holds)."""
    import duckdb

    for path in reads.files:
        verify_once(Path(path))  # once per worker process, as every reader of the store does
    con = duckdb.connect()
    try:
        con.execute("SET threads = 1")  # one task per worker thread: the cluster parallelises
        parts = []
        if reads.files:
            paths = ", ".join(literal(p) for p in reads.files)
            parts.append(f"SELECT * FROM read_parquet([{paths}], union_by_name = true)")
        if reads.tail is not None:
            con.register("_tail", reads.tail)
            parts.append("SELECT * FROM _tail")
        # The bucket's range of stream ids: DuckDB skips the row groups outside it by their statistics.
        first, last = literal(reads.stream_ids[0]), literal(reads.stream_ids[-1])
        conditions = [f"position <= {int(reads.position)}", f"stream_id BETWEEN {first} AND {last}"]
        if reads.occurred_before is not None:
            when = literal(reads.occurred_before.isoformat())
            conditions.append(f"coalesce(occurred_at, recorded_at) <= {when}::TIMESTAMPTZ")
        union = " UNION ALL BY NAME ".join(parts)  # a task with streams has files or a tail
        con.execute(f"CREATE TEMP VIEW src AS SELECT * FROM ({union}) WHERE {' AND '.join(conditions)}")
        yield con
    finally:
        con.close()


def _decoder(reads: _Reads) -> Decoder:
    """A decoder of the driver's classes, with the driver's upcasters registered in this
    process (the typed-column reads consult the process's registry): one that differs
    from the driver's for the same (type, version) is replaced."""
    for upcaster in reads.upcasters:
        existing = upcasters.get(upcaster.event_type, upcaster.from_version)
        if existing is not upcaster:
            if existing is not None:
                upcasters.remove(upcaster.event_type, upcaster.from_version)
            upcasters.register(upcaster)
    registry = TypeRegistry()
    for name, cls in reads.classes.items():
        registry.register(cls, name)
    return make_decoder(registry)


def _fetch(con: duckdb.DuckDBPyConnection, query: str, params: list[Any]) -> pa.Table:
    relation: Any = con.sql(query, params=params)
    return relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else _arrow(relation.arrow())


def _arrow(result: Any) -> pa.Table:
    """A table from DuckDB's ``arrow()`` (newer versions hand back a RecordBatchReader)."""
    return result.read_all() if hasattr(result, "read_all") else result
