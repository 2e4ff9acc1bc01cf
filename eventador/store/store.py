"""The event store: append with optimistic concurrency, read streams and the log, ask SQL.

The data path, in order (each step its own module):

    append -> wal (CRC-framed CBOR, group-committed fsync)
           -> buffer (hot tier, visible to reads and SQL at once)
           -> segments (Parquet files sorted by stream, written atomically)
           -> catalog (DuckDB) + manifest (for read-only openers)
    views: DuckDB over the files and the hot tier

``EventStore`` is the front: opening and closing, appends, describing itself. The rest
is in its parts: opening.py (recovery, reopening, letting go), flushing.py (hot tier ->
Parquet -> catalog, compaction), querying.py (SQL, live views, the past), core.py
(the fields they share, visibility, waiting), reads.py (reading streams and the log).
"""

from __future__ import annotations

import bisect
import contextlib
import html
import os
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from eventador.clock import Clock
from eventador.errors import InvalidInputError
from eventador.messages import Event, TypeRegistry
from eventador.store import dataframes
from eventador.store.appends import prepare_append
from eventador.store.catalog import Catalog, read_manifest
from eventador.store.committing import Committing
from eventador.store.core import Durability as Durability  # its name here before the split
from eventador.store.handles import close_earlier_writer, forget_writer, remember_writer
from eventador.store.opening import Opening
from eventador.store.querying import Querying
from eventador.store.reads import PastView, StoreState, visible_rows
from eventador.store.records import ANY, ExpectedVersion, datetime_to_micros
from eventador.store.segments import FileSegment
from eventador.store.snapshots import SnapshotStore
from eventador.store.verify import VerifyReport, verify_store
from eventador.store.wal import used_bytes

if TYPE_CHECKING:
    from eventador.store.diff import StoreDiff
    from eventador.store.lake import LakeTarget

__all__ = ["EventStore", "open_store"]


def open_store(
    path: str | os.PathLike[str] | None = None,
    *,
    durability: Durability = "fsync",
    read_only: bool = False,
    clock: Clock | None = None,
    registry: TypeRegistry | None = None,
    flush_every: int = 100_000,
    allow_external: bool = False,
    lake: str | LakeTarget | None = None,
) -> EventStore:
    """An event store in directory `path` (created if missing), or in memory when `path` is None.

    `durability`: "fsync" (an append returns once it is on disk; concurrent appends
    share one fsync), "batch" (fsync every few ms in the background), "none".
    `flush_every`: events kept in the hot tier before they are written to Parquet.
    `allow_external`: let ``sql`` of a `read_only` store write its own scratch tables
    and read and write files outside the store (off: it only reads the store). A
    writable store's ``sql`` always may; neither may change the store's own tables.
    `lake`: publish the flushed events as a Delta Lake table at this path or ``s3://`` URI
    (or ``LakeTarget``: storage options, shard, max_lag); see ``eventador.store.lake``. A
    `read_only` store given its writer's `lake` publishes nothing: it fetches the data files
    evicted to the lake's cold tier (``local_bytes``) into a temporary folder of its own.

    Raises:
        StoreLockedError: another process has the directory open for writing.
        CorruptionError: a file of the store is damaged (the error names it).
        LakeError: the lake cannot be reached, created or written (the store is closed again).
    """
    return EventStore(
        path, durability=durability, read_only=read_only, clock=clock, registry=registry, flush_every=flush_every,
        allow_external=allow_external, lake=lake,
    )


