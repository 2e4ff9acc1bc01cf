"""The write-ahead log: every append is one CRC-framed CBOR record, fsynced before it is acknowledged.

A segment file starts with an 8-byte magic; then frames of

    mark (2 bytes) | length (u32 LE) | crc32 of body (u32 LE) | crc32 of the 10 bytes before (u32 LE) | body (CBOR)

and then zeros: segments are preallocated, because overwriting blocks that
already exist lets ``fdatasync`` skip the file-system journal (about 1.5x the
commit rate of appending to a growing file). Not with ``posix_fallocate``: its
blocks are unwritten until a commit reaches them, and that commit waits for the
journal (appends of 8 KiB: 1.8x slower, and more bytes reach the disk in the
journal than the zeros cost; see docs/architecture.md). A segment is sized for what the
flush policy can need before the next flush: the events still to come until
``flush_every`` at the bytes per event of the frames seen so far, plus a
sixteenth (a segment that fills first is followed by one sized for the rest; one
twice its size when the flush is overdue). So the zeros written are about what
the frames overwrite, never 64 MiB for ten events. A segment is made at opening
and at each flush (``begin_segment``), or at the first write if the disk was full then.

One append is one frame, so a crash leaves at most a torn tail: bytes after
the last good frame from which no valid frame can be read. A disk writes whole
sectors, and the file was zeros before, so a torn frame ends in zeros that reach
back to a sector boundary (or the file ends inside it). Recovery moves such a
tail to a file of its own (it was never acknowledged) and goes on. Any other bad
frame is damage, not a crash: a complete final frame whose checksum fails, or a
bad frame followed by any valid frame. Opening then fails, naming the file and
offset, and nothing is cut (``move_tail_aside`` is the repair). The header has
its own checksum and every frame starts with a mark, so a damaged length field
cannot hide the frames after it.

Group commit ("fsync" durability): appenders queue their frames in memory under
the store's lock. Then one of them, the leader, writes everything queued with
one ``pwrite`` and one ``fdatasync``; the others wait, each on a lock of its own.
When the round is durable the leader releases the appenders it covered and hands
the lead to one appender whose frame came too late for it, which starts the next
round at once: one thread wakes between two fsyncs, not a crowd racing for a
shared lock. Eight writers share a few fsyncs instead of queueing for eight.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from eventador.errors import CorruptionError, StoreError, store_os_error

__all__ = ["Frame", "WriteAheadLog", "frame", "move_tail_aside", "scan_segment", "used_bytes"]

MAGIC = b"EVWAL\x00\x03\n"  # format 3: an append's columns as five values (see appends.py)
_OLDER_MAGICS = {b"EVWAL\x00\x02\n": 2}  # still read: a log written by an older version
_MARK = b"\xe7\x5a"
_HEADER = struct.Struct("<2sIII")  # mark, length, body crc, header crc
# Zeros are written a page at a time: written in bigger pieces, the page cache holds the segment
# in large folios, and each fdatasync writes a whole folio back (Linux 6.18, ext4: 48 KiB per
# single-event append instead of 4 KiB).
_ZEROS = bytes(4096)
_MIN_SEGMENT_BYTES = 16 << 10
_MAX_SEGMENT_BYTES = 64 << 20
_FIRST_SEGMENT_BYTES = 1 << 20  # at most, before any frame was seen
_GUESSED_EVENT_BYTES = 64  # per event, before any frame was seen: a small event (a bigger one rolls sooner)
_REOPEN = "reopen the store (close it and open it again): every acknowledged event is kept"
SECTOR = 512  # the smallest unit a disk writes whole


@dataclass(frozen=True, slots=True)
class Frame:
    offset: int
    body: bytes
    log_format: int = 3


def fsync_directory(path: Path) -> None:
    # A rename or a new file is durable only once its directory is fsynced.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def scan_segment(path: Path, *, repair: bool, settled: bool = True) -> Iterator[Frame]:
    """Yield the frames of one segment in order; a torn final frame ends the scan.

    With `repair`, a torn tail is moved to a file of its own (only the writer
    repairs). `settled`: no writer is adding to this segment; False for a reader
    looking at the segment a live writer appends to, where a bad final frame may
    be one still being written, and ends the scan.

    Raises:
        CorruptionError: a damaged frame (one followed by a valid frame, or a
            complete final frame whose checksum fails), or not a segment at all.
    """
    data = path.read_bytes()
    if len(data) < len(MAGIC):
        return  # created, never written: a crash right after the file appeared
    magic = data[: len(MAGIC)]
    log_format = 3 if magic == MAGIC else _OLDER_MAGICS.get(magic)
    if log_format is None:
        raise CorruptionError(str(path), "not a write-ahead log segment (bad magic)", 0)
    content_end = len(data.rstrip(b"\0"))  # past this, only preallocated zeros
    offset = len(MAGIC)
    while offset < content_end:
        body = _frame_at(data, offset)
        if body is not None:
            yield Frame(offset, body, log_format)
            offset += _HEADER.size + len(body)
            continue
        later = _next_frame(data, offset + 1, content_end)
        if later is not None:
            raise CorruptionError(str(path), f"damaged frame (the next good one is at byte {later})", offset)
        if settled and not _torn(data, offset):
            raise CorruptionError(
                str(path), "damaged frame: it is complete, but its checksum fails (not a torn write)", offset
            )
        # Nothing readable after it: the last write, cut short by a crash.
        if repair:
            move_tail_aside(path, offset)
        return


def used_bytes(path: Path) -> int:
    """The bytes a segment file holds: its size less the preallocated zeros at its end.

    Reads the file backwards, a MiB at a time, only as far as the zeros go.
    """
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - len(_ZEROS))
            f.seek(start)
            content = len(f.read(end - start).rstrip(b"\0"))
            if content:
                return start + content
            end = start
    return 0


def _torn(data: bytes, offset: int) -> bool:
    """Whether the bad frame at `offset`, the last thing in the segment, is a write cut short.

    A crash leaves a write's sectors either written or not, and the segment held
    zeros before: so a torn frame ends in zeros that begin at a sector boundary
    inside it, or the file ends before the frame does. A flipped byte leaves the
    frame complete. (A frame whose own last bytes are zeros across a sector
    boundary looks torn: its tail is moved aside, never deleted.)
    """
    if offset + _HEADER.size > len(data):
        return True  # the file ends inside the header
    mark, length, _, header_crc = _HEADER.unpack_from(data, offset)
    if mark == _MARK and zlib.crc32(data[offset : offset + 10]) == header_crc:
        end = offset + _HEADER.size + length  # the header is sound: the frame's own length
    else:
        end = offset + _HEADER.size  # only the header's extent is known
    if end > len(data):
        return True  # the file ends inside the frame
    # The frame's part of its last sector: all zeros if that sector was never written.
    # (A frame inside one sector is written whole or not at all: then it is all zeros.)
    tail = data[max((end - 1) // SECTOR * SECTOR, offset) : end]
    return not tail.strip(b"\0")


def _frame_at(data: bytes, offset: int) -> bytes | None:
    """The body of a valid frame at `offset`, or None."""
    if offset + _HEADER.size > len(data):
        return None
    mark, length, body_crc, header_crc = _HEADER.unpack_from(data, offset)
    if mark != _MARK or zlib.crc32(data[offset : offset + 10]) != header_crc:
        return None
    start = offset + _HEADER.size
    body = data[start : start + length]
    if len(body) != length or zlib.crc32(body) != body_crc:
        return None
    return body


def _next_frame(data: bytes, start: int, end: int) -> int | None:
    """The offset of the first valid frame at or after `start`, or None."""
    at = data.find(_MARK, start, end)
    while at != -1:
        if _frame_at(data, at) is not None:
            return at
        at = data.find(_MARK, at + 1, end)
    return None


def frame(body: bytes) -> bytes:
    """One frame of the log around `body`."""
    head = _MARK + struct.pack("<II", len(body), zlib.crc32(body))
    return head + struct.pack("<I", zlib.crc32(head)) + body


def move_tail_aside(path: Path, offset: int) -> Path:
    """Move the bytes of segment `path` from `offset` on into a file of their own; returns it.

    The new file, ``<segment>.tail-<offset>`` beside the segment, holds them up to
    the preallocated zeros; then the segment is cut at `offset`. Both are fsynced
    first, so a crash midway leaves the bytes in one place or both, never in none.
    Recovery calls it for a torn tail; ``eventador repair`` for a damaged one.
    """
    data = path.read_bytes()
    aside = path.with_name(f"{path.name}.tail-{offset}")
    with open(aside, "wb") as f:
        f.write(data[offset:].rstrip(b"\0"))
        f.flush()
        os.fsync(f.fileno())
    fsync_directory(path.parent)
    with open(path, "r+b") as f:
        f.truncate(offset)
        f.flush()
        os.fsync(f.fileno())
    return aside


class WriteAheadLog:
    """Writes frames to numbered segment files in `directory` and makes them durable.

    `durability`: "fsync" (``sync`` returns once the frame is on disk), "batch"
    (written at once, fsynced by a background thread every few milliseconds),
    "none" (written at once; the OS writes back when it likes). `flush_every`: the
    events the store logs between two ``rotate`` calls (it sizes the segments).

    Any failed write or fsync fails the log: every later call raises StoreError
    (DiskFullError when the disk filled) until the store is opened again. A closed
    descriptor is never used: ``_fd`` is -1 from the moment it is closed.
    """

    def __init__(self, directory: Path, *, durability: str, first_segment: int, flush_every: int = 100_000) -> None:
        self.directory = directory
        self.durability = durability
        self._leader = threading.Lock()  # held while writing the queue and fsyncing
        self._mutex = threading.Lock()  # guards the queue, the waiters and who leads
        self._leading: _Waiter | None = None  # the appender holding the lead, if any
        self._waiters: list[_Waiter] = []
        self._file_lock = threading.Lock()  # guards the fd, its offset and capacity
        self._queue: list[bytes] = []
        self._queued = 0  # log sequence number (bytes) of the last queued frame
        self._queued_upto = 0  # the caller's position of the last queued frame
        self._written = 0
        self._synced = 0
        # Called by each round's leader with the last position it made durable, before
        # anyone it covered returns (the store makes those events visible).
        self.on_durable: Callable[[int], None] | None = None
        self.syncs = 0  # fdatasync calls made: how well appends share them
        self._failed: BaseException | None = None
        self._segment_no = first_segment - 1  # the last segment opened; the next is made at the first write
        self._fd = -1
        self._capacity = self._offset = len(MAGIC)
        self.flush_every = flush_every
        self._planned = _bounded(min(_FIRST_SEGMENT_BYTES, flush_every * _GUESSED_EVENT_BYTES))
        self._period_bytes = self._period_events = 0  # frames of known size logged since the last rotate
        self._counted_upto = 0  # the last position whose frame was written
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        if durability == "batch":
            self._syncer = threading.Thread(target=self._sync_periodically, name="eventador-wal-sync", daemon=True)
            self._syncer.start()

    @staticmethod
    def segment_path(directory: Path, number: int) -> Path:
        return directory / f"{number:010d}.wal"

    @staticmethod
    def segments(directory: Path) -> list[tuple[int, Path]]:
        """The segment files in `directory`, oldest first."""
        found = []
        for p in directory.glob("*.wal"):
            try:
                found.append((int(p.stem), p))
            except ValueError:
                continue
        return sorted(found)

    @property
    def segment_no(self) -> int:
        return self._segment_no

    @property
    def logged_bytes(self) -> int:
        """Bytes of frames logged since the log was opened (the events as the log holds them)."""
        return self._queued

    @property
    def failed(self) -> bool:
        """True once a write or fsync failed: the log refuses everything until reopened."""
        return self._failed is not None

    def _open_segment(self, number: int, capacity: int) -> int:
        """A new segment file of `capacity` bytes (magic, then zeros), durable; its descriptor.

        Raises:
            StoreError: DiskFullError when it does not fit; no file is left behind.
        """
        path = self.segment_path(self.directory, number)
        fd = -1
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, MAGIC)
            remaining = capacity - len(MAGIC)
            while remaining > 0:
                remaining -= os.write(fd, _ZEROS[: min(remaining, len(_ZEROS))])
            if self.durability != "none":
                os.fsync(fd)
                fsync_directory(self.directory)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
                path.unlink(missing_ok=True)
            raise store_os_error(exc, path, "create the write-ahead log segment", _REOPEN) from exc
        return fd

    # -- writing ----------------------------------------------------------------------

    def add(self, body: bytes, upto: int = 0) -> int:
        """Log one frame (the caller holds the store lock, so frames keep position order).

        Returns its log sequence number, for ``sync``. With "fsync" durability the
        frame is queued for the next leader, and `upto` (the frame's last position)
        is passed to ``on_durable`` once it is on disk; otherwise it is written now.

        Raises:
            StoreError: the log failed; with "batch"/"none" nothing was logged.
        """
        self._raise_if_failed()
        framed = frame(body)
        if self.durability == "fsync":
            with self._mutex:
                self._queue.append(framed)
                self._queued += len(framed)
                self._queued_upto = max(self._queued_upto, upto)
                return self._queued
        with self._file_lock:
            try:
                self._write(framed, upto)
            except BaseException as exc:
                self._fail(exc)
                raise
        self._queued = self._written
        return self._written

    def _write(self, data: bytes, upto: int) -> None:
        """pwrite `data` (frames whose last position is `upto`) at the end of the segment,
        starting a new one when there is none or it is full (holds _file_lock).

        Raises:
            StoreError: nothing of `data` is logged (the caller fails the log).
        """
        if self._fd < 0 or self._offset + len(data) > self._capacity:
            if self._fd >= 0:  # full before the flush: the period needs more than planned
                self._planned = self._plan(rest_of_period=True)
                self._close_segment()
            self._start_segment(len(data))
        try:
            written = os.pwrite(self._fd, data, self._offset)
            if written != len(data):
                raise OSError(f"short write: {written} of {len(data)} bytes")
        except OSError as exc:
            path = self.segment_path(self.directory, self._segment_no)
            raise store_os_error(exc, path, "write to the write-ahead log segment", _REOPEN) from exc
        self._offset += len(data)
        self._written += len(data)
        # Bytes per event, for sizing segments: the events of `data` are known from the
        # position before it (not for the first write after opening).
        if upto and self._counted_upto:
            self._period_bytes += len(data)
            self._period_events += upto - self._counted_upto
        self._counted_upto = max(self._counted_upto, upto)

    def _start_segment(self, need: int) -> None:
        """Open the next segment, sized as planned (or for a frame of `need` bytes, if larger)."""
        capacity = max(self._planned, need + len(MAGIC))
        self._fd = self._open_segment(self._segment_no + 1, capacity)
        self._segment_no += 1
        self._capacity, self._offset = capacity, len(MAGIC)

    def _close_segment(self) -> None:
        """fdatasync and close the current segment (holds _file_lock). The descriptor is
        forgotten before it is closed: nothing can write through a number the OS may reuse."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            if self.durability != "none":
                os.fdatasync(fd)
        except OSError as exc:
            path = self.segment_path(self.directory, self._segment_no)
            raise store_os_error(exc, path, "fsync the write-ahead log segment", _REOPEN) from exc
        finally:
            os.close(fd)

    def sync(self, lsn: int) -> None:
        """Return once the frame with log sequence number `lsn` is on disk.

        With no round in progress the caller leads one; otherwise it waits until a
        leader has made its frame durable, or hands it the lead of the next round.

        Raises:
            StoreError: writing or fsync failed. The log then refuses all further
                writes: after a failed fsync the OS may have dropped the data, and
                a retried fsync can report success falsely.
        """
        if self._synced >= lsn:
            return
        me = _Waiter(lsn)
        try:
            with self._mutex:
                if self._synced >= lsn:
                    return
                self._raise_if_failed()
                if self._leading is None:
                    self._leading, me.lead = me, True
                else:
                    self._waiters.append(me)
            if not me.lead:
                me.lock.acquire()  # released by a leader
                if not me.lead:
                    if self._synced < lsn:  # released because the round failed
                        self._raise_if_failed()
                    return
            self._lead()
        except BaseException:
            # Interrupted (Ctrl-C) at any point: give up the place in the queue, or the
            # lead if it is still this appender's, so later appends neither wait for it
            # nor hang. Once a round has begun, the round hands the lead on itself.
            self._abandon(me)
            raise

    def _lead(self) -> None:
        """One round: write everything queued, fsync, release those it covered, pass the lead on."""
        interrupted = None
        try:
            with self._leader:
                with self._file_lock:
                    with self._mutex:
                        queue, self._queue = self._queue, []
                        upto = self._queued_upto
                    if queue:
                        self._write(b"".join(queue), upto)
                    target, fd = self._written, self._fd
                if fd >= 0:
                    interrupted = _fdatasync_through_interrupts(fd)
                    self.syncs += 1
        except BaseException as exc:
            # Failed, or interrupted at a point that leaves it unknown whether the queue
            # reached the disk: either way the log refuses all further writes.
            self._fail(exc)
            if isinstance(exc, OSError):
                path = self.segment_path(self.directory, self._segment_no)
                raise store_os_error(exc, path, "fsync the write-ahead log segment", _REOPEN) from exc
            raise
        try:
            if self.on_durable is not None and upto:
                self.on_durable(upto)  # before anyone covered returns: what they wrote is visible
        finally:
            with self._mutex:
                self._synced = target
                done = [w for w in self._waiters if w.lsn <= target]
                self._waiters = [w for w in self._waiters if w.lsn > target]
                successor = self._next_leader()
            for w in done:
                w.lock.release()
            if successor is not None:
                successor.lock.release()
        if interrupted is not None:
            raise interrupted  # the round is done: the Ctrl-C reaches this appender now

    def _next_leader(self) -> _Waiter | None:
        """The waiter that leads the next round, marked so (the caller holds the mutex and
        releases its lock); None, and nobody leads, when no one waits."""
        if not self._waiters:
            self._leading = None
            return None
        successor = self._leading = self._waiters.pop(0)
        successor.lead = True
        return successor

    def _abandon(self, waiter: _Waiter) -> None:
        """An appender stops (interrupted): out of the queue, or the lead it holds goes on
        to the next waiter."""
        with self._mutex:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                return
            successor = self._next_leader() if self._leading is waiter else None
        if successor is not None:
            successor.lock.release()

    def _fail(self, exc: BaseException) -> None:
        """The log is failed: every waiter is released to find that out."""
        self._failed = exc
        with self._mutex:
            waiters, self._waiters = self._waiters, []
            self._leading = None
        for w in waiters:
            w.lock.release()

    def sync_all(self) -> None:
        if self.durability == "fsync":
            self.sync(self._queued)
        elif self.durability == "batch":
            self._sync_written()

    def rotate(self) -> int:
        """Make everything logged durable and close the segment; returns its number (the
        next write starts a new one). Plans the next segment's size for one flush period.

        The caller holds the store lock, so no frame arrives meanwhile.

        Raises:
            StoreError: the log failed (now or earlier).
        """
        self.sync_all()
        with self._leader, self._file_lock:
            self._raise_if_failed()
            closed = self._segment_no
            try:
                self._close_segment()
            except BaseException as exc:
                self._fail(exc)
                raise
            self._synced = self._written
            self._planned = self._plan(rest_of_period=False)
            self._period_bytes = self._period_events = 0
            return closed

    def begin_segment(self) -> bool:
        """Make the next segment now, unless one is open; True when one is open after.

        The store records in its catalog that this segment must exist, so that opening
        notices if it is lost. When it cannot be made (a full disk), nothing fails yet:
        the next write tries again, and fails the log if it cannot.
        """
        with self._leader, self._file_lock:
            if self._fd >= 0:
                return True
            if self._failed is not None:
                return False
            try:
                self._start_segment(0)
            except StoreError:
                return False
            return True

    def _plan(self, *, rest_of_period: bool) -> int:
        """The size of the next segment: the events the flush policy lets come before the
        next flush (all `flush_every`, or those left of this period), at the bytes per
        event seen in this period's frames, plus a sixteenth."""
        if not self._period_events:
            return min(_MAX_SEGMENT_BYTES, self._capacity * 2) if rest_of_period else self._planned
        events = self.flush_every - self._period_events if rest_of_period else self.flush_every
        if events <= 0:  # the flush is overdue (failing, or appends outran it)
            return min(_MAX_SEGMENT_BYTES, self._capacity * 2)
        return _bounded(events * self._period_bytes * 17 // (16 * self._period_events))

    def retire(self, up_to_segment: int) -> None:
        """Delete segments numbered up to `up_to_segment`: their events are in Parquet files now.

        Raises:
            StoreError: a segment could not be deleted (it is replayed and skipped on open).
        """
        try:
            for number, path in self.segments(self.directory):
                if number <= up_to_segment:
                    path.unlink(missing_ok=True)
            if self.durability != "none":
                fsync_directory(self.directory)
        except OSError as exc:
            raise store_os_error(exc, exc.filename or self.directory, "delete the flushed log segment") from exc

    def close(self, *, remove_unused: bool = True) -> None:
        """Make everything durable and close; an unused last segment is removed (with
        `remove_unused`). The file is closed even when the log failed (now or earlier).

        Raises:
            StoreError: the last frames could not be made durable.
        """
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        try:
            if self._failed is None:
                self.sync_all()
        finally:
            with self._leader, self._file_lock:
                fd, self._fd = self._fd, -1
                if fd >= 0:
                    os.close(fd)
                    if remove_unused and self._offset == len(MAGIC):
                        self.segment_path(self.directory, self._segment_no).unlink(missing_ok=True)

    def _sync_written(self) -> None:
        # Holds the file lock throughout: a concurrent add() may roll to a new segment.
        with self._leader, self._file_lock:
            if self._written <= self._synced or self._failed is not None or self._fd < 0:
                return
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                path = self.segment_path(self.directory, self._segment_no)
                self._failed = store_os_error(exc, path, "fsync the write-ahead log segment", _REOPEN)
                return
            self.syncs += 1
            self._synced = self._written

    def _sync_periodically(self) -> None:
        while not self._stop.wait(0.005):
            self._sync_written()

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            cause = str(self._failed) or type(self._failed).__name__  # a Ctrl-C has no message
            raise StoreError(
                f"the write-ahead log in {self.directory} failed earlier ({cause}); "
                "it takes no more writes: reopen the store (close it and open it again)"
            )


def _bounded(size: int) -> int:
    """A segment size: `size` in whole pages, at least 16 KiB and at most 64 MiB."""
    return min(_MAX_SEGMENT_BYTES, max(_MIN_SEGMENT_BYTES, -(-size // 4096) * 4096))


def _fdatasync_through_interrupts(fd: int) -> KeyboardInterrupt | None:
    """fdatasync, finished even when Ctrl-C lands meanwhile (the leader spends most of a
    round here). An abandoned fsync would leave it unknown whether the round reached the
    disk, and the log would have to refuse all writes; the interrupt is returned instead,
    for the leader to raise once its round is done."""
    interrupted = None
    while True:
        try:
            os.fdatasync(fd)
            return interrupted
        except KeyboardInterrupt as exc:
            interrupted = exc


class _Waiter:
    """An appender in ``sync``: its frame's sequence number, and a lock it blocks on while
    it waits for a round (it is also the token of the lead while it holds it)."""

    __slots__ = ("lead", "lock", "lsn")

    def __init__(self, lsn: int) -> None:
        self.lsn = lsn
        self.lead = False  # True: released to lead the next round, not because it is durable
        self.lock = threading.Lock()
        self.lock.acquire()
