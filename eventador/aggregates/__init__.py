"""Aggregates and persistent actors: state folded from a stream, snapshots, the repository.

``persistent`` holds ``PersistentActor`` and ``AggregateRoot``; ``snapshots`` the snapshot
policy and state encoding; ``repository`` loads, caches and saves aggregates by id.
"""

from eventador.aggregates.persistent import AggregateRoot, PersistentActor
from eventador.aggregates.repository import Repository
from eventador.aggregates.snapshots import SnapshotConfig, SnapshotWarning

__all__ = ["AggregateRoot", "PersistentActor", "Repository", "SnapshotConfig", "SnapshotWarning"]
