"""What the store hands back: recorded events, and the expected-version markers."""

from __future__ import annotations

import enum
import itertools
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from eventador.clock import datetime_to_micros, micros_to_datetime
from eventador.codec import decode_value
from eventador.messages import Event, event_data, fields_html
from eventador.upcasting import upcasters

__all__ = [
    "ANY", "NO_STREAM", "STREAM_EXISTS", "ExpectedVersion", "RecordedEvent", "datetime_to_micros", "micros_to_datetime",
]


class ExpectedVersion(enum.Enum):
    """What an append expects of its stream when the caller does not pass a version number."""

    ANY = "any"
    """No check."""
    NO_STREAM = "no_stream"
    """The stream must not exist yet (the same as ``expected_version=0``)."""
    STREAM_EXISTS = "stream_exists"
    """The stream must have at least one event."""

    def __repr__(self) -> str:
        return f"ev.{self.name}"


ANY = ExpectedVersion.ANY
NO_STREAM = ExpectedVersion.NO_STREAM
STREAM_EXISTS = ExpectedVersion.STREAM_EXISTS


class RecordedEvent(tuple[Any, ...]):
    """One stored event with its envelope: where and when it was recorded.

    ``position`` is global, 1-based and gap-free; ``version`` counts within the
    stream. ``recorded_at`` is set by the store (aware UTC); ``occurred_at`` is the
    event's own time, the same unless the writer said otherwise. ``event`` is the
    typed instance (``UnknownEvent`` when its class is not defined here).

    Immutable. Internally a tuple of raw values (times as integers): bulk reads
    build millions of these, and the conversions happen only when asked.
    """

    __slots__ = ()

    stream_id: str = property(itemgetter(0))  # type: ignore[assignment]
    version: int = property(itemgetter(1))  # type: ignore[assignment]
    position: int = property(itemgetter(2))  # type: ignore[assignment]
    event_type: str = property(itemgetter(3))  # type: ignore[assignment]
    event: Event = property(itemgetter(4))  # type: ignore[assignment]
    schema_version: int = property(itemgetter(9))  # type: ignore[assignment]
    """The version of the event's class when it was written (``event`` is upcast to today's)."""

    @classmethod
    def from_raw(cls, row: Iterable[Any]) -> RecordedEvent:
        """Build from (stream_id, version, position, event_type, event, event_id bytes,
        recorded µs, occurred µs or None, metadata CBOR or None, schema version)."""
        return tuple.__new__(cls, row)

    @property
    def event_id(self) -> uuid.UUID:
        return uuid.UUID(bytes=self[5])

    @property
    def recorded_at(self) -> datetime:
        return micros_to_datetime(self[6])

    @property
    def occurred_at(self) -> datetime:
        occurred = self[7]
        return micros_to_datetime(self[6] if occurred is None else occurred)

    @property
    def metadata(self) -> dict[str, Any]:
        raw = self[8]
        return {} if raw is None else dict(decode_value(raw))

    def __repr__(self) -> str:
        return (
            f"RecordedEvent(stream_id={self[0]!r}, version={self[1]}, position={self[2]}, event={self[4]!r})"
        )

    def _repr_html_(self) -> str:
        envelope = [
            ("stream_id", self.stream_id), ("version", self.version), ("position", self.position),
            ("recorded_at", self.recorded_at), ("occurred_at", self.occurred_at), ("event_id", self.event_id),
        ]
        if self[8] is not None:
            envelope.append(("metadata", self.metadata))
        fields = [(f"event.{name}", value) for name, value in event_data(self.event).items()]
        return fields_html(f"RecordedEvent {self.event_type}", envelope + fields)

    def as_dict(self) -> dict[str, Any]:
        """The envelope and the event as a flat dict (for DataFrames)."""
        return {
            "position": self.position,
            "stream_id": self.stream_id,
            "version": self.version,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "recorded_at": self.recorded_at,
            "occurred_at": self.occurred_at,
            "metadata": self.metadata,
            "event": self.event,
        }


def current_types(types: Sequence[str], events: Sequence[Event]) -> Sequence[str]:
    """The event type of each record: as stored, unless an upcaster renamed it (then the event's own)."""
    if not upcasters.renames_types:
        return types
    return [e.event_type for e in events]


def build_records(columns: Sequence[Sequence[Any]]) -> list[RecordedEvent]:
    """RecordedEvents from parallel columns: stream_id, version, position, event_type,
    event, event_id, recorded µs, occurred µs, metadata, schema version. The replay hot loop."""
    # map() keeps the per-row call in C: no Python frame per event.
    return list(map(tuple.__new__, itertools.repeat(RecordedEvent), zip(*columns, strict=True)))
