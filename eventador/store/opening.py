"""Opening a store and letting go of it.

A writer takes the directory's lock, finishes what a crash left half published, checks
every file the catalog names, replays the log after them into the hot tier (a torn
final frame, never acknowledged, is set aside) and starts a new log segment. A data
file the catalog does not name is deleted only when the named files or the log hold its
events too; else the catalog is older than the files, and opening fails
(``store/repair.py`` rebuilds it from them). A reader loads what the manifest names
instead, again on ``refresh``. Closing lets go of each thing held, even when another fails.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cbor2

from eventador.errors import CorruptionError, InvalidInputError, StoreError, store_os_error
from eventador.store.appends import decode_columns, frame_records
from eventador.store.buffer import HotBuffer
from eventador.store.catalog import (
    CATALOG,
    Catalog,
    ColdSummary,
    FileEntry,
    FileFacts,
    holds_store,
    read_facts,
    read_manifest,
)
from eventador.store.flushing import TRASH_SECONDS, Flushing
from eventador.store.lock import DirectoryLock
from eventador.store.pins import Pins, remove_unless_pinned
from eventador.store.segments import EvictedFile, FileSegment, Segment
from eventador.store.snapshots import SnapshotStore
from eventador.store.wal import WriteAheadLog, fsync_directory, scan_segment

__all__ = ["Opening"]

_READER_PATIENCE = 0.5  # seconds a reader looks again at a state that does not add up before it says so


@dataclass(frozen=True, slots=True)
class _Recovered:
    """What opening (or a reader's refresh) found: the files, and the log's events after them."""

    segments: list[Segment]
    heads: dict[str, int]
    buffer: HotBuffer
    visible: int
    last_recorded_us: int
    checkpoints: dict[str, int]


class Opening(Flushing):
    """Opening (writer or reader), recovery, ``refresh`` and letting go; see ``EventStore``."""

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
            self._summarize_uploaded(catalog)
            existing = WriteAheadLog.segments(self._wal_dir)
            first = max(existing[-1][0] if existing else 0, catalog.log_segment) + 1
            self._wal = WriteAheadLog(
                self._wal_dir, durability=self.durability, first_segment=first, flush_every=self.flush_every
            )
            self._wal.on_durable = self._durable
            self._log_segment = first
            self._log_required = self._wal.begin_segment()  # a full disk: made at the first append
            # And the manifest, for readers; and the checkpoints the log holds, so that the
            # catalog holds every one before a flush retires the segments they are in.
            catalog.record_log_segment(first, required=self._log_required, checkpoints=recovered.checkpoints)
            self._flushed_checkpoints = dict(recovered.checkpoints)
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
            recovered = self._recover(
                entries, catalog.store_id, required, catalog.checkpoints(), catalog.uploaded(), repair=True
            )
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

    def _summarize_uploaded(self, catalog: Catalog) -> None:
        """Record what opening needs of uploaded files that have it not recorded (an older version
        uploaded them): this opening fetched them, the next ones will not. And leave each
        uploaded file's summary in ``summaries/`` for readers (deleting those of no copy)."""
        files = {s.path.name: s for s in self._segments if isinstance(s, FileSegment)}
        missing = catalog.unsummarized()
        if missing:
            catalog.record_summaries({name: self._summary(files[name]) for name in missing if name in files})
        folder = self._summaries_dir
        left = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        uploaded = catalog.uploaded()
        for name in sorted(uploaded - left):
            if name in files:
                self._leave_summary(name, self._summary(files[name]))
        for name in left - uploaded - set(catalog.discarded(float("inf"))):  # (a reader may use those meanwhile)
            (folder / name).unlink(missing_ok=True)

    def _discard(self, paths: list[Path]) -> None:
        """Delete data files whose events other files or the log hold; those a reader still
        reads wait in the trash."""
        stale = self.clock.monotonic() - TRASH_SECONDS
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
                    list(manifest.files), manifest.store_id, manifest.log_segment if manifest.log_required else 0,
                    dict(manifest.checkpoints), manifest.uploaded, repair=False,
                )
                break
            except (FileNotFoundError, CorruptionError) as exc:
                self._pins.keep_only(s.path for s in self._segments if isinstance(s, FileSegment))
                now = time.monotonic()
                fresh = read_manifest(self.path)
                if (fresh == manifest and now - unchanged_since > _READER_PATIENCE) or now - started > 60:
                    if isinstance(exc, FileNotFoundError):
                        missing = Path(exc.filename or self.path)
                        if missing.name in manifest.uploaded:
                            raise CorruptionError(
                                str(missing), "evicted to the cold tier of the store's lake: open the store "
                                "read-only with its writer's lake= to fetch it (or ev.open_lake for the lake's table)",
                            ) from exc
                        raise CorruptionError(str(missing), "missing") from exc
                    raise
                if fresh != manifest:
                    manifest, unchanged_since = fresh, now
                else:
                    time.sleep(0.002)
        self._install(recovered)
        self._pins.keep_only(s.path for s in recovered.segments if isinstance(s, FileSegment))
        cache = self._cache_dir
        if cache is not None and self._local_bytes is not None:  # its own fetched files, within the bound
            fetched = [s for s in recovered.segments if isinstance(s, FileSegment) and s.path.parent == cache]
            self._evict_down_to(fetched, self._local_bytes)

    def refresh(self) -> None:
        """Read-only stores: load what the writer has added since opening (or the last refresh)."""
        if not self.read_only:
            return
        self._check_open()
        with self._lock:
            self._load_read_only()

    def _recover(
        self, entries: list[FileEntry], store_id: str | None, log_segment: int, checkpoints: dict[str, int],
        uploaded: set[str] | frozenset[str], *, repair: bool,
    ) -> _Recovered:
        """The state the files `entries` and the log after them hold; `log_segment`: the segment
        the log must reach (0: none); `checkpoints`: those the catalog (or manifest) recorded,
        which the log's move forward; `uploaded`: the files with copies in the cold tier. Files
        already open are used again (a reader's refresh).

        Raises:
            CorruptionError: a file or log segment is missing, damaged, or disagrees with the catalog.
            FileNotFoundError: (read-only) a file vanished: the writer merged it away meanwhile.
        """
        segments = self._open_files(entries, store_id, uploaded)
        heads: dict[str, int] = {}
        last_recorded = 0
        for segment in segments:
            heads.update(self._file_heads(segment))
            last_recorded = max(last_recorded, segment.max_recorded_us())
            if self._local_bytes is not None and isinstance(segment, FileSegment) and segment.fetched:
                segment.evict(remove_unless_pinned)  # a bounded local tier: read again on demand
        end = entries[-1].last_position if entries else 0
        log = self._check_log(log_segment)
        buffer = HotBuffer(end + 1)
        checkpoints = dict(checkpoints)
        # recorded_at never goes back, also across a reopen with everything flushed.
        visible, logged = self._replay_wal(buffer, heads, checkpoints, log, repair=repair)
        last_recorded = max(last_recorded, logged)
        return _Recovered(segments, heads, buffer, visible, last_recorded, checkpoints)

    def _install(self, recovered: _Recovered) -> None:
        self._segments = recovered.segments
        self._heads = recovered.heads
        self._buffer = recovered.buffer
        self._frozen = []
        self._visible = recovered.visible
        self._last_recorded_us = recovered.last_recorded_us
        self._checkpoints = recovered.checkpoints
        names = {s.path.name for s in recovered.segments if isinstance(s, FileSegment)}
        self._heads_of = {name: heads for name, heads in self._heads_of.items() if name in names}

    def _open_files(
        self, entries: list[FileEntry], store_id: str | None, uploaded: set[str] | frozenset[str]
    ) -> list[Segment]:
        """The data files `entries` name, checked against them (and pinned, by a reader: one
        evicted meanwhile is fetched into the reader's own folder, never into ``data/``)."""
        opened = {s.path.name: s for s in self._segments if isinstance(s, FileSegment)}
        fetch = self._fetcher()
        summaries = self._catalog.summaries() if self._catalog is not None and fetch is not None else {}
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
            summary = summaries.get(e.name)
            fetch_into = fetch
            if self._pins is not None:
                path, summary = self._pin_or_place(path, uploaded=e.name in uploaded)
                fetch_into = fetch if path.parent == self._cache_dir else None  # never into the writer's data/
            if fetch_into is not None and summary is not None and not path.exists():
                # Evicted: opened from its catalog entry and summary, fetched when a read needs it.
                segment = FileSegment(
                    path, e.first_position, e.last_position, e.rows, fetch_into,
                    evicted=EvictedFile(e.bytes, store_id, summary.max_recorded_us),
                )
                self._heads_of[e.name] = summary.heads
                segments.append(segment)
                continue
            if self._pins is None and not path.exists() and e.name in uploaded and fetch is None:
                raise CorruptionError(
                    str(path), "evicted: its copy is in the cold tier of the store's lake; open the store with the "
                    "same lake= to fetch it (never `eventador repair`, which would drop its events)"
                )
            if self._pins is None and not path.exists() and e.name not in uploaded:
                raise CorruptionError(
                    str(path), f"listed in the catalog but missing; `eventador repair {self.path}` "
                    "names in the catalog what the remaining files hold"
                )
            segment = FileSegment(path, e.first_position, e.last_position, e.rows, fetch_into)
            segment.uploaded = e.name in uploaded
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

    def _pin_or_place(self, path: Path, *, uploaded: bool) -> tuple[Path, ColdSummary | None]:
        """A reader's hold on data file `path`: pinned where it is (it stays), or, evicted, the
        place in the reader's own folder to fetch it into, with the writer's summary of it if
        there is one (None: opening fetches it).

        Raises:
            FileNotFoundError: it is gone and has no copy (merged away since the manifest).
        """
        assert self._pins is not None
        try:
            self._pins.pin(path)
            return path, None
        except FileNotFoundError:
            if self._cache_dir is None or not uploaded:
                raise
        place = self._cache_dir / path.name
        return place, None if place.exists() else ColdSummary.read(self._summaries_dir / path.name)

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
        self, buffer: HotBuffer, heads: dict[str, int], checkpoints: dict[str, int], segments: list[tuple[int, Path]],
        *, repair: bool,
    ) -> tuple[int, int]:
        """Add the log's events after the files to `buffer` (and `heads`), and move `checkpoints`
        forward to the log's; returns the last position and its recorded time (µs)."""
        next_position = buffer.first_position
        last_recorded = 0
        for number, (segment_no, path) in enumerate(segments, 1):
            # A reader's last segment may be the one a live writer appends to: a bad
            # final frame there may be in flight (the writer's own open judges it).
            settled = repair or number < len(segments)
            for frame in scan_segment(path, repair=repair, settled=settled):
                try:
                    records, checkpoint = frame_records(cbor2.loads(frame.body))
                    appends = [(r[:6], decode_columns(r[6], log_format=frame.log_format)) for r in records]
                except (ValueError, TypeError, cbor2.CBORDecodeError) as exc:
                    raise CorruptionError(str(path), f"undecodable frame: {exc}", frame.offset) from exc
                if checkpoint is not None:  # a frame is whole: its checkpoint comes with its events
                    name, position = checkpoint
                    checkpoints[name] = max(position, checkpoints.get(name, 0))
                for (first, stream_id, first_version, recorded_us, stream_type, metadata), columns in appends:
                    types, ids, occurred, payloads, versions = columns
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
                                str(missing), f"missing: log segments {before} and {segment_no} are there, and "
                                f"positions {next_position}-{first - 1} are in no data file and no log segment",
                            )
                        raise CorruptionError(
                            str(path),
                            f"frame for position {first} (stream {stream_id!r} v{first_version}) does not follow "
                            f"position {next_position - 1}",
                            frame.offset,
                        )
                    buffer.add(
                        stream_id, first_version, recorded_us, stream_type, metadata, types, ids, occurred, payloads,
                        None, versions,
                    )
                    heads[stream_id] = first_version + n - 1
                    next_position += n
                    last_recorded = recorded_us
        return next_position - 1, last_recorded

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
        cache, self._cache_dir = self._cache_dir, None
        if cache is not None:
            held.append(("remove the fetched files of", lambda: shutil.rmtree(cache, ignore_errors=True)))
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
        unused = unused and self._checkpoints == self._flushed_checkpoints  # else it holds a checkpoint's frame
        if unused and catalog is not None and (catalog.log_segment, catalog.log_required) == (self._log_segment, True):
            try:
                catalog.record_log_segment(self._log_segment, required=False)
            except StoreError:
                unused = False
        wal.close(remove_unused=unused)

