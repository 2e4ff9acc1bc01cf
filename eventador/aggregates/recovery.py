"""Recovering a stream's state: the newest usable snapshot, then the later events.

What persistent actors, aggregate roots and the ``Repository`` share: ``load_stream``
finds the newest snapshot that decodes (``usable_snapshot``) and reads the events after
it in one read; ``warn_unusable`` reports the snapshots it had to skip; ``stamp`` sets
the two framework fields of an aggregate's state; ``as_events`` checks what a handler
returned.
"""

from __future__ import annotations

import dataclasses
import warnings
from datetime import datetime
from typing import Any, TypeVar

from eventador.aggregates.snapshots import SnapshotWarning, decode_snapshot
from eventador.errors import InvalidInputError, SerializationError
from eventador.messages import Event, State
from eventador.store import EventStore
from eventador.store.reads import Replay
from eventador.store.snapshots import Snapshot, SnapshotStore

__all__ = [
    "NO_EVENTS",
    "SNAPSHOT_LOOKUP_MIN",
    "Loaded",
    "as_events",
    "load_stream",
    "stamp",
    "usable_snapshot",
    "warn_unusable",
]

S = TypeVar("S", bound=State)

SNAPSHOT_LOOKUP_MIN = 32
"""Below this many events, replaying is cheaper than looking a snapshot up (a query)."""
NO_EVENTS = Replay([], 0, 0)
"""The replay of a stream that has no events (yet)."""


def as_events(produced: Any, where: str) -> list[Event]:
    """`produced` (None, one event or several) as a list of events.

    Raises:
        InvalidInputError: something in it is not an ``ev.Event`` (`where` names the hook).
    """
    if produced is None:
        return []
    batch = [produced] if isinstance(produced, Event) else list(produced)
    for event in batch:
        if not isinstance(event, Event):
            raise InvalidInputError(f"{where} must return ev.Event instances, got {event!r}")
    return batch


# -- loading a stream: newest usable snapshot, then the later events in one read ---------


@dataclasses.dataclass(slots=True)
class Loaded:
    """A stream as ``load_stream`` found it: the snapshot used (None: none) and its
    state, the events after it, and why newer snapshots were skipped."""

    snapshot: Snapshot | None
    state: Any
    replay: Replay
    problems: list[str]


def usable_snapshot(
    snapshots: SnapshotStore,
    stream_id: str,
    head: int,
    expected_type: type | None,
    snapshot_version: int,
    *,
    newest: bool,
) -> tuple[Snapshot | None, Any, list[str]]:
    """The newest snapshot at or below `head` that decodes, its state, and why others did not.

    `newest`: ask for the stream's newest snapshot first (kept in memory by the store),
    else straight for the newest at or below `head`.
    """
    problems: list[str] = []
    candidate = snapshots.latest(stream_id) if newest else snapshots.latest(stream_id, max_version=head)
    if candidate is not None and candidate.version > head:
        candidate = snapshots.latest(stream_id, max_version=head)
    older: list[Snapshot] | None = None
    while candidate is not None:
        try:
            state = decode_snapshot(candidate, expected_type=expected_type, snapshot_version=snapshot_version)
        except SerializationError as exc:
            problems.append(str(exc))
        else:
            return candidate, state, problems
        if older is None:
            older = [s for s in snapshots.list(stream_id) if s.version <= head]
        older = [s for s in older if s.version < candidate.version]
        candidate = older[-1] if older else None
    return None, None, problems


def load_stream(
    store: EventStore, stream_id: str, *, expected_type: type | None, snapshot_version: int, use_snapshots: bool
) -> Loaded:
    """Returns `stream_id` loaded: the newest usable snapshot (looked up only from
    ``SNAPSHOT_LOOKUP_MIN`` events on, and only with `use_snapshots`), then the later
    events in one read."""
    head = store.stream_version(stream_id)
    if head == 0:
        return Loaded(None, None, NO_EVENTS, [])
    snapshot: Snapshot | None = None
    state: Any = None
    problems: list[str] = []
    if use_snapshots and head >= SNAPSHOT_LOOKUP_MIN:
        snapshot, state, problems = usable_snapshot(
            store.snapshots, stream_id, head, expected_type, snapshot_version, newest=True
        )
    replay = store.replay(stream_id, from_version=snapshot.version + 1 if snapshot is not None else 1)
    return Loaded(snapshot, state, replay, problems)


def warn_unusable(stream_id: str, problems: list[str], stacklevel: int = 3) -> None:
    """Warns (one ``SnapshotWarning``) that `stream_id` is replayed because of `problems`; nothing if none."""
    if problems:
        more = f" (and {len(problems) - 1} older)" if len(problems) > 1 else ""
        warnings.warn(
            SnapshotWarning(f"{problems[0]}{more}; recovering {stream_id!r} by replaying its events instead"),
            stacklevel=stacklevel,
        )


def stamp(before_last: S, after: S, version: int, when: datetime) -> S:
    """`after` with version = `version` and, unless the last apply_event set it, last_modified = `when`."""
    changes: dict[str, Any] = {}
    if after.version != version:
        changes["version"] = version
    if after.last_modified == before_last.last_modified and after.last_modified != when:
        changes["last_modified"] = when
    if not changes:
        return after
    fields = getattr(after, "__dict__", None)
    if fields is None:  # a slotted State: the ordinary way
        return after.copy_with(**changes)
    # Once per command: skip __init__ (the codec builds decoded messages the same way);
    # only the two framework fields change, so nothing needs validating again.
    stamped: S = object.__new__(type(after))
    object.__setattr__(stamped, "__dict__", {**fields, **changes})
    return stamped

