"""Aggregates and persistent actors: state folded from a stream, snapshots, the repository.

``persistent`` holds ``PersistentActor``, ``root`` ``AggregateRoot``, ``recovery`` the
loading they share with the repository (newest usable snapshot, then later events);
``snapshots`` the snapshot policy and state encoding; ``repository`` loads, caches and
saves aggregates by id.
"""

from eventador.aggregates.persistent import PersistentActor
from eventador.aggregates.repository import Repository
from eventador.aggregates.root import AggregateRoot
from eventador.aggregates.snapshots import SnapshotConfig, SnapshotWarning

__all__ = ["AggregateRoot", "PersistentActor", "Repository", "SnapshotConfig", "SnapshotWarning"]
