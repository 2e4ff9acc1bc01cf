"""Flushing: the hot tier frozen, written to a Parquet file, named in the catalog; the
log segments it covers retired; small files merged (compaction); merged-away files
deleted once no reader needs them. Also the bulk path of imports (whole new streams
straight into one file) and the one way a new file enters the store (``_write_segment``).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from eventador.codec import make_decoder
from eventador.errors import InvalidInputError, StoreError, store_os_error
from eventador.store.buffer import HotBuffer
from eventador.store.bulk import NewStreams
from eventador.store.catalog import Catalog, ColdSummary, FileEntry, FileFacts
from eventador.store.checksums import remember
from eventador.store.compaction import full_merge, tiered_merge
from eventador.store.core import StoreCore
from eventador.store.lake_schema import without_lake_columns
from eventador.store.pins import remove_unless_pinned
from eventador.store.records import datetime_to_micros
from eventador.store.segments import FileSegment, MemorySegment, Segment, sort_for_segment, unify, write_segment
from eventador.store.wal import fsync_directory

if TYPE_CHECKING:
    from eventador.store.coldtier import ColdTier

__all__ = ["COPY_GRACE_SECONDS", "TRASH_SECONDS", "Flushing"]

TRASH_SECONDS = 60.0  # merged-away files outlive the merge so long (and while a reader pins them)
COPY_GRACE_SECONDS = 3600.0  # and their copies in the cold tier so long: reads begun before may still fetch them


class Flushing(StoreCore):
    """Flushing, compaction and bulk writes of a store; see ``EventStore``."""

    def flush(self) -> None:
        """Write the hot tier to a Parquet file (or an in-memory segment) and retire its WAL.

        Appends continue meanwhile; readers see every event throughout.
        """
        self._flush(only_if_full=False)

    def _flush(self, *, only_if_full: bool) -> None:
        with self._flush_lock:
            pending = self._flush_holding_lock(only_if_full=only_if_full)
        if pending:
            self._flushed()
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
                # rotate() made everything written so far durable: show it all. The checkpoints
                # too: the catalog records them before the log segments holding them are retired.
                self._flushed_checkpoints = dict(self._checkpoints)
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
        if self.lake is not None:  # the file is written once, for the store and for the lake's table
            table = self.lake.layout(table)
        segment = self._write_segment(table, buffer.first_position, buffer.last_position)
        with self._lock:
            self._segments.append(segment)
            self._frozen.remove(buffer)
        if self.lake is not None:  # its publish takes the rows from memory, not from the file
            self.lake.offer(segment.first_position, segment.last_position, table)

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
        if merges and self.lake is not None:
            self.lake.compact()
        return merges

    def _flushed(self) -> None:
        # New data files: the lake's publisher (store/lake.py) takes them in its own thread.
        if self.lake is not None:
            self.lake.flushed()

    def _merge(self, group: list[Segment]) -> None:
        # Without the lake's columns: the table takes a merged file's events converted (the lake merges its own).
        table = sort_for_segment(unify([without_lake_columns(s.read_table()) for s in group]))
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
        cutoff = self.clock.monotonic() - TRASH_SECONDS
        keep = []
        for when, path in self._trash:
            if not ((everything or when <= cutoff) and remove_unless_pinned(path)):
                keep.append((when, path))
        self._trash = keep

    def append_new_streams(self, streams: NewStreams) -> int:
        """Write whole new streams as one new segment, atomically; returns the events written.

        The bulk path of imports (``import_dataframe``; part of the store's internal API).
        The hot tier is flushed first so the new file follows the last one; then, with
        appends held back, the file is written and recorded in the catalog in one
        transaction: after a crash it is there whole or not at all. The file is the
        durable record, so the WAL is not involved.

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
        self._flushed()
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
                [entry], [e.name for e in old], log_segment=self._log_segment, log_required=self._log_required,
                checkpoints=self._flushed_checkpoints, now=self.clock.now().timestamp(),
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
        return FileSegment(final, first, last, table.num_rows, self._fetcher())

    def offload_files(
        self, published: int, local_bytes: int | None, twin: Callable[[str], str] | None = None
    ) -> None:
        """Upload to the cold tier the data files whose events are all at or below position
        `published` (the lake holds them), then delete local copies of uploaded files, least
        recently read first, until the local ones take at most `local_bytes` (None: neither,
        every file stays local); and delete the copies of files merged away
        ``COPY_GRACE_SECONDS`` ago (store/coldtier.py). `twin`: where the lake's table holds a
        file's bytes if it took the file as it is, by the file's name (``ColdTier.upload``).

        A file goes only after the catalog (and manifest) durably record its copy, and never
        while a reader pins it or a SQL relation may still read it. Part of the store's
        internal API: the lake's publisher calls it after each publish.

        Raises:
            LakeError: an upload or a deletion failed (nothing uploaded since is deleted; the next call goes on).
            StoreError: the catalog could not record an upload.
        """
        catalog, cold = self._catalog, self._cold
        if catalog is None or cold is None:
            return
        if local_bytes is not None:
            self._offload(catalog, cold, published, local_bytes, twin)
        due = catalog.discarded(self.clock.now().timestamp() - COPY_GRACE_SECONDS)
        for name in due:
            cold.delete(name)
            self._drop_summary(name)
        if due:
            catalog.forget_discarded(due)

    def _offload(
        self, catalog: Catalog, cold: ColdTier, published: int, local_bytes: int, twin: Callable[[str], str] | None
    ) -> None:
        uploaded = catalog.uploaded()
        files = [s for s in self.state().segments if isinstance(s, FileSegment)]
        for segment in files:
            name = segment.path.name
            if name in uploaded or segment.last_position > published:
                continue
            try:
                cold.upload(segment.path, twin(name) if twin is not None else None)
            except FileNotFoundError:
                continue  # merged away meanwhile: no longer the catalog's
            summary = self._summary(segment)
            self._leave_summary(name, summary)  # before the manifest says "uploaded": readers look for it then
            if catalog.mark_uploaded(name, summary):  # durable (a DuckDB commit and the manifest) before any delete
                uploaded.add(name)
                segment.uploaded = True
            else:  # merged away meanwhile: no reader ever knew of this copy
                cold.delete(name)
                self._drop_summary(name)
        self._evict_down_to(files, local_bytes)

    @staticmethod
    def _evict_down_to(files: list[FileSegment], local_bytes: int) -> None:
        """Delete local copies of the uploaded `files`, least recently read first, until the local
        ones take at most `local_bytes` (never one a reader pins or a SQL relation may read)."""
        local = [s for s in files if s.path.exists()]
        total = sum(s.bytes for s in local)
        for segment in sorted(local, key=lambda s: s.last_used):
            if total <= local_bytes:
                break
            if segment.uploaded and segment.evict(remove_unless_pinned):
                total -= segment.bytes

    def _file_heads(self, segment: Segment, *, keep: bool = True) -> dict[str, int]:
        """Each stream's newest version in one file (read once per file, unless not `keep`:
        files never change). Opening keeps them for a reader's refresh; it also drops those of
        files gone (``_install``)."""
        name = segment.path.name if isinstance(segment, FileSegment) else None
        heads = self._heads_of.get(name) if name is not None else None
        if heads is None:
            table = segment.heads()
            ids, versions = table.column("stream_id").to_pylist(), table.column("version_max").to_pylist()
            heads = dict(zip(ids, versions, strict=True))
            if name is not None and keep:
                self._heads_of[name] = heads
        return heads

    def _summary(self, segment: FileSegment) -> ColdSummary:
        """What opening needs of `segment` once it may be evicted (read from its local file)."""
        return ColdSummary(self._file_heads(segment, keep=False), segment.max_recorded_us())

    def _leave_summary(self, name: str, summary: ColdSummary) -> None:
        """Leave `summary` of uploaded file `name` in ``summaries/``, where read-only openers
        look (they cannot open the catalog); one that cannot be written costs them a fetch."""
        with contextlib.suppress(OSError):
            summary.write(self._summaries_dir / name)

    def _drop_summary(self, name: str) -> None:
        (self._summaries_dir / name).unlink(missing_ok=True)

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
