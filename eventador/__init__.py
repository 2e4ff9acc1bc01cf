"""eventador: event sourcing for Python on Arrow, Parquet and DuckDB.

    import eventador as ev
"""

from eventador.actors import (
    Actor,
    ActorContext,
    ActorMetrics,
    ActorRef,
    ActorSystem,
    DeadLetter,
    Directive,
    Failure,
    LocalActorSystem,
    Supervisor,
)
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
from eventador.importing import read_event_log, read_xes
from eventador.messages import Command, Event, State, TypeRegistry, UnknownEvent, registry
from eventador.persistence import AggregateRoot, PersistentActor
from eventador.repository import Repository
from eventador.snapshots import SnapshotConfig, SnapshotWarning
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
    "Actor",
    "ActorContext",
    "ActorError",
    "ActorMetrics",
    "ActorNameInUseError",
    "ActorNotFoundError",
    "ActorRef",
    "ActorStoppedError",
    "ActorSystem",
    "AggregateRoot",
    "AskTimeoutError",
    "Clock",
    "Command",
    "CommandRejected",
    "ConcurrencyError",
    "CorruptionError",
    "DeadLetter",
    "Directive",
    "Event",
    "EventStore",
    "EventadorError",
    "ExpectedVersion",
    "Failure",
    "InvalidInputError",
    "LocalActorSystem",
    "ManualClock",
    "MessageError",
    "PastView",
    "PersistentActor",
    "ProjectionError",
    "QueueError",
    "ReadOnlyError",
    "RecordedEvent",
    "RegistrationError",
    "Repository",
    "SerializationError",
    "SnapshotConfig",
    "SnapshotWarning",
    "State",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "Supervisor",
    "SystemClock",
    "TypeRegistry",
    "UnknownEvent",
    "open_store",
    "read_event_log",
    "read_xes",
    "registry",
]
