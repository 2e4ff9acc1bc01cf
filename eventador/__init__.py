"""eventador: event sourcing for Python on Arrow, Parquet and DuckDB.

    import eventador as ev
"""

from eventador.clock import Clock, ManualClock, SystemClock
from eventador.errors import (
    ActorError,
    ActorNameInUseError,
    ActorNotFoundError,
    ActorStoppedError,
    AskTimeoutError,
    CommandRejected,
    ConcurrencyError,
    CorruptionError,
    EventadorError,
    InvalidInputError,
    MessageError,
    ProjectionError,
    QueueError,
    ReadOnlyError,
    RegistrationError,
    SerializationError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
)
from eventador.messages import Command, Event, State, TypeRegistry, UnknownEvent, registry
from eventador.store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    EventStore,
    ExpectedVersion,
    PastView,
    RecordedEvent,
    open_store,
)

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "ActorError",
    "ActorNameInUseError",
    "ActorNotFoundError",
    "ActorStoppedError",
    "AskTimeoutError",
    "Clock",
    "Command",
    "CommandRejected",
    "ConcurrencyError",
    "CorruptionError",
    "Event",
    "EventStore",
    "EventadorError",
    "ExpectedVersion",
    "InvalidInputError",
    "ManualClock",
    "MessageError",
    "PastView",
    "ProjectionError",
    "QueueError",
    "ReadOnlyError",
    "RecordedEvent",
    "RegistrationError",
    "SerializationError",
    "State",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "SystemClock",
    "TypeRegistry",
    "UnknownEvent",
    "open_store",
    "registry",
]
