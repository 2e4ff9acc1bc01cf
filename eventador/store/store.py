"""The event store: append with optimistic concurrency, read streams and the log, ask SQL.

The data path, in order (each step its own module):

    append -> wal (CRC-framed CBOR, group-committed fsync)
           -> buffer (hot tier, visible to reads and SQL at once)
           -> segments (Parquet files sorted by stream, written atomically)
           -> catalog (DuckDB) + manifest (for read-only openers)
    views: DuckDB over the files and the hot tier

On open, the catalog names the files; the WAL tail after them is replayed into
the hot tier, and a torn final frame (a crash mid-write, never acknowledged)
is dropped. A data file the catalog does not name is deleted only when the named
files or the log hold its events too; else the catalog is older than the files,
and opening fails (``store/repair.py`` rebuilds it from them).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import html
import os
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cbor2
import duckdb
import pyarrow as pa

from eventador.clock import Clock, SystemClock
from eventador.codec import make_decoder
from eventador.errors import (
    ConcurrencyError,
    CorruptionError,
    InvalidInputError,
    ReadOnlyError,
    StoreClosedError,
    StoreError,
    store_os_error,
)
from eventador.messages import Event, TypeRegistry
from eventador.messages import registry as default_registry
from eventador.store.appends import PreparedAppend, decode_columns, prepare_append, verify_expected
from eventador.store.buffer import HotBuffer
from eventador.store.bulk import NewStreams
from eventador.store.catalog import CATALOG, Catalog, FileEntry, FileFacts, holds_store, read_facts, read_manifest
from eventador.store.checksums import remember
from eventador.store.compaction import full_merge, tiered_merge
from eventador.store.lock import DirectoryLock
from eventador.store.pins import Pins, remove_unless_pinned
from eventador.store.reads import (
    READ_BATCH,
    PastView,
    Reader,
    StoreState,
    check_stream_id,
    run_sql,
    type_names,
    visible_rows,
)
from eventador.store.records import (
    ANY,
    ExpectedVersion,
    RecordedEvent,
    datetime_to_micros,
)
from eventador.store.segments import (
    FileSegment,
    MemorySegment,
    Segment,
    sort_for_segment,
    unify,
    write_segment,
)
from eventador.store.snapshots import SnapshotStore
from eventador.store.sqlguard import SqlRelation, check_query, fixed_names, restrict
from eventador.store.verify import VerifyReport, verify_store
from eventador.store.views import Sources, SqlViews
from eventador.store.wal import WriteAheadLog, fsync_directory, scan_segment, used_bytes

if TYPE_CHECKING:
    from eventador.projections.views import LiveView, LiveViews
    from eventador.store.diff import StoreDiff

__all__ = ["EventStore", "open_store"]

Durability = Literal["fsync", "batch", "none"]
_DURABILITIES = ("fsync", "batch", "none")
_TRASH_SECONDS = 60.0  # merged-away files outlive the merge so long (and while a reader pins them)
_READER_PATIENCE = 0.5  # seconds a reader looks again at a state that does not add up before it says so


def open_store(
    path: str | os.PathLike[str] | None = None,
    *,
    durability: Durability = "fsync",
    read_only: bool = False,
    clock: Clock | None = None,
    registry: TypeRegistry | None = None,
    flush_every: int = 100_000,
    allow_external: bool = False,
) -> EventStore:
    """An event store in directory `path` (created if missing), or in memory when `path` is None.

    `durability`: "fsync" (an append returns once it is on disk; concurrent appends
    share one fsync), "batch" (fsync every few ms in the background), "none".
    `flush_every`: events kept in the hot tier before they are written to Parquet.
    `allow_external`: let ``sql`` of a `read_only` store write its own scratch tables
    and read and write files outside the store (off: it only reads the store). A
    writable store's ``sql`` always may; neither may change the store's own tables.

    Raises:
        StoreLockedError: another process has the directory open for writing.
        CorruptionError: a file of the store is damaged (the error names it).
    """
    return EventStore(
        path, durability=durability, read_only=read_only, clock=clock, registry=registry, flush_every=flush_every,
        allow_external=allow_external,
    )


@dataclass(frozen=True, slots=True)
class _Recovered:
    """What opening (or a reader's refresh) found: the files, and the log's events after them."""

    segments: list[Segment]
    heads: dict[str, int]
    buffer: HotBuffer
    visible: int
    last_recorded_us: int


class EventStore(Reader):
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
    ) -> None:
        if durability not in _DURABILITIES:
            raise InvalidInputError(f"durability must be one of {_DURABILITIES}, got {durability!r}")
        if flush_every < 1:
            raise InvalidInputError(f"flush_every must be at least 1, got {flush_every}")
        self.path = None if path is None else Path(path)
        self.durability: Durability = durability if path is not None else "none"
        self.read_only = read_only
        self.allow_external = allow_external or not read_only
        """Whether ``sql`` may write scratch tables and touch files outside the store (see ``open_store``)."""
        self.clock = clock or SystemClock()
        self.registry = registry or default_registry
        self.flush_every = flush_every
        self._compact_rows = max(2_000_000, flush_every * 4)
        self._trash: list[tuple[float, Path]] = []  # merged-away files, deleted a little later
        self._pins: Pins | None = None  # a reader's hold on the files it reads
        self._heads_of: dict[str, dict[str, int]] = {}  # each open file's stream heads
        self._log_segment = 0  # the newest log segment begun (recorded with each catalog change)
        self._log_required = False  # whether it exists, so that opening must find it
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._sql_lock = threading.RLock()
        self._closed = False
        self._heads: dict[str, int] = {}
        self._segments: list[Segment] = []
        self._frozen: list[HotBuffer] = []
        self._buffer = HotBuffer(1)
        self._visible = 0
        self._last_recorded_us = 0
        self._retire_after = 0  # the newest WAL segment whose events are all being flushed
        self._wal: WriteAheadLog | None = None
        self._catalog: Catalog | None = None
        self._lockfile: DirectoryLock | None = None
        self._views: SqlViews | None = None
        self._live: LiveViews | None = None  # live SQL views (eventador.projections.views), loaded on first use
        self._changed = threading.Condition()
        self._visible_lock = threading.Lock()
        self._thread_waiters = 0  # threads in wait_for_position
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.snapshots = SnapshotStore(None, read_only=read_only)
        """Snapshots of streams: ``save``, ``latest``, ``list``, ``prune``, ``delete``."""
        if self.path is None:
            if read_only:
                raise InvalidInputError("an in-memory store cannot be opened read_only")
            self._catalog = Catalog(None)
            self.snapshots = SnapshotStore(self._catalog)
            return
        if read_only:
            self._load_read_only()
        else:
            self._open_writer()

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, **options: Any) -> EventStore:
        """The same as ``open_store``."""
        return cls(path, **options)

    # -- opening --------------------------------------------------------------------

    @property
    def _data_dir(self) -> Path:
        assert self.path is not None
        return self.path / "data"

    @property
    def _wal_dir(self) -> Path:
        assert self.path is not None
        return self.path / "wal"

    @property
    def _pending_dir(self) -> Path:
        # Where a data file waits, complete, until the catalog names it (see _write_segment).
        assert self.path is not None
        return self.path / "pending"

    def _open_writer(self) -> None:
        assert self.path is not None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_os_error(exc, exc.filename or self.path, "create the store directory") from exc
        self._lockfile = DirectoryLock(self.path)
        self._lockfile.acquire()
        try:
            self._catalog = catalog = Catalog(self.path)
            for folder in (self._data_dir, self._wal_dir, self._pending_dir):
                folder.mkdir(exist_ok=True)
            entries = catalog.files()
            self._finish_publishing(entries)
            recovered, leftovers = self._recover_beside_unnamed(entries, catalog)
            self._install(recovered)
            self._discard(leftovers)
            existing = WriteAheadLog.segments(self._wal_dir)
            first = max(existing[-1][0] if existing else 0, catalog.log_segment) + 1
            self._wal = WriteAheadLog(
                self._wal_dir, durability=self.durability, first_segment=first, flush_every=self.flush_every
            )
            self._wal.on_durable = self._durable
            self._log_segment = first
            self._log_required = self._wal.begin_segment()  # a full disk: made at the first append
            catalog.record_log_segment(first, required=self._log_required)  # and the manifest, for readers
            self.snapshots = SnapshotStore(catalog)
        except BaseException:
            self._release()  # what failed is the error to show, not a failure to let go
            raise

    def _finish_publishing(self, entries: list[FileEntry]) -> None:
        """Move into place the pending files the catalog names (a crash came between naming and
        moving them); delete the other pending and temporary files, which no one ever named: their
        events are in the log, or in the files they were to replace, or were never acknowledged."""
        names = {e.name for e in entries}
        moved = False
        for path in sorted(self._pending_dir.iterdir()):
            if path.name in names:
                os.replace(path, self._data_dir / path.name)
                moved = True
            else:
                path.unlink()
        for path in self._data_dir.glob(".tmp-*"):  # what versions before pending/ left
            path.unlink()
        if moved:
            fsync_directory(self._data_dir)

    def _recover_beside_unnamed(self, entries: list[FileEntry], catalog: Catalog) -> tuple[_Recovered, list[Path]]:
        """The state the catalog's files and the log hold, and the data files the catalog does not
        name, whose events that state holds too (a crash's leftovers, merged-away files).

        Raises:
            CorruptionError: as ``_recover``; or an unnamed file holds events the state lacks:
                the catalog is older than the files, and deleting the file would lose them.
        """
        unnamed = self._unnamed_files({e.name for e in entries}, catalog.store_id)
        required = catalog.log_segment if catalog.log_required else 0
        try:
            recovered = self._recover(entries, catalog.store_id, required, repair=True)
        except CorruptionError as exc:
            # A log that does not follow the catalog's files, beside files it does not name:
            # the catalog is the stale one.
            end = entries[-1].last_position if entries else 0
            if any(facts.last_position > end for _, facts in unnamed):
                raise self._stale_catalog(unnamed, end) from exc
            raise
        beyond = [(path, facts) for path, facts in unnamed if facts.last_position > recovered.visible]
        if beyond:
            raise self._stale_catalog(beyond, recovered.visible)
        return recovered, [path for path, _ in unnamed]

    def _unnamed_files(self, names: set[str], store_id: str) -> list[tuple[Path, FileFacts]]:
        """The data files the catalog does not name, with what each says about itself.

        Raises:
            CorruptionError: one is unreadable, or belongs to another store: nothing written by
                an interrupted flush, import or compaction looks so, and it is not ours to delete.
        """
        found = []
        for path in sorted(self._data_dir.glob("*.parquet")):
            if path.name in names:
                continue
            try:
                facts = read_facts(path)
            except CorruptionError as exc:
                raise CorruptionError(
                    str(path), f"{exc.reason}; the catalog does not name it either: move it out of the store"
                ) from exc
            if facts.store_id not in (None, store_id):
                raise CorruptionError(
                    str(path), f"belongs to store {facts.store_id}, not to this one ({store_id}): move it out"
                )
            found.append((path, facts))
        return found

    def _stale_catalog(self, files: list[tuple[Path, FileFacts]], end: int) -> CorruptionError:
        assert self.path is not None
        listed = ", ".join(f"{path.name} (positions {f.first_position}-{f.last_position})" for path, f in files)
        return CorruptionError(
            str(self.path / CATALOG),
            f"is older than the data files: it does not name {listed}, which hold events after position "
            f"{end} that no other file and no log segment holds; `eventador repair {self.path}` rebuilds "
            "the catalog from the files",
        )

    def _discard(self, paths: list[Path]) -> None:
        """Delete data files whose events other files or the log hold; those a reader still
        reads wait in the trash."""
        stale = self.clock.monotonic() - _TRASH_SECONDS
        for path in paths:
            if not remove_unless_pinned(path):
                self._trash.append((stale, path))

    def _load_read_only(self) -> None:
        """Load the state the manifest describes (a reader's opening and ``refresh``).

        The writer may flush or compact meanwhile: a log segment retired or a file merged
        away under us, or a log tail half written, is looked at again (at a fresh manifest
        if there is one) until it adds up; only a state that stays wrong is an error.
        """
        assert self.path is not None
        if not self.path.is_dir() or not holds_store(self.path):
            raise InvalidInputError(f"no store at {self.path}")
        if self._pins is None:
            self._pins = Pins()
        started = time.monotonic()
        manifest = read_manifest(self.path)
        unchanged_since = started
        while True:
            try:
                recovered = self._recover(
                    list(manifest.files), manifest.store_id,
                    manifest.log_segment if manifest.log_required else 0, repair=False,
                )
                break
            except (FileNotFoundError, CorruptionError) as exc:
                self._pins.keep_only(s.path for s in self._segments if isinstance(s, FileSegment))
                now = time.monotonic()
                fresh = read_manifest(self.path)
                if (fresh == manifest and now - unchanged_since > _READER_PATIENCE) or now - started > 60:
                    if isinstance(exc, FileNotFoundError):
                        raise CorruptionError(str(exc.filename or self.path), "missing") from exc
                    raise
                if fresh != manifest:
                    manifest, unchanged_since = fresh, now
                else:
                    time.sleep(0.002)
        self._install(recovered)
        self._pins.keep_only(s.path for s in recovered.segments if isinstance(s, FileSegment))

    def refresh(self) -> None:
        """Read-only stores: load what the writer has added since opening (or the last refresh)."""
        if not self.read_only:
            return
        self._check_open()
        with self._lock:
            self._load_read_only()

    def _recover(self, entries: list[FileEntry], store_id: str | None, log_segment: int, *, repair: bool) -> _Recovered:
        """The state the files `entries` and the log after them hold; `log_segment`: the segment
        the log must reach (0: none). Files already open are used again (a reader's refresh).

        Raises:
            CorruptionError: a file or log segment is missing, damaged, or disagrees with the catalog.
            FileNotFoundError: (read-only) a file vanished: the writer merged it away meanwhile.
        """
        segments = self._open_files(entries, store_id)
        heads: dict[str, int] = {}
        for segment in segments:
            heads.update(self._file_heads(segment))
        end = entries[-1].last_position if entries else 0
        log = self._check_log(log_segment)
        buffer = HotBuffer(end + 1)
        visible, last_recorded = self._replay_wal(buffer, heads, log, repair=repair)
        # recorded_at never goes back, also across a reopen with everything flushed.
        last_recorded = max([last_recorded, *(s.max_recorded_us() for s in segments)])
        return _Recovered(segments, heads, buffer, visible, last_recorded)

    def _install(self, recovered: _Recovered) -> None:
        self._segments = recovered.segments
        self._heads = recovered.heads
        self._buffer = recovered.buffer
        self._frozen = []
        self._visible = recovered.visible
        self._last_recorded_us = recovered.last_recorded_us
        names = {s.path.name for s in recovered.segments if isinstance(s, FileSegment)}
        self._heads_of = {name: heads for name, heads in self._heads_of.items() if name in names}

    def _open_files(self, entries: list[FileEntry], store_id: str | None) -> list[Segment]:
        """The data files `entries` name, checked against them (and pinned, by a reader)."""
        opened = {s.path.name: s for s in self._segments if isinstance(s, FileSegment)}
        segments: list[Segment] = []
        expected = 1
        for e in entries:
            path = self._data_dir / e.name
            if e.first_position != expected:
                raise CorruptionError(str(path), f"starts at position {e.first_position}, expected {expected}")
            expected = e.last_position + 1
            segment = opened.get(e.name)
            if segment is not None and (segment.first_position, segment.last_position) == (
                e.first_position, e.last_position
            ):
                segments.append(segment)
                continue
            if self._pins is not None:
                self._pins.pin(path)
            elif not path.exists():
                raise CorruptionError(
                    str(path), f"listed in the catalog but missing; `eventador repair {self.path}` "
                    "names in the catalog what the remaining files hold"
                )
            segment = FileSegment(path, e.first_position, e.last_position, e.rows)
            facts = FileFacts.from_schema(segment.schema())
            problem = facts.disagreement(e, store_id) if facts is not None else None
            if problem is None and not self.read_only and segment.size != e.bytes:
                problem = f"is {segment.size} bytes, the catalog says {e.bytes}"
            if problem is not None:
                raise CorruptionError(
                    str(path), f"{problem}: the catalog and the data files disagree; `eventador repair {self.path}` "
                    "names in the catalog what the files hold",
                )
            segments.append(segment)
        return segments

    def _file_heads(self, segment: Segment) -> dict[str, int]:
        """Each stream's newest version in one file (read once per file: files never change)."""
        name = segment.path.name if isinstance(segment, FileSegment) else None
        heads = self._heads_of.get(name) if name is not None else None
        if heads is None:
            table = segment.heads()
            ids, versions = table.column("stream_id").to_pylist(), table.column("version_max").to_pylist()
            heads = dict(zip(ids, versions, strict=True))
            if name is not None:
                self._heads_of[name] = heads
        return heads

    def _check_log(self, required: int) -> list[tuple[int, Path]]:
        """Segment `required` of the log is there (0: any). A segment missing between two
        others is found by the positions of their frames (``_replay_wal``).

        The segments before it are being retired: their events are in the files. A reader
        that finds it gone was looking at a manifest the writer has since replaced.

        Returns the segments, numbered and oldest first: the ones to replay. (A reader lists
        them once: listed again, a segment retired meanwhile would be missed without a word,
        and the log would end early.)

        Raises:
            CorruptionError: naming the segment that is missing.
        """
        segments = WriteAheadLog.segments(self._wal_dir)
        numbers = [number for number, _ in segments]
        if required and required not in numbers:
            missing = WriteAheadLog.segment_path(self._wal_dir, required)
            raise CorruptionError(
                str(missing),
                "missing: the log goes on in this segment (the catalog says so, and the writer did not close "
                "with it unused), so the events appended to it are lost unless it is put back; "
                f"`eventador repair {self.path}` makes the store usable without them",
            )
        return segments

    def _replay_wal(
        self, buffer: HotBuffer, heads: dict[str, int], segments: list[tuple[int, Path]], *, repair: bool
    ) -> tuple[int, int]:
        """Add the log's events after the files to `buffer` (and `heads`); returns the last
        position and its recorded time (µs)."""
        next_position = buffer.first_position
        last_recorded = 0
        for number, (segment_no, path) in enumerate(segments, 1):
            # A reader's last segment may be the one a live writer appends to: a bad
            # final frame there may be in flight (the writer's own open judges it).
            settled = repair or number < len(segments)
            for frame in scan_segment(path, repair=repair, settled=settled):
                try:
                    first, stream_id, first_version, recorded_us, stream_type, metadata, columns = cbor2.loads(
                        frame.body
                    )
                    types, ids, occurred, payloads = decode_columns(columns, log_format=frame.log_format)
                except (ValueError, TypeError, cbor2.CBORDecodeError) as exc:
                    raise CorruptionError(str(path), f"undecodable frame: {exc}", frame.offset) from exc
                n = len(payloads)
                if first + n <= next_position:
                    continue  # already in a Parquet file
                if first != next_position or first_version != heads.get(stream_id, 0) + 1:
                    before = segments[number - 2][0] if number > 1 else None
                    if first > next_position and before is not None and segment_no != before + 1:
                        # Gaps in the numbering are harmless where they held nothing (an unused
                        # segment removed at close); here the positions between went with them.
                        missing = WriteAheadLog.segment_path(self._wal_dir, before + 1)
                        raise CorruptionError(
                            str(missing), f"missing: log segments {before} and {segment_no} are there, and positions "
                            f"{next_position}-{first - 1} are in no data file and no log segment",
                        )
                    raise CorruptionError(
                        str(path),
                        f"frame for position {first} (stream {stream_id!r} v{first_version}) does not follow "
                        f"position {next_position - 1}",
                        frame.offset,
                    )
                buffer.add(
                    stream_id, first_version, recorded_us, stream_type, metadata, types, ids, occurred, payloads, None
                )
                heads[stream_id] = first_version + n - 1
                next_position += n
                last_recorded = recorded_us
        return next_position - 1, last_recorded

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
        prepared = self._prepare(stream_id, events, expected_version, metadata, occurred_at, stream_type)
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
        is written: one bad event or one conflict writes nothing. Each stream's events
        are one atomic record in the log (a crash keeps or drops each stream's events whole).

        Raises:
            ConcurrencyError, SerializationError, InvalidInputError: as ``append``.
        """
        items = list(appends)
        times = [None] * len(items) if occurred_at is None else list(occurred_at)
        if len(times) != len(items):
            raise InvalidInputError(f"occurred_at has {len(times)} entries for {len(items)} appends")
        prepared = [
            self._prepare(stream_id, events, expected_version, None, when, stream_type)
            for (stream_id, events), when in zip(items, times, strict=True)
        ]
        return self._commit(prepared)

    def _prepare(
        self,
        stream_id: str,
        events: Event | Sequence[Event],
        expected_version: int | ExpectedVersion,
        metadata: dict[str, Any] | None,
        occurred_at: datetime | Sequence[datetime] | None,
        stream_type: str | None,
    ) -> PreparedAppend:
        """Check and encode one stream's append: everything that can fail before writing."""
        return prepare_append(
            stream_id, events, expected_version, metadata, occurred_at, stream_type, logged=self._wal is not None
        )

    def _commit(self, appends: list[PreparedAppend]) -> list[int]:
        """All of `appends` or, on any conflict, none: one lock, one fsync."""
        return self._commit_some(appends, each=False)  # type: ignore[return-value]  # no errors when not each

    def _commit_each(self, appends: list[PreparedAppend]) -> list[int | ConcurrencyError]:
        """Each of `appends` on its own (a conflict fails only its own), in order, under one
        lock and one fsync: the group commit of appends gathered from many actors."""
        return self._commit_some(appends, each=True)

    def _commit_some(self, appends: list[PreparedAppend], *, each: bool) -> list[int | ConcurrencyError]:
        now = datetime_to_micros(self.clock.now())
        lsn = 0
        versions: list[int | ConcurrencyError] = []
        with self._lock:
            self._check_writable()
            wal = self._wal  # this append's log, even if the store is closed meanwhile
            heads = self._heads
            if not each:
                pending: dict[str, int] = {}
                for a in appends:  # every check before the first write
                    current = pending.get(a.stream_id, heads.get(a.stream_id, 0))
                    verify_expected(a.stream_id, a.expected, current)
                    pending[a.stream_id] = current + len(a.events)
            recorded = max(now, self._last_recorded_us)  # recorded_at never goes back
            buffer = self._buffer
            last = 0
            for a in appends:
                current = heads.get(a.stream_id, 0)
                if each:
                    try:
                        verify_expected(a.stream_id, a.expected, current)
                    except ConcurrencyError as conflict:
                        versions.append(conflict)
                        continue
                if not a.events:
                    versions.append(current)
                    continue
                first = buffer.first_position + len(buffer)
                if wal is not None:
                    # The columns were encoded before the lock: a 7-array whose last item is them.
                    head = cbor2.dumps([first, a.stream_id, current + 1, recorded, a.stream_type, a.metadata])
                    try:
                        lsn = wal.add(b"\x87" + head[1:] + a.logged, first + len(a.events) - 1)
                    except BaseException:
                        self._forget_unlogged()  # this call's earlier streams, if any
                        raise
                buffer.add(
                    a.stream_id, current + 1, recorded, a.stream_type, a.metadata,
                    a.types, a.ids, a.occurred, a.payloads, a.events,
                )
                heads[a.stream_id] = current + len(a.events)
                versions.append(current + len(a.events))
                last = first + len(a.events) - 1
            self._last_recorded_us = recorded
            if self.durability != "fsync" and last:
                self._show(last)
            full = len(buffer) >= self.flush_every
        if not last:
            return versions
        if wal is not None and self.durability == "fsync":
            try:
                wal.sync(lsn)  # the round's leader has made these events visible (_durable)
            except BaseException:
                if wal.failed:
                    with self._lock:
                        self._forget_unlogged()
                raise
        else:
            self._notify()
        if full:
            self._flush_quietly()
        return versions

    def _forget_unlogged(self) -> None:
        """After the log failed (the caller holds the lock): the streams' versions go back
        to their last visible event. Appends whose frames never reached the disk were not
        acknowledged and are not counted; their rows stay in the hot tier, past what is
        visible, never shown nor flushed: the failed log refuses every later append and
        flush until the store is opened again."""
        if self._wal is None or not self._wal.failed:
            return
        buffer = self._buffer
        first_unlogged: dict[str, int] = {}
        for row in range(max(0, self._visible + 1 - buffer.first_position), len(buffer)):
            first_unlogged.setdefault(buffer.stream_ids[row], buffer.versions[row])
        for stream_id, version in first_unlogged.items():
            if version > 1:
                self._heads[stream_id] = version - 1
            else:
                self._heads.pop(stream_id, None)

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
        times written without one. See ``eventador.importing.import_dataframe`` (and
        ``ev.read_xes`` / ``ev.read_event_log`` for files).
        """
        from eventador.io.importing import import_dataframe

        return import_dataframe(
            self, df, stream_id=stream_id, event_type=event_type, occurred_at=occurred_at, tz=tz,
            stream_type=stream_type, progress=progress,
        )

    def _append_new_streams(self, streams: NewStreams) -> int:
        """Write whole new streams as one new segment, atomically; returns the events written.

        The bulk path of imports. The hot tier is flushed first so the new file
        follows the last one; then, with appends held back, the file is written and
        recorded in the catalog in one transaction: after a crash it is there whole
        or not at all. The file is the durable record, so the WAL is not involved.

        Raises:
            InvalidInputError: one of the streams already exists (nothing is written).
        """
        if not len(streams):
            return 0
        classes, decode = self.registry.classes(), make_decoder(self.registry)
        with self._flush_lock:
            while True:  # appends may land between the flush and the lock: flush again
                written = self._flush_holding_lock(only_if_full=False)
                self._lock.acquire()
                if not len(self._buffer) and not self._frozen:
                    break
                self._lock.release()
            try:
                self._check_writable()
                heads = streams.stream_heads()
                existing = [stream_id for stream_id in heads if self._heads.get(stream_id, 0)]
                if existing:
                    raise InvalidInputError(
                        f"{len(existing)} stream(s) already exist (first: {existing[0]!r}); nothing was written"
                    )
                first = self._buffer.first_position
                recorded = max(datetime_to_micros(self.clock.now()), self._last_recorded_us)
                table = sort_for_segment(streams.table(first, recorded, classes, decode))
                segment = self._write_segment(table, first, first + len(streams) - 1)
                self._segments.append(segment)
                self._heads.update(heads)
                self._buffer = HotBuffer(segment.last_position + 1)
                self._show(segment.last_position)
                self._last_recorded_us = recorded
            finally:
                self._lock.release()
            try:
                self._publish()
            except StoreError as exc:  # the import is stored: only readers must wait for it
                warnings.warn(f"imported, but readers see it after the next flush: {exc}", RuntimeWarning,
                              stacklevel=3)
        self._notify()
        if written or len(self._segments) >= 4:
            self._maybe_compact()
        return len(streams)

    def _write_segment(self, table: pa.Table, first: int, last: int, replaced: Sequence[Segment] = ()) -> Segment:
        """`table` as a new segment, in place of `replaced` (none: after the others): a data file
        the catalog names, or one kept in memory. The caller updates the manifest
        (``_publish``) once the store holds the segment.

        The file, which carries its own description (``FileFacts``), is written and fsynced in
        ``pending``, named in the catalog, then moved into ``data``. So a file in ``data``
        that the catalog does not name was never published, and after a crash a pending file
        the catalog names is moved into place on opening (``_finish_publishing``).

        Raises:
            StoreError: DiskFullError when the disk filled; no file is left behind, and the
                catalog is as it was.
        """
        if self.path is None or self._catalog is None:
            return MemorySegment(table, first, last)
        catalog = self._catalog
        durable = self.durability != "none"
        facts = FileFacts(catalog.store_id, first, last, table.num_rows)
        try:
            pending = write_segment(self._pending_dir, table, durable=durable, metadata=facts.metadata())
        except OSError as exc:
            # Flushes, imports and compactions take turns (_flush_lock): a temporary file is this one's.
            for path in self._pending_dir.glob(f"*{first:012d}-{last:012d}.parquet"):
                path.unlink(missing_ok=True)
            advice = "the next flush writes the events (the write-ahead log keeps them meanwhile)"
            raise store_os_error(exc, self._pending_dir, "write a Parquet file in", advice) from exc
        pending.close()  # opened again where it ends up
        name = pending.path.name
        final = self._data_dir / name
        entry = FileEntry(name, first, last, table.num_rows, pending.size)
        old = [
            FileEntry(s.path.name, s.first_position, s.last_position, s.rows, s.size)
            for s in replaced
            if isinstance(s, FileSegment)
        ]
        try:
            catalog.replace(
                [entry], [e.name for e in old], log_segment=self._log_segment, log_required=self._log_required
            )
        except StoreError:
            pending.path.unlink(missing_ok=True)
            raise
        try:
            os.replace(pending.path, final)
            if durable:
                fsync_directory(self._data_dir)
        except OSError as exc:
            with contextlib.suppress(StoreError):  # else opening again finishes the move
                catalog.replace(old, [name])
                pending.path.unlink(missing_ok=True)
                final.unlink(missing_ok=True)
            raise store_os_error(exc, final, "move a new Parquet file into place at") from exc
        remember(final)  # sealed from these bytes: its new name (and change time) need no second read
        return FileSegment(final, first, last, table.num_rows)

    def _publish(self) -> None:
        """Rewrite manifest.json, the list of files read-only openers load, after the catalog changed.

        Raises:
            StoreError: it could not be written (readers keep the previous one).
        """
        if self._catalog is not None:
            self._catalog.write_manifest()

    def _flush_quietly(self) -> None:
        # The append that filled the buffer is already acknowledged: a failed flush
        # must not look like a failed append. The events stay in the WAL and the hot tier.
        try:
            self._flush(only_if_full=True)
        except StoreError as exc:
            warnings.warn(f"flush failed, will retry: {exc}", RuntimeWarning, stacklevel=3)

    def stream_version(self, stream_id: str) -> int:
        """The stream's current version: the number of events in it (0 when it does not exist)."""
        check_stream_id(stream_id)
        self._check_open()
        return self._heads.get(stream_id, 0)

    @property
    def last_position(self) -> int:
        """The position of the newest visible event (0 for an empty store)."""
        return self._visible

    def _snapshot(self) -> StoreState:
        with self._lock:
            self._check_open()
            return StoreState(tuple(self._segments), (*self._frozen, self._buffer), self._visible)

    # -- waiting for new events -------------------------------------------------------

    def _durable(self, position: int) -> None:
        """Events up to `position` are on disk ("fsync" durability): show them and wake readers.
        Called once per fsync round by its leader, so appenders need not take the lock again."""
        self._show(position)
        self._notify()

    def _show(self, position: int) -> None:
        """Make events up to `position` visible; never moves back. Its own small lock: a
        round's leader calls it while another thread may hold the store lock waiting for
        that very round (a flush)."""
        with self._visible_lock:
            if position > self._visible:
                self._visible = position

    def _notify(self) -> None:
        """Wake everyone waiting for new events (threads and asyncio loops)."""
        # Taking the condition's lock on every append would make concurrent writers queue
        # for it: only when a thread waits (it counts itself in before testing, we after writing).
        if self._thread_waiters:
            with self._changed:
                self._changed.notify_all()
        for loop, event in list(self._async_waiters):
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    def wait_for_position(self, position: int, timeout: float | None = None) -> bool:
        """Block until an event at `position` or later is visible; False on timeout."""
        with self._changed:
            self._thread_waiters += 1
            try:
                return self._changed.wait_for(lambda: self._visible >= position or self._closed, timeout)
            finally:
                self._thread_waiters -= 1

    async def wait_for_position_async(self, position: int) -> bool:
        """Wait, without blocking the event loop, until `position` is visible; False if the store closed first.

        Woken by the append that makes it visible (no polling); cancel the awaiting task to give up.
        """
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        waiter = (loop, wake)
        self._async_waiters.add(waiter)
        try:
            while True:
                wake.clear()
                if self._visible >= position or self._closed:
                    return self._visible >= position
                await wake.wait()
        finally:
            self._async_waiters.discard(waiter)

    async def subscribe(
        self,
        *,
        from_position: int = 1,
        event_types: Iterable[str | type[Event]] | None = None,
        batch_size: int = READ_BATCH,
    ) -> AsyncIterator[RecordedEvent]:
        """Every event from `from_position` on, in position order: the past first, then live.

        No event is skipped or repeated while others keep appending: it reads in
        position ranges up to what is visible, then waits for the next append.
        The iteration ends when the store closes.

        In a coroutine::

            async for recorded in store.subscribe(event_types=[Deposited]):
                print(recorded.position, recorded.event)
        """
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        waiter = (loop, wake)
        self._async_waiters.add(waiter)
        types = type_names(event_types)
        next_position = max(1, from_position)
        try:
            while not self._closed:
                wake.clear()
                visible = self._visible
                if visible >= next_position:
                    upto = min(visible, next_position + batch_size - 1)
                    for recorded in self.read_all(from_position=next_position, to_position=upto, event_types=types):
                        yield recorded
                    next_position = upto + 1
                    continue
                await wake.wait()
        finally:
            self._async_waiters.discard(waiter)

    # -- flushing and compaction ----------------------------------------------------

    def flush(self) -> None:
        """Write the hot tier to a Parquet file (or an in-memory segment) and retire its WAL.

        Appends continue meanwhile; readers see every event throughout.
        """
        self._flush(only_if_full=False)

    def _flush(self, *, only_if_full: bool) -> None:
        with self._flush_lock:
            pending = self._flush_holding_lock(only_if_full=only_if_full)
        if pending:
            self._maybe_compact()

    def _flush_holding_lock(self, *, only_if_full: bool) -> bool:
        """The flush itself, for a caller holding ``_flush_lock``; True when files were written."""
        with self._lock:
            self._check_writable()
            # Two appenders may both fill the buffer: the second finds it flushed already.
            wanted = len(self._buffer) >= self.flush_every if only_if_full else len(self._buffer) > 0
            if wanted:
                # Rotated before the buffer is frozen: if the log fails here, nothing changed.
                closed = self._wal.rotate() if self._wal is not None else 0
                buffer = self._buffer
                self._buffer = HotBuffer(buffer.first_position + len(buffer))
                self._frozen.append(buffer)
                if self._wal is not None:
                    self._log_segment = closed + 1
                    # Made now, so that the catalog may say it must exist (a full disk: at the next append).
                    self._log_required = self._wal.begin_segment()
                # rotate() made everything written so far durable: show it all.
                self._show(buffer.last_position)
                self._notify()
                self._retire_after = closed
            pending = list(self._frozen)
        for buffer in pending:
            self._flush_buffer(buffer)
        if pending and self._wal is not None:
            # Readers must find the events in the files before the log segments go.
            self._publish()
            self._wal.retire(self._retire_after)
        self._empty_trash()
        return bool(pending)

    def _flush_buffer(self, buffer: HotBuffer) -> None:
        classes = self.registry.classes()
        table = sort_for_segment(buffer.to_arrow(len(buffer), classes, make_decoder(self.registry)))
        segment = self._write_segment(table, buffer.first_position, buffer.last_position)
        with self._lock:
            self._segments.append(segment)
            self._frozen.remove(buffer)

    def compact(self, *, max_rows: int = 2_000_000, min_files: int = 2) -> int:
        """Merge runs of adjacent segments smaller than `max_rows` into one; returns merges done.

        A run of at least `min_files` segments whose rows add up to at most `max_rows`
        becomes one file sorted by stream, so a stream's events sit together again.
        Costs a read and a rewrite of the merged files. Readers in this process are
        never interrupted; read-only processes reload the manifest if a file vanishes.
        """
        if max_rows < 1 or min_files < 2:
            raise InvalidInputError("compact needs max_rows >= 1 and min_files >= 2")
        self._check_writable()
        return self._merge_runs(lambda rows: full_merge(rows, max_rows=max_rows, min_files=min_files))

    def _maybe_compact(self) -> None:
        # Size-tiered (store/compaction.py): files of similar size merge, so an event is
        # rewritten about once per tier and a stream is read from a few files per tier.
        try:
            self._merge_runs(lambda rows: tiered_merge(rows, max_rows=self._compact_rows))
        except StoreError as exc:
            warnings.warn(f"compaction failed, will retry: {exc}", RuntimeWarning, stacklevel=3)

    def _merge_runs(self, choose: Callable[[list[int]], range | None]) -> int:
        """Merge the run of segments `choose` picks from their row counts, until it picks
        none; returns the merges done."""
        merges = 0
        with self._flush_lock:
            while (run := choose([s.rows for s in self._segments])) is not None:
                self._check_writable()
                self._merge(self._segments[run.start : run.stop])
                merges += 1
        return merges

    def _merge(self, group: list[Segment]) -> None:
        table = sort_for_segment(unify([s.read_table() for s in group]))
        merged = self._write_segment(table, group[0].first_position, group[-1].last_position, replaced=group)
        with self._lock:
            start = self._segments.index(group[0])
            self._segments[start : start + len(group)] = [merged]
        # The merged-away files stay until readers have a manifest without them (if it cannot
        # be written, they are left behind: no longer in the catalog, covered by the new file).
        self._publish()
        # Not deleted yet: a SQL relation made a moment ago may still read them, and so may
        # readers in other processes (they pin what they read: see store/pins.py).
        # (Open ParquetFile handles keep working after the unlink anyway.)
        now = self.clock.monotonic()
        self._trash.extend((now, s.path) for s in group if isinstance(s, FileSegment))

    def _empty_trash(self, *, everything: bool = False) -> None:
        cutoff = self.clock.monotonic() - _TRASH_SECONDS
        keep = []
        for when, path in self._trash:
            if not ((everything or when <= cutoff) and remove_unless_pinned(path)):
                keep.append((when, path))
        self._trash = keep

    # -- SQL and the past ------------------------------------------------------------

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> SqlRelation:
        """A DuckDB relation over the views ``events`` and one per event type (flushed or not).

        The relation runs when read: ``.df()``, ``.arrow()``, ``.fetchall()``, ``.show()``.
        What the SQL may do is in the README ("What SQL may do"): it reads everything,
        and never changes the store's own tables and views.

        Raises:
            SqlError: the query does not parse, bind or run, or is refused (also when
                it fails at fetch time); also a ``duckdb.Error``.

        >>> store.sql("SELECT count(*) FROM events").fetchall()
        [(3,)]
        """
        with self._sql_lock:
            views = self._prepare_views(self._snapshot(), position_limit=None, occurred_limit=None, query=query)
            return self._run_user_sql(views, query, params)

    def _run_user_sql(
        self, views: SqlViews, query: str, params: Sequence[Any] | dict[str, Any] | None
    ) -> SqlRelation:
        """Check `query` (sqlguard), then run it on `views`' connection."""
        check_query(query, restricted=not self.allow_external, protected=lambda: self._store_names(views))
        files = [s.path for s in self._segments if isinstance(s, FileSegment)]
        return run_sql(views, query, params, files)

    def _store_names(self, views: SqlViews) -> dict[str, str]:
        """The names user SQL may not write, create or drop (lower case) -> what holds them."""
        names = fixed_names()
        names.update((v.lower(), f"the typed view of event type {t!r}") for t, v in views.view_names.items())
        names.update((v.name.lower(), f"live view {v.name!r}") for v in self._live_views().list())
        with contextlib.suppress(duckdb.Error):  # no projection has been defined yet
            for projection, tables in views.con.execute("SELECT name, tables FROM main.sql_projections").fetchall():
                names.update((str(t).lower(), f"a table of projection {projection!r}") for t in tables)
        return names

    def _prepare_views(
        self, snap: StoreState, *, position_limit: int | None, occurred_limit: datetime | None,
        views: SqlViews | None = None, query: str | None = None,
    ) -> SqlViews:
        classes = self.registry.classes()
        files, tables, hot = self._arrow_sources(snap, classes)
        if views is None:
            if self._views is None:
                self._views = SqlViews(self._user_connection())
            views = self._views
        views.update(
            Sources(
                files=tuple(f.path for f in files),
                schemas=tuple(f.schema() for f in files),
                tables=tables,
                hot=hot,
                position_limit=position_limit,
                occurred_limit=occurred_limit,
            ),
            classes,
            query=query,
        )
        self._live_views().install(views)
        return views

    def _projection_views(self, views: SqlViews, *, after: int = 0, query: str | None = None) -> int:
        """Point `views` (a projection's own connection) at the visible events in the files and
        buffers that hold positions after `after`; returns the newest visible position.

        Projections narrow these to one batch by position (``new_events``); leaving
        out the files wholly at or below `after` spares a live batch their footers.
        `query`: the SQL about to run, so that only the empty views it names are made.
        """
        snap = self._snapshot()
        if after > 0:
            segments = tuple(s for s in snap.segments if s.last_position > after)
            buffers = tuple(b for b in snap.buffers[:-1] if b.last_position > after) + snap.buffers[-1:]
            snap = StoreState(segments, buffers, snap.visible)
        with self._sql_lock:
            self._prepare_views(snap, position_limit=None, occurred_limit=None, views=views, query=query)
        return snap.visible

    # -- live SQL views (eventador/projections/views.py) ------------------------------

    def create_view(self, name: str, sql: str, *, replace: bool = False) -> LiveView:
        """Make a live SQL view `name` over ``events`` and the typed views; returns it.

        It is kept with the store (present again after reopening, also for read-only
        openers and ``eventador sql``) and always current: a view, not a copy.

        Raises:
            ProjectionNameError: `name` is not an identifier, or names an existing view,
                table or event type (``replace=True`` changes an existing live view).
            ProjectionError: the SQL is not one SELECT or does not run (DuckDB's message
                quoted); nothing is stored.
            ReadOnlyError: the store is read-only.

        >>> store.create_view("big_deposits", "SELECT * FROM Deposited WHERE amount > 1000")
        LiveView(name='big_deposits', ...)
        """
        return self._live_views().create(name, sql, replace=replace)

    def views(self) -> list[LiveView]:
        """The store's live SQL views (name, sql, created_at), oldest first."""
        self._check_open()
        return self._live_views().list()

    def drop_view(self, name: str) -> None:
        """Remove live view `name`. Raises InvalidInputError when there is none."""
        self._live_views().drop(name)

    def _live_views(self) -> LiveViews:
        if self._live is None:
            from eventador.projections.views import LiveViews  # the projections import the store

            self._live = LiveViews(self)
        return self._live

    def _new_connection(self) -> duckdb.DuckDBPyConnection:
        """A connection to the store's DuckDB database (the catalog), or a private one when read-only."""
        if self._catalog is not None:
            return self._catalog.cursor()
        return duckdb.connect()

    def _user_connection(self) -> duckdb.DuckDBPyConnection:
        """The connection ``sql`` runs on: the store's database, or for a read-only store a
        private in-memory one that (without `allow_external`) opens no file outside the store."""
        con = self._new_connection()
        if not self.allow_external:
            restrict(con, None if self.path is None else self._data_dir)
        return con

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection to the store's own database, for one thread.

        It holds the read models (projection tables) and queues, and lasts as long
        as the store; close it when done. Read-only stores get a private in-memory one.
        Unlike ``sql``, nothing checks what it runs: it is for code that maintains the
        store's tables (projections, queues), not for ad-hoc queries.
        """
        self._check_open()
        return self._new_connection()

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
        snap = self._snapshot()
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
        snap = self._snapshot()
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
            "streams": len(self._heads),
            "events": snap.visible,
            "event_types": types,
            "files": len(files),
            "hot_events": sum(visible_rows(b, snap) for b in snap.buffers),
            "bytes": size,
            "views": [view.name for view in self.views()],
            "fsyncs": self._wal.syncs if self._wal is not None else 0,
            "log_bytes": self._wal.logged_bytes if self._wal is not None else 0,
        }

    def __repr__(self) -> str:
        where = str(self.path) if self.path else "memory"
        state = "closed" if self._closed else f"{self._visible} events in {len(self._heads)} streams"
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
        with self._lock:
            self._closed = True
        self._notify()
        released = self._release()
        if failed is not None:
            raise failed
        if released is not None:
            raise released

    def _release(self) -> StoreError | None:
        """Let go of everything the store holds, each part even if another fails; returns
        the first failure, as a StoreError."""
        first: StoreError | None = None
        for what, release in self._holdings():
            try:
                release()
            except Exception as exc:
                if first is None:
                    first = exc if isinstance(exc, StoreError) else store_os_error(exc, self.path or "", what)
        return first

    def _holdings(self) -> list[tuple[str, Callable[[], None]]]:
        """(what it is, how to let go of it) for each thing the store holds, in release order;
        each is forgotten as it is listed, so that nothing is released twice."""
        held: list[tuple[str, Callable[[], None]]] = []
        catalog, self._catalog = self._catalog, None
        views, self._views = self._views, None
        if views is not None:
            held.append(("close the SQL views of", views.close))
        wal, self._wal = self._wal, None
        if wal is not None:
            held.append(("close the write-ahead log of", lambda: self._close_log(wal, catalog)))
        pins, self._pins = self._pins, None
        if pins is not None:
            held.append(("let go of the files read from", pins.release))
        held.append(("delete merged-away files of", lambda: self._empty_trash(everything=True)))
        held.extend(("close a file of", s.close) for s in self._segments if isinstance(s, FileSegment))
        if catalog is not None:
            held.append(("close the catalog of", catalog.close))
        lockfile, self._lockfile = self._lockfile, None
        if lockfile is not None:
            held.append(("release the lock of", lockfile.release))
        return held

    def _close_log(self, wal: WriteAheadLog, catalog: Catalog | None) -> None:
        """Close the log. Its last segment, if unused (everything is flushed), is removed once
        the catalog says it need not exist: else opening again would take it for a lost one."""
        unused = catalog is not None and not len(self._buffer) and not self._frozen
        if unused and catalog is not None and (catalog.log_segment, catalog.log_required) == (self._log_segment, True):
            try:
                catalog.record_log_segment(self._log_segment, required=False)
            except StoreError:
                unused = False
        wal.close(remove_unused=unused)

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._closed and self._lockfile is not None:
                self._release()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise ReadOnlyError(f"{self.path} was opened read_only")
