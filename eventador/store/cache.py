"""A bounded cache of decoded Parquet column chunks, shared by every store in the process.

Reading one stream decodes whole row groups; recovering the same aggregate again
(after passivation, or in a notebook loop) would decode them again. Files are
immutable, so a decoded chunk stays right for as long as its file is open: this is
the store's buffer pool, like SQLite's page cache. Only reads of a few row groups
(streams) go through it; whole-file scans would only push everything else out.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterator

import pyarrow as pa

from eventador.errors import InvalidInputError

__all__ = ["ColumnCache", "NotInMemory", "column_cache", "holding", "memory_only", "needs_disk", "set_cache_size"]

# 256 MiB: random pages over a 1M-event store (a follower resuming anywhere, select_notifications)
# touch every row group of every file, about 150 MB decoded; 64 MiB missed more than half.
DEFAULT_BYTES = 256 * 1024 * 1024

Key = tuple[int, int, str]  # (file token, row group, column)


class ColumnCache:
    """Least-recently-used decoded column chunks, bounded by their bytes in memory. Thread-safe."""

    def __init__(self, max_bytes: int = DEFAULT_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._chunks: OrderedDict[Key, pa.ChunkedArray] = OrderedDict()
        self._bytes = 0
        self._tokens = itertools.count(1)
        self.hits = 0
        self.misses = 0

    def token(self) -> int:
        """A key prefix for a newly opened file (never reused, unlike paths)."""
        return next(self._tokens)

    def get(self, token: int, group: int, columns: list[str]) -> dict[str, pa.ChunkedArray]:
        """The cached chunks among `columns` of one row group (the rest are missing from the result)."""
        found: dict[str, pa.ChunkedArray] = {}
        with self._lock:
            for name in columns:
                chunk = self._chunks.get((token, group, name))
                if chunk is not None:
                    self._chunks.move_to_end((token, group, name))
                    found[name] = chunk
            self.hits += len(found)
            self.misses += len(columns) - len(found)
        return found

    def put(self, token: int, group: int, table: pa.Table) -> None:
        """Remember every column of `table`, one row group's decoded columns."""
        if self.max_bytes <= 0:
            return
        with self._lock:
            for name, chunk in zip(table.column_names, table.columns, strict=True):
                key = (token, group, name)
                old = self._chunks.pop(key, None)
                if old is not None:
                    self._bytes -= old.nbytes
                self._chunks[key] = chunk
                self._bytes += chunk.nbytes
            self._evict()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._chunks:
            _, evicted = self._chunks.popitem(last=False)
            self._bytes -= evicted.nbytes

    def forget(self, token: int) -> None:
        """Drop every chunk of one file (it was closed or replaced)."""
        with self._lock:
            for key in [k for k in self._chunks if k[0] == token]:
                self._bytes -= self._chunks.pop(key).nbytes

    def clear(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __repr__(self) -> str:
        return (
            f"ColumnCache({self._bytes / 2**20:.1f} of {self.max_bytes / 2**20:.0f} MiB, "
            f"{self.hits:,} hits, {self.misses:,} misses)"
        )


column_cache = ColumnCache()


def set_cache_size(max_bytes: int) -> None:
    """Returns nothing; bounds the process-wide cache of decoded row groups
    (default 256 MiB; 0 turns it off)."""
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
        raise InvalidInputError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
    with column_cache._lock:
        column_cache.max_bytes = max_bytes
        column_cache._evict()


# -- reads that must not wait for the disk ------------------------------------------------------

_memory_only: contextvars.ContextVar[bool] = contextvars.ContextVar("eventador_memory_only", default=False)


class NotInMemory(Exception):
    """A read under ``memory_only()`` would have had to read a file or query the catalog."""


@contextlib.contextmanager
def memory_only() -> Iterator[None]:
    """Reads in this block are served from memory or raise ``NotInMemory``: an event loop
    tries a recovery inline this way and hands it to a thread only when it needs the disk."""
    token = _memory_only.set(True)
    try:
        yield
    finally:
        _memory_only.reset(token)


def needs_disk() -> None:
    """Returns nothing; raises ``NotInMemory`` inside ``memory_only()`` (called before any I/O)."""
    if _memory_only.get():
        raise NotInMemory


@contextlib.contextmanager
def holding(lock: threading.Lock) -> Iterator[None]:
    """`lock` held for the block; inside ``memory_only()``, raises ``NotInMemory`` instead of
    waiting for another thread (which may be in the middle of a file read or a catalog write)."""
    if not lock.acquire(blocking=not _memory_only.get()):
        raise NotInMemory
    try:
        yield
    finally:
        lock.release()
