"""Snapshot storage: ``store.snapshots``. The policy (when to take one) lives in eventador.aggregates.snapshots.

A snapshot is a cache of a stream's folded state at a version: CBOR bytes with
the state's type name and a schema fingerprint, so a reader can tell a stale
one from a usable one. On disk they live in the catalog (a DuckDB table); the
newest per stream is also kept in memory, so recovering an aggregate costs no
query when its snapshot was taken or read before.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from eventador.errors import InvalidInputError, ReadOnlyError
from eventador.store.cache import holding, needs_disk

if TYPE_CHECKING:  # the catalog imports Snapshot from here
    from eventador.store.catalog import Catalog

__all__ = ["Snapshot", "SnapshotStore"]

_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A stored snapshot of one stream at `version`."""

    stream_id: str
    version: int
    state_type: str
    fingerprint: str
    data: bytes
    compressed: bool
    taken_at: datetime

    def __repr__(self) -> str:
        return (
            f"Snapshot({self.stream_id!r}, version={self.version}, {self.state_type}, "
            f"{len(self.data)} B{' zstd' if self.compressed else ''})"
        )


class SnapshotStore:
    """Save, find and prune snapshots of one store's streams.

    Thread-safe. With no catalog (the in-memory store) snapshots live in memory.
    """

    def __init__(self, catalog: Catalog | None, *, read_only: bool = False) -> None:
        self._catalog = catalog
        self._read_only = read_only
        self._lock = threading.Lock()
        self._memory: dict[str, list[Snapshot]] = {}  # without a catalog: all of them, oldest first
        self._latest: OrderedDict[str, Snapshot | None] = OrderedDict()  # newest per stream, LRU

    def save(self, snapshot: Snapshot) -> None:
        """Store `snapshot` (replacing one at the same version)."""
        if self._read_only:
            raise ReadOnlyError("snapshots cannot be saved in a read-only store")
        if snapshot.version < 1:
            raise InvalidInputError(f"a snapshot needs version >= 1, got {snapshot.version}")
        with self._lock:
            if self._catalog is None:
                kept = [s for s in self._memory.get(snapshot.stream_id, []) if s.version != snapshot.version]
                kept.append(snapshot)
                kept.sort(key=lambda s: s.version)
                self._memory[snapshot.stream_id] = kept
            else:
                self._catalog.save_snapshot(snapshot)
            newest = self._latest.get(snapshot.stream_id)
            if newest is None or newest.version <= snapshot.version:
                self._remember(snapshot.stream_id, snapshot)

    def latest(self, stream_id: str, *, max_version: int | None = None) -> Snapshot | None:
        """The newest snapshot of the stream (at or below `max_version`), or None."""
        with holding(self._lock):
            if max_version is None and stream_id in self._latest:
                self._latest.move_to_end(stream_id)
                return self._latest[stream_id]
            if self._catalog is None:
                candidates = [
                    s for s in self._memory.get(stream_id, []) if max_version is None or s.version <= max_version
                ]
                found = candidates[-1] if candidates else None
            else:
                needs_disk()
                found = self._catalog.latest_snapshot(stream_id, max_version)
            if max_version is None:
                self._remember(stream_id, found)
            return found

    def newest(self, heads: dict[str, int]) -> dict[str, Snapshot]:
        """For many streams at once: the newest snapshot at or below the version given for
        each (streams without one are left out). One query, however many streams."""
        with self._lock:
            if self._catalog is not None:
                return {s.stream_id: s for s in self._catalog.newest_snapshots(heads)}
            found: dict[str, Snapshot] = {}
            for stream_id, head in heads.items():
                below = [s for s in self._memory.get(stream_id, []) if s.version <= head]
                if below:
                    found[stream_id] = below[-1]
            return found

    def list(self, stream_id: str) -> list[Snapshot]:
        """Every stored snapshot of the stream, oldest first."""
        with holding(self._lock):
            if self._catalog is None:
                return list(self._memory.get(stream_id, []))
            needs_disk()
            return self._catalog.list_snapshots(stream_id)

    def prune(self, stream_id: str, *, keep: int) -> int:
        """Delete all but the newest `keep` snapshots of the stream; returns how many went."""
        if keep < 1:
            raise InvalidInputError(f"keep must be at least 1, got {keep}")
        with self._lock:
            if self._catalog is None:
                existing = self._memory.get(stream_id, [])
                removed = max(0, len(existing) - keep)
                self._memory[stream_id] = existing[removed:]
                return removed
            return self._catalog.prune_snapshots(stream_id, keep)

    def delete(self, stream_id: str) -> None:
        """Forget every snapshot of the stream (the next recovery replays all events)."""
        with self._lock:
            self._memory.pop(stream_id, None)
            self._latest.pop(stream_id, None)
            if self._catalog is not None:
                self._catalog.delete_snapshots(stream_id)

    def _remember(self, stream_id: str, snapshot: Snapshot | None) -> None:
        self._latest[stream_id] = snapshot
        self._latest.move_to_end(stream_id)
        while len(self._latest) > _CACHE_SIZE:
            self._latest.popitem(last=False)
