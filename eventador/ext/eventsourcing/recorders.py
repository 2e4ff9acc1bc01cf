"""eventsourcing's recorders over an eventador store.

How an eventsourcing ``StoredEvent`` (originator id, originator version, topic, state bytes)
is kept: one eventador stream per originator (stream id ``str(originator_id)``), one
``StoredEventRecord`` event per stored event (its topic, version and state as typed
columns, so SQL sees them). The application's notification id is the event's position in
the store: global, 1-based and gap-free, as long as the store holds only this
application's events (snapshots live in the store's snapshot table, not in the log).

A stream's versions count from 1 without gaps; eventsourcing's count from wherever the
originator began (1 for aggregates, 0 in parts of its test suite). So an originator's
events must be consecutive, as aggregates make them: the stream version of eventsourcing
version ``v`` is ``v - first + 1``, ``first`` being the originator's first version (read
once per stream, then remembered). An insert that repeats a recorded version, or would
leave a gap, writes nothing and raises eventsourcing's ``IntegrityError``.

Every insert is one ``append_streams`` call: all its originators' events and its tracking
record (a checkpoint named after the upstream application) in one log frame, all or nothing,
also across a crash.
"""

from __future__ import annotations

import itertools
import operator
import threading
import weakref
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    IntegrityError,
    Notification,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)

from eventador.codec import encode_fields
from eventador.errors import CheckpointConflict, ConcurrencyError
from eventador.messages import Event
from eventador.store import EventStore, RecordedEvent
from eventador.store.appends import PreparedAppend
from eventador.store.snapshots import Snapshot

__all__ = [
    "EventadorAggregateRecorder",
    "EventadorApplicationRecorder",
    "EventadorProcessRecorder",
    "EventadorRecorder",
    "EventadorSnapshotRecorder",
    "EventadorSubscription",
    "EventadorTrackingRecorder",
    "StoredEventRecord",
]

_SELECT_BATCH = 500  # events a subscription reads at a time
_originator_id = operator.attrgetter("originator_id")
_originator_version = operator.attrgetter("originator_version")
_Records = tuple[str, list[dict[str, Any]], int]  # a stream, its records' fields, the version it must be at


class StoredEventRecord(Event, event_type="StoredEvent"):
    """One eventsourcing stored event in its originator's stream (SQL: the view ``StoredEvent``)."""

    topic: str
    originator_version: int
    state: bytes

    @staticmethod
    def _fields(stored_events: Sequence[StoredEvent]) -> list[dict[str, Any]]:
        """The fields of the records of `stored_events`, each as a record's ``__dict__``
        (``codec.encode_fields`` checks every field's type before anything is written)."""
        return [{"topic": s.topic, "originator_version": s.originator_version, "state": s.state} for s in stored_events]


class _FirstVersions:
    """Each stream's first eventsourcing version, for one store: it never changes once written,
    so every recorder of the store shares what was read. Holds the newest 100,000 (an
    originator forgotten costs one read of its first event)."""

    LIMIT = 100_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, int] = {}

    def get(self, stream_id: str) -> int | None:
        return self._known.get(stream_id)

    def update(self, firsts: dict[str, int]) -> None:
        with self._lock:
            self._known.update(firsts)
            while len(self._known) > self.LIMIT:
                del self._known[next(iter(self._known))]


_first_versions: weakref.WeakKeyDictionary[EventStore, _FirstVersions] = weakref.WeakKeyDictionary()
_first_versions_lock = threading.Lock()


