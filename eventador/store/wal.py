"""The write-ahead log: every append is one CRC-framed CBOR record, fsynced before it is acknowledged.

A segment file starts with an 8-byte magic; then frames of

    length (u32 LE) | crc32 of body (u32 LE) | body (CBOR)

One append is one frame, written with one ``write`` call, so a crash leaves at
most a torn final frame: recovery drops it (it was never acknowledged). A bad
frame with valid data after it is corruption, not a crash, and opening fails.

Group commit: appenders write their frames under the store's lock, then call
``sync(lsn)`` outside it. The first one in fsyncs everything written so far;
those that queued behind it find their bytes already covered and return.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from eventador.errors import CorruptionError, StoreError

__all__ = ["Frame", "WriteAheadLog", "scan_segment"]

MAGIC = b"EVWAL\x00\x01\n"
_HEADER = struct.Struct("<II")
_MAX_FRAME = 1 << 30


@dataclass(frozen=True, slots=True)
class Frame:
    offset: int
    body: bytes


def fsync_directory(path: Path) -> None:
    # A rename or a new file is durable only once its directory is fsynced.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def scan_segment(path: Path, *, repair: bool) -> Iterator[Frame]:
    """Yield the frames of one segment in order.

    A torn final frame ends the scan (and is cut off when `repair`).

    Raises:
        CorruptionError: a damaged frame that is followed by more data, or a bad header.
    """
    data = path.read_bytes()
    if len(data) < len(MAGIC):
        if repair:
            _truncate(path, 0, write_magic=True)
        return
    if data[: len(MAGIC)] != MAGIC:
        raise CorruptionError(str(path), "not a write-ahead log segment (bad magic)", 0)
    offset = len(MAGIC)
    end = len(data)
    while offset < end:
        if end - offset < _HEADER.size:
            reason = None  # a header cut short by a crash
        else:
            length, crc = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            stop = start + length
            if stop > end:
                reason = None  # the frame runs past the end: a write cut short
            elif length == 0:
                reason = None if not any(data[offset:]) else "empty frame followed by data"
            elif zlib.crc32(data[start:stop]) != crc:
                reason = None if stop == end else "frame checksum mismatch"
            else:
                yield Frame(offset, data[start:stop])
                offset = stop
                continue
        if reason is not None:
            raise CorruptionError(str(path), reason, offset)
        if repair:
            _truncate(path, offset)
        return


def _truncate(path: Path, offset: int, *, write_magic: bool = False) -> None:
    with open(path, "r+b") as f:
        f.truncate(offset)
        if write_magic:
            f.seek(0)
            f.write(MAGIC)
        f.flush()
        os.fsync(f.fileno())


class WriteAheadLog:
    """Appends frames to numbered segment files in `directory` and makes them durable.

    `durability`: "fsync" (``sync`` waits for the disk), "batch" (a background
    thread fsyncs every few milliseconds), "none" (the OS writes back when it likes).
    """

    def __init__(self, directory: Path, *, durability: str, first_segment: int) -> None:
        self.directory = directory
        self.durability = durability
        self._sync_lock = threading.Lock()
        self._written = 0  # bytes written, across segments (a log sequence number)
        self._synced = 0
        self._failed: BaseException | None = None
        self._segment_no = first_segment
        self._size = len(MAGIC)  # bytes in the current segment
        self._fd = self._open_segment(first_segment)
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

    def _open_segment(self, number: int) -> int:
        path = self.segment_path(self.directory, number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o644)
        os.write(fd, MAGIC)
        if self.durability != "none":
            os.fsync(fd)
            fsync_directory(self.directory)
        return fd

    def write(self, body: bytes) -> int:
        """Append one frame (caller holds the store lock); returns its log sequence number.

        Raises:
            StoreError: the write failed; the segment is cut back so no partial frame remains.
        """
        self._raise_if_failed()
        frame = _HEADER.pack(len(body), zlib.crc32(body)) + body
        try:
            written = os.write(self._fd, frame)
            if written != len(frame):
                raise OSError(f"short write: {written} of {len(frame)} bytes")
        except OSError as exc:
            # Cut the segment back so no partial frame sits before later ones.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError as cut_exc:
                self._failed = cut_exc
            raise StoreError(f"could not write to the write-ahead log: {exc}") from exc
        self._size += len(frame)
        self._written += len(frame)
        return self._written

    def sync(self, lsn: int) -> None:
        """Return once everything up to `lsn` is on disk, sharing fsyncs with concurrent callers.

        Raises:
            StoreError: fsync failed. The store cannot know what reached the disk and
                refuses all further writes (retrying fsync can report success falsely).
        """
        if self._synced >= lsn:
            return
        with self._sync_lock:
            if self._synced >= lsn:
                return
            self._raise_if_failed()
            target = self._written
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self._failed = exc
                raise StoreError(f"fsync of the write-ahead log failed: {exc}; reopen the store") from exc
            self._synced = target

    def sync_all(self) -> None:
        if self.durability != "none":
            self.sync(self._written)

    def rotate(self) -> int:
        """Make the current segment durable and start the next; returns the closed segment's number.

        Caller holds the store lock, so no frame is written meanwhile.
        """
        with self._sync_lock:
            self._raise_if_failed()
            if self.durability != "none":
                os.fdatasync(self._fd)
            self._synced = self._written
            os.close(self._fd)
            closed = self._segment_no
            self._segment_no += 1
            self._fd = self._open_segment(self._segment_no)
            self._size = len(MAGIC)
            return closed

    def retire(self, up_to_segment: int) -> None:
        """Delete segments numbered up to `up_to_segment`: their events are in Parquet files now."""
        for number, path in self.segments(self.directory):
            if number <= up_to_segment:
                path.unlink(missing_ok=True)
        if self.durability != "none":
            fsync_directory(self.directory)

    def close(self) -> None:
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        with self._sync_lock:
            if self._failed is None and self.durability != "none":
                os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _sync_periodically(self) -> None:
        while not self._stop.wait(0.005):
            if self._written > self._synced:
                try:
                    self.sync(self._written)
                except StoreError:
                    return

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise StoreError(f"the write-ahead log failed earlier ({self._failed}); reopen the store")