class EventStore(Opening, Committing, Querying):
    """An append-only log of events, grouped into streams; see ``open_store``."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        durability: Durability = "fsync",
        read_only: bool = False,
        clock: Clock | None = None,
        registry: TypeRegistry | None = None,
        flush_every: int = 100_000,
        allow_external: bool = False,
        lake: str | LakeTarget | None = None,
    ) -> None:
        if lake is not None and path is None:
            raise InvalidInputError("only a store in a directory publishes a lake")
        super().__init__(
            path, durability=durability, read_only=read_only, clock=clock, registry=registry,
            flush_every=flush_every, allow_external=allow_external,
        )
        if self.path is None:
            if read_only:
                raise InvalidInputError("an in-memory store cannot be opened read_only")
            self._catalog = Catalog(None)
            self.snapshots = SnapshotStore(self._catalog)
            return
        if lake is not None:
            self._attach_cold_tier(lake)
        if read_only:
            try:
                self._load_read_only()
            except BaseException:
                self._release()  # its pins, and the files it fetched
                raise
        else:
            close_earlier_writer(self.path)
            self._open_writer()
            remember_writer(self.path, self)
        if lake is not None and not read_only:
            self._attach_lake(lake)

    def _attach_cold_tier(self, lake: str | LakeTarget) -> None:
        """Where evicted data files are fetched from (store/coldtier.py): set before opening,
        which may need them. Without ``local_bytes`` no file is evicted, but those evicted
        before are still fetched. A read-only opener fetches them into a folder of its own
        (removed at closing), never into the writer's ``data/``."""
        from eventador.store.coldtier import ColdTier, supports
        from eventador.store.lake import LakeTarget

        target = lake if isinstance(lake, LakeTarget) else LakeTarget(lake)
        if target.local_bytes is None and not supports(target.uri):
            return  # nothing was ever evicted there
        self._cold = ColdTier(target.uri, target.storage_options, target.shard)
        self._local_bytes = target.local_bytes
        if self.read_only:
            self._cache_dir = Path(tempfile.mkdtemp(prefix="eventador-cold-"))

    def _attach_lake(self, lake: str | LakeTarget) -> None:
        """Start publishing to the lake (store/lake.py); a lake that cannot be reached closes the store."""
        from eventador.store.lake import LakePublisher, LakeTarget

        assert self._catalog is not None
        target = lake if isinstance(lake, LakeTarget) else LakeTarget(lake)
        publisher = LakePublisher(self, target, self._catalog.store_id)
        try:
            publisher.open(self._segments[-1].last_position if self._segments else 0)
        except BaseException:
            self.close()
            raise
        self.lake = publisher

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, **options: Any) -> EventStore:
        """The same as ``open_store``."""
        return cls(path, **options)

    # -- appending ------------------------------------------------------------------

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
        """Append `events` to the stream atomically; returns the stream's new version.

        Every event is encoded and checked before anything is written, so a bad
        event leaves the store untouched. With durability "fsync" this returns once
        the events are on disk (appends from other threads share the fsync).
        `occurred_at`: the events' own time (one for all, or one per event);
        `stream_type`: what kind of thing the stream is (aggregates record their type).

        Raises:
            ConcurrencyError: the stream is not at `expected_version`.
            SerializationError: an event field cannot be stored (names the field).
            InvalidInputError: a bad stream id, metadata, or time.

        >>> store.append("acc-1", [Deposited(amount=5)], expected_version=0)
        1
        """
        # The function itself, not the method: one call less on the hot path.
        prepared = prepare_append(
            stream_id, events, expected_version, metadata, occurred_at, stream_type, logged=self._wal is not None
        )
        return self._commit([prepared])[0]

    def append_many(
        self,
        appends: Iterable[tuple[str, Event | Sequence[Event]]],
        *,
        expected_version: int | ExpectedVersion = ANY,
        occurred_at: Iterable[datetime | Sequence[datetime] | None] | None = None,
        stream_type: str | None = None,
    ) -> list[int]:
        """Append to many streams with one lock and one fsync; returns each stream's new version.

        All events are checked, and every stream's `expected_version`, before anything
        is written: one bad event or one conflict writes nothing. All streams' events are
        one record in the log: a crash keeps all of them or none. (``append_streams``
        takes an expected version per stream, and a checkpoint.)

        Raises:
            ConcurrencyError, SerializationError, InvalidInputError: as ``append``.
        """
        items = list(appends)
        times = [None] * len(items) if occurred_at is None else list(occurred_at)
        if len(times) != len(items):
            raise InvalidInputError(f"occurred_at has {len(times)} entries for {len(items)} appends")
        prepared = [
            prepare_append(stream_id, events, expected_version, None, when, stream_type, logged=self._wal is not None)
            for (stream_id, events), when in zip(items, times, strict=True)
        ]
        return self._commit(prepared)

    def append_streams(
        self,
        appends: Iterable[tuple[str, Event | Sequence[Event], int | ExpectedVersion]],
        *,
        checkpoint: tuple[str, int] | None = None,
        metadata: dict[str, Any] | None = None,
        stream_type: str | None = None,
    ) -> list[int]:
        """Append to several streams and record a checkpoint, all at once; returns each event's position.

        `appends`: ``(stream_id, events, expected_version)`` triples (a stream may come
        twice: its second part follows its first). `checkpoint`: ``(name, position)``, the
        upstream position this append is the outcome of; per name, positions must rise
        (``checkpoint(name)`` reads it back). Every event, every expected version and the
        checkpoint are checked before anything is written; then everything is one record
        in the log, made durable by one fsync: a crash keeps all of it or none. Positions
        are consecutive, in the order given. A checkpoint with no events is allowed.
        `metadata` and `stream_type` apply to every stream.

        Raises:
            ConcurrencyError: a stream is not at its expected version (names it); nothing is written.
            CheckpointConflict: the checkpoint is not above its current position; nothing is written.
            SerializationError, InvalidInputError: as ``append``, or a malformed triple or checkpoint.

        >>> store.append_streams(
        ...     [("acc-1", [Deposited(amount=5)], 0), ("acc-2", [Deposited(amount=7)], ev.NO_STREAM)],
        ...     checkpoint=("payments", 41),
        ... )
        [4, 5]
        >>> store.checkpoint("payments")
        41
        """
        logged = self._wal is not None
        prepared = []
        for item in appends:
            if not isinstance(item, tuple) or len(item) != 3:
                raise InvalidInputError(
                    f"append_streams takes (stream_id, events, expected_version) triples, got {item!r}"
                )
            stream_id, events, expected = item
            prepared.append(prepare_append(stream_id, events, expected, metadata, None, stream_type, logged=logged))
        return self.commit_together(prepared, checkpoint)

    def checkpoint(self, name: str) -> int:
        """The position checkpoint `name` was last recorded at (``append_streams``); 0 when never."""
        self._check_open()
        return self._checkpoints.get(name, 0)

    def checkpoints(self) -> dict[str, int]:
        """Every checkpoint recorded with ``append_streams``: name -> position."""
        self._check_open()
        return dict(self._checkpoints)

    def import_dataframe(
        self,
        df: Any,
        *,
        stream_id: str | None = None,
        event_type: str | None = None,
        occurred_at: str | None = None,
        tz: str | None = None,
        stream_type: str | None = None,
        progress: bool | None = None,
    ) -> int:
        """Import an event log DataFrame: one stream per case, one event per row; returns events written.

        The case id, activity and time columns are found by name (pm4py's, or
        ``case``, ``activity``, ``timestamp``...) unless given; `tz` is the zone of
        times written without one. See ``eventador.io.import_dataframe`` (and
        ``ev.read_xes`` / ``ev.read_event_log`` for files).
        """
        return dataframes.import_dataframe(
            self, df, stream_id=stream_id, event_type=event_type, occurred_at=occurred_at, tz=tz,
            stream_type=stream_type, progress=progress,
        )

    # -- the past -------------------------------------------------------------------

    def as_of(self, when: datetime | int, *, by: Literal["recorded_at", "occurred_at"] = "recorded_at") -> PastView:
        """A read-only view of the store at a past point.

        `when`: a position (events at or below it) or an aware datetime (events
        recorded, or with ``by="occurred_at"`` that occurred, at or before it).
        A point before the first event gives an empty view.

        Raises:
            InvalidInputError: a naive datetime, or `by` is not one of the two.
        """
        if by not in ("recorded_at", "occurred_at"):
            raise InvalidInputError(f"by must be 'recorded_at' or 'occurred_at', got {by!r}")
        snap = self.state()
        if isinstance(when, bool) or not isinstance(when, (int, datetime)):
            raise InvalidInputError(f"as_of takes a position or an aware datetime, got {when!r}")
        if isinstance(when, datetime):
            if when.utcoffset() is None:
                raise InvalidInputError(
                    f"as_of needs an aware datetime (got naive {when!r}); add tzinfo, e.g. tzinfo=UTC"
                )
            if by == "occurred_at":
                return PastView(self, snap.visible, occurred_before=when)
            limit = self._position_at(snap, when)
        else:
            limit = max(0, min(when, snap.visible))
        return PastView(self, limit)

    def diff(self, a: datetime | int, b: datetime | int) -> StoreDiff:
        """Returns a ``StoreDiff`` of the events after point `a` up to point `b` (see ``eventador.timetravel.diff``)."""
        from eventador.store.diff import diff

        return diff(self, a, b)

    def _position_at(self, snap: StoreState, when: datetime) -> int:
        # recorded_at never decreases with position: every file before the one that holds
        # the point is all in, every one after all out; only that one file is read.
        us = datetime_to_micros(when)
        limit = 0
        for segment in snap.segments:
            if segment.max_recorded_us() > us:
                return max(limit, segment.last_position_recorded_by(us))
            limit = segment.last_position
        for buffer in snap.buffers:
            rows = visible_rows(buffer, snap)
            inside = bisect.bisect_right(buffer.recorded, us, 0, rows)
            if inside < rows:
                return buffer.first_position + inside - 1 if inside else limit
            if rows:
                limit = buffer.first_position + rows - 1
        return min(limit, snap.visible)

    # -- describing -------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Check every file of the store: each Parquet file's checksum (read in full), every
        log frame, the catalog and the manifest; returns a report (``report.ok``).

        Costs one read of every file. Changes nothing. ``eventador check DIR`` does the
        same for a store no process has open.
        """
        self._check_open()
        if self.path is None:
            return VerifyReport("(memory)")
        entries = self._catalog.files() if self._catalog is not None else list(read_manifest(self.path).files)
        return verify_store(self.path, entries=entries, live=True)

    def info(self) -> dict[str, Any]:
        """Counts and sizes: streams, events, event types with counts, files, bytes on disk,
        and the log's fsyncs and bytes since opening (appends / fsyncs: how well appends share them)."""
        snap = self.state()
        with self._lock:
            streams = self._visible_streams()
        types = dict(self.sql("SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC").fetchall())
        files = [s for s in snap.segments if isinstance(s, FileSegment)]
        size = 0
        if self.path is not None:  # the log's segments count what they hold, not their preallocated zeros
            size = sum(
                used_bytes(p) if p.suffix == ".wal" and p.parent == self._wal_dir else p.stat().st_size
                for p in self.path.rglob("*")
                if p.is_file()
            )
        return {
            "path": str(self.path) if self.path else None,
            "streams": streams,
            "events": snap.visible,
            "event_types": types,
            "files": len(files),
            "hot_events": sum(visible_rows(b, snap) for b in snap.buffers),
            "bytes": size,
            "views": [view.name for view in self.views()],
            "fsyncs": self.fsyncs,
            "log_bytes": self._wal.logged_bytes if self._wal is not None else 0,
        }

    def __repr__(self) -> str:
        where = str(self.path) if self.path else "memory"
        state = "closed" if self._closed else f"{self._visible} events in {self._visible_streams()} streams"
        mode = ", read-only" if self.read_only else ""
        return f"EventStore({where}{mode}: {state})"

    def _repr_html_(self) -> str:
        if self._closed:
            return f"<p>{html.escape(repr(self))}</p>"
        info = self.info()
        rows = "".join(
            f"<tr><td>{html.escape(str(t))}</td><td style='text-align:right'>{n:,}</td></tr>"
            for t, n in list(info["event_types"].items())[:20]
        )
        return (
            f"<div><b>EventStore</b> <code>{html.escape(str(info['path'] or 'in memory'))}</code>"
            f"<table><tr><th>streams</th><td>{info['streams']:,}</td></tr>"
            f"<tr><th>events</th><td>{info['events']:,}</td></tr>"
            f"<tr><th>Parquet files</th><td>{info['files']}</td></tr>"
            f"<tr><th>bytes on disk</th><td>{info['bytes']:,}</td></tr></table>"
            f"<table><tr><th>event type</th><th>events</th></tr>{rows}</table></div>"
        )

    # -- closing ----------------------------------------------------------------------

    def close(self) -> None:
        """Flush the hot tier, then release files, the catalog and the directory lock. Idempotent.

        Everything is released even when the flush or a release fails (a full disk, a
        failed log): the store can be opened again at once, and every acknowledged event
        is there (what could not be flushed is in the write-ahead log).

        Raises:
            StoreError: the first thing that failed (once: a second close does nothing).
        """
        if self._closed:
            return
        failed: BaseException | None = None
        try:
            if not self.read_only and self.path is not None:
                self.flush()
        except BaseException as exc:  # a Ctrl-C too: let go of everything first
            failed = exc
        lake, self.lake = self.lake, None
        if lake is not None:
            lake.close()  # publishes what is flushed (a lake that fails catches up at the next open)
        with self._lock:
            self._closed = True
        self._notify()
        if self.path is not None and not self.read_only:
            forget_writer(self.path, self)
        released = self._release()
        if failed is not None:
            raise failed
        if released is not None:
            raise released

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._closed and self._lockfile is not None:
                self._release()