class EventadorRecorder:
    """What every recorder here shares: the store, and how originator ids become stream ids.

    `originator_id_type`: ``"uuid"`` (ids read back as ``UUID``) or ``"text"`` (as ``str``).
    `factory`: the factory that made it, kept alive with the recorder (eventsourcing drops a
    view's factory once the view is made; the store must stay open while the view is used).
    """

    def __init__(self, store: EventStore, *, originator_id_type: str = "uuid", factory: object = None) -> None:
        self.store = store
        """The eventador store the recorder writes to and reads from."""
        self._factory = factory
        self._uuid_ids = originator_id_type == "uuid"
        with _first_versions_lock:
            self._firsts = _first_versions.setdefault(store, _FirstVersions())

    def _originator_id(self, stream_id: str) -> UUID | str:
        return UUID(stream_id) if self._uuid_ids else stream_id

    def _write(self, appends: list[tuple[str, list[Event], int]], tracking: Tracking | None) -> list[int]:
        """Append `appends` (a stream, its events, the version it must be at) and the tracking
        record in one frame; returns the events' positions (what a view writes with its tracking).

        Raises:
            IntegrityError: a version is taken (or would leave a gap), or the tracking record
                does not move its upstream application's position forward; nothing is written.
        """
        prepare = self.store.prepare_append
        prepared = [prepare(stream_id, events, expected_version=at) for stream_id, events, at in appends]
        return self._commit(prepared, tracking)

    def _write_records(self, appends: list[_Records], tracking: Tracking | None) -> list[int]:
        """``_write`` of stored events' records given by their fields: encoded from the
        fields, the records are never made (most of an insert's cost, on every event)."""
        store, kind, version = self.store, StoredEventRecord.event_type, StoredEventRecord.schema_version
        return self._commit(
            [
                store.prepare_encoded(stream_id, kind, version, encode_fields(StoredEventRecord, fields), at)
                for stream_id, fields, at in appends
            ],
            tracking,
        )

    def _commit(self, prepared: list[PreparedAppend], tracking: Tracking | None) -> list[int]:
        checkpoint = None if tracking is None else (tracking.application_name, tracking.notification_id)
        try:
            return self.store.commit_together(prepared, checkpoint)
        except CheckpointConflict as exc:
            raise IntegrityError(
                f"{exc.name!r} is tracked up to notification {exc.current} already: {tracking} is not above it"
            ) from exc
        except ConcurrencyError as exc:
            raise IntegrityError(_conflict_message(exc, self._firsts.get(exc.stream_id))) from exc


def _conflict_message(exc: ConcurrencyError, first: int | None) -> str:
    if first is None or not isinstance(exc.expected, int) or not isinstance(exc.actual, int):
        return f"originator {exc.stream_id}: {exc}"
    recorded = first + exc.actual - 1
    given = first + exc.expected
    if given <= recorded:
        return f"originator {exc.stream_id} has version {given} recorded already (its last is {recorded})"
    return f"originator {exc.stream_id}: version {given} would leave a gap after its last, {recorded}"


class EventadorAggregateRecorder(EventadorRecorder, AggregateRecorder):
    """Stored events in one stream per originator."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Record the events atomically (one log frame); returns None (no notification ids here).

        Raises:
            IntegrityError: a version is recorded already, repeated, or not consecutive.
        """
        self._insert(stored_events, None)
        return None

    def _insert(self, stored_events: Sequence[StoredEvent], tracking: Tracking | None) -> list[int]:
        appends, new_streams = self._plan(stored_events)
        if not appends and tracking is None:
            return []
        positions = self._write_records(appends, tracking)
        self._firsts.update(new_streams)  # only once they exist
        return positions

    def _plan(self, stored_events: Sequence[StoredEvent]) -> tuple[list[_Records], dict[str, int]]:
        """The appends for `stored_events` (a run of one originator's events each, with the
        stream version it must be at) and the first versions of streams they begin."""
        if not isinstance(stored_events, list):
            stored_events = list(stored_events)  # read more than once below
        records = StoredEventRecord._fields(stored_events)  # each one's fields
        if records and self._one_run(stored_events):  # an aggregate's events: no step per event
            stream_id = str(stored_events[0].originator_id)
            version = stored_events[0].originator_version
            first = self._first_version(stream_id)
            if first is None:
                return [(stream_id, records, 0)], {stream_id: version}
            if version < first:
                raise IntegrityError(
                    f"originator {stream_id}: version {version} comes before its first recorded one, {first}"
                )
            return [(stream_id, records, version - first)], {}
        appends: list[_Records] = []
        new_streams: dict[str, int] = {}
        last: dict[str, int] = {}  # each originator's newest version planned
        originator: object = None
        stream_id = ""
        for s, record in zip(stored_events, records, strict=True):
            if s.originator_id is not originator:  # an aggregate's events share one id: str() it once
                originator = s.originator_id
                stream_id = str(originator)
            version = s.originator_version
            if stream_id in last:
                if version != last[stream_id] + 1:
                    raise IntegrityError(
                        f"originator {stream_id}: version {version} follows {last[stream_id]} in one insert "
                        "(versions must be new and consecutive)"
                    )
                if appends[-1][0] == stream_id:
                    appends[-1][1].append(record)
                    last[stream_id] = version
                    continue
                first = new_streams[stream_id] if stream_id in new_streams else self._first_version(stream_id)
            else:
                found = self._first_version(stream_id)
                if found is None:
                    new_streams[stream_id] = found = version
                first = found
            assert first is not None
            if version < first:
                raise IntegrityError(
                    f"originator {stream_id}: version {version} comes before its first recorded one, {first}"
                )
            appends.append((stream_id, [record], version - first))
            last[stream_id] = version
        return appends, new_streams

    @staticmethod
    def _one_run(stored_events: Sequence[StoredEvent]) -> bool:
        """Whether the events are one originator's (the very same id object, as an aggregate
        gives them) with consecutive int versions: the usual insert, planned in one step."""
        originator = stored_events[0].originator_id
        versions = list(map(_originator_version, stored_events))
        start = versions[0]
        return (
            all(map(operator.is_, map(_originator_id, stored_events), itertools.repeat(originator)))
            and type(start) is int
            and versions == list(range(start, start + len(versions)))
        )

    def _first_version(self, stream_id: str) -> int | None:
        """The stream's first eventsourcing version, or None when the stream does not exist."""
        first = self._firsts.get(stream_id)
        if first is None:
            # A new originator (the usual insert) costs a lookup, not a read.
            records = self.store.read_stream(stream_id, to_version=1) if self.store.stream_version(stream_id) else []
            if not records:
                return None
            first = _record(records[0].event).originator_version
            self._firsts.update({stream_id: first})
        return first

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """The originator's events with versions above `gt` and up to `lte`, oldest first
        (newest first with `desc`), at most `limit`; reads and decodes only those."""
        stream_id = str(originator_id)
        first = self._first_version(stream_id)
        if first is None or (limit is not None and limit < 1):
            return []
        low = 1 if gt is None else max(1, gt - first + 2)
        high = None if lte is None else lte - first + 1
        if high is not None and high < low:
            return []
        records = self.store.read_stream(stream_id, from_version=low, to_version=high, reverse=desc, limit=limit)
        out = []
        for r in records:
            e = _record(r.event)
            out.append(
                StoredEvent(originator_id=originator_id, originator_version=e.originator_version, topic=e.topic,
                            state=e.state)
            )
        return out


def _record(event: Event) -> StoredEventRecord:
    if not isinstance(event, StoredEventRecord):
        raise IntegrityError(f"the store holds a {event.event_type} event where an eventsourcing event should be")
    return event


class EventadorApplicationRecorder(EventadorAggregateRecorder, ApplicationRecorder):
    """Stored events and their notifications: the store's positions."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Record the events atomically; returns their notification ids (consecutive: one frame).

        Raises:
            IntegrityError: a version is recorded already, repeated, or not consecutive.
        """
        return self._insert(stored_events, None)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """Up to `limit` notifications from id `start` (after it, unless `inclusive_of_start`)
        to `stop`, of `topics` (all when empty). Decodes only what it returns (and, with
        `topics`, the events it passes over)."""
        first = 1 if start is None else start + (0 if inclusive_of_start else 1)
        wanted = frozenset(topics)
        found: list[Notification] = []
        scanned = max(first, 1) - 1
        while len(found) < limit and (stop is None or scanned < stop):
            batch = list(
                self.store.read_all(
                    from_position=scanned + 1, to_position=stop, limit=max(limit - len(found), 100 if wanted else 1)
                )
            )
            if not batch:
                break
            scanned = batch[-1].position
            for recorded in batch:
                notification = self._notification(recorded, wanted)
                if notification is not None:
                    found.append(notification)
                    if len(found) == limit:
                        break
        return found

    def _notification(self, recorded: RecordedEvent, topics: frozenset[str]) -> Notification | None:
        """The event as a notification, or None when it is not of `topics` (if any)."""
        e = recorded.event
        if not isinstance(e, StoredEventRecord) or (topics and e.topic not in topics):
            return None
        return Notification(
            id=recorded.position, originator_id=self._originator_id(recorded.stream_id),
            originator_version=e.originator_version, topic=e.topic, state=e.state,
        )

    def max_notification_id(self) -> int | None:
        """The newest notification id (the store's last visible position), or None when empty."""
        return self.store.last_position or None

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        """The notifications after `gt`: those recorded, then each new one as it is recorded."""
        return EventadorSubscription(self, gt=gt, topics=topics)


class EventadorSubscription(Subscription[EventadorApplicationRecorder]):
    """Notifications after a point, then live: the store's thread-side subscription, woken by
    each append (no polling); ``stop()``, from any thread, ends it at once."""

    def __init__(
        self, recorder: EventadorApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._events = recorder.store.subscription(from_position=(gt or 0) + 1, batch_size=_SELECT_BATCH)
        self._wanted = frozenset(topics)

    def stop(self) -> None:
        super().stop()
        self._events.close()

    def __next__(self) -> Notification:
        if not self._has_been_stopped:
            for recorded in self._events:  # ends when stopped, or when the store closes
                notification = self._recorder._notification(recorded, self._wanted)
                if notification is not None:
                    return notification
        raise StopIteration


class EventadorTrackingRecorder(EventadorRecorder, TrackingRecorder):
    """Tracking records as the store's checkpoints: one per upstream application."""

    def insert_tracking(self, tracking: Tracking) -> None:
        """Record that `tracking`'s notification was processed (durably, as an append).

        Raises:
            IntegrityError: its id is not above the one recorded for that application.
        """
        self._write([], tracking)

    def max_tracking_id(self, application_name: str) -> int | None:
        """The newest notification id recorded for the upstream application, or None."""
        return self.store.checkpoint(application_name) or None


class EventadorProcessRecorder(EventadorTrackingRecorder, EventadorApplicationRecorder, ProcessRecorder):
    """An application recorder whose inserts carry their tracking record in the same frame:
    after a crash, a process application finds both or neither."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Record the events and ``tracking=`` (if given) atomically; returns the notification ids.

        Raises:
            IntegrityError: a version is taken, or the tracking record was recorded already.
        """
        return self._insert(stored_events, kwargs.get("tracking"))


class EventadorSnapshotRecorder(EventadorRecorder, AggregateRecorder):
    """Snapshots in the store's snapshot table: they take no positions in the log.

    `namespace` prefixes the stream ids (recorders of other purposes than "snapshots").
    A snapshot of eventsourcing version ``v`` is kept at version ``v + 1`` (the table
    counts from 1, eventsourcing may from 0).
    """

    def __init__(
        self, store: EventStore, *, originator_id_type: str = "uuid", factory: object = None, namespace: str = ""
    ) -> None:
        super().__init__(store, originator_id_type=originator_id_type, factory=factory)
        self.namespace = namespace
        self._lock = threading.Lock()

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Save the snapshots; returns None.

        Raises:
            IntegrityError: one of them is saved already (none is saved then).
        """
        snapshots = self.store.snapshots
        taken_at = self.store.clock.now()
        with self._lock:
            keys: set[tuple[str, int]] = set()
            for s in stored_events:
                key = (self.namespace + str(s.originator_id), s.originator_version + 1)
                existing = snapshots.latest(key[0], max_version=key[1])
                if key in keys or (existing is not None and existing.version == key[1]):
                    raise IntegrityError(f"a snapshot of {s.originator_id} at version {s.originator_version} exists")
                keys.add(key)
            for s in stored_events:
                snapshots.save(
                    Snapshot(
                        self.namespace + str(s.originator_id), s.originator_version + 1, s.topic, "eventsourcing",
                        s.state, False, taken_at,
                    )
                )
        return None

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """The originator's snapshots with versions above `gt` and up to `lte`, oldest first
        (newest first with `desc`), at most `limit`. The newest one is one lookup (often cached)."""
        stream_id = self.namespace + str(originator_id)
        snapshots = self.store.snapshots
        if desc and limit == 1 and gt is None:
            newest = snapshots.latest(stream_id, max_version=None if lte is None else lte + 1)
            found = [] if newest is None else [newest]
        else:
            found = [
                s for s in snapshots.list(stream_id)
                if (gt is None or s.version - 1 > gt) and (lte is None or s.version - 1 <= lte)
            ]
            if desc:
                found.reverse()
            if limit is not None:
                found = found[: max(limit, 0)]
        return [
            StoredEvent(originator_id=originator_id, originator_version=s.version - 1, topic=s.state_type, state=s.data)
            for s in found
        ]
