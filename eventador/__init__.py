"""eventador: event sourcing for Python, in notebooks and in services.

Every change to your domain is an event, kept forever in a durable, auditable log
you can ask questions of: SQL over events and over folded state, state as of any
past moment, replays and rebuilds. Appends go to a write-ahead log (fsynced) and an
Arrow hot tier, then to Parquet files queried with DuckDB.

    import eventador as ev

    store = ev.open_store("bank")                  # a directory; open_store() is in memory
    store.append("acc-1", [Deposited(account_id="acc-1", amount=Decimal(100))])
    store.read_stream("acc-1")                     # RecordedEvents; read_stream_df: a DataFrame
    store.sql("SELECT sum(amount) FROM Deposited").df()
    store.as_of(when).read_stream("acc-1")         # the past, by position or aware datetime

What is here: messages (``Event``, ``Command``, ``State``), the store (``open_store``,
``EventStore``, ``RecordedEvent``), actors (``ActorSystem``, ``PersistentActor``,
``AggregateRoot``, ``Repository``, ``SnapshotConfig``), read models (``SqlProjection``,
``Projection``, ``ProjectionRunner``), a durable queue and sagas (``QueueManager``,
``Saga``, ``SagaCoordinator``), real event logs (``read_xes``, ``read_event_log``,
``store.import_dataframe``), notebook helpers (``explore``, ``plot_events_per_day``),
and one error tree under ``EventadorError``. ``ev.demo.build_demo()`` builds a demo
bank; ``eventador.testing`` holds test helpers and the store's contract suite. The
command line: ``eventador --help``. The guide: README.md and docs/ in the repository.
"""

import importlib
from typing import Any

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
from eventador.aggregates import AggregateRoot, PersistentActor, Repository, SnapshotConfig, SnapshotWarning
from eventador.clock import Clock, ManualClock, SystemClock
from eventador.digits import Digits
from eventador.errors import (
    ActorError,
    ActorNameInUseError,
    ActorNotFoundError,
    ActorStoppedError,
    AskTimeoutError,
    CheckpointConflict,
    CommandRejected,
    ConcurrencyError,
    CorruptionError,
    CrossShardError,
    DiskFullError,
    EventadorError,
    EventLogColumnError,
    EventLogRowError,
    InvalidInputError,
    LakeError,
    MessageError,
    MessageNotFoundError,
    NestingError,
    ProjectionError,
    QueueClosedError,
    QueueError,
    ReadOnlyError,
    RegistrationError,
    SchemaError,
    SerializationError,
    ShardLayoutError,
    ShardLockedError,
    ShardNotWritableError,
    SqlCorruptionError,
    SqlError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    StorePermissionError,
)
from eventador.io.importing import read_event_log, read_xes
from eventador.messages import Command, Event, State, TypeRegistry, UnknownEvent, registry
from eventador.notebook import explore, plot_events_per_day, plot_timeline
from eventador.projections import (
    ErrorPolicy,
    Lag,
    LiveView,
    Projection,
    ProjectionNameError,
    ProjectionRunner,
    Retry,
    SqlProjection,
    batch_view_name,
    list_projections,
)
from eventador.queue import Lease, QueueManager, RetryPolicy
from eventador.sagas import (
    Saga,
    SagaCommandFailed,
    SagaCoordinator,
    SagaState,
    SagaStatus,
    SagaTimeout,
    list_sagas,
)
from eventador.shards import ShardedRepository, ShardedStore, open_shard, open_sharded
from eventador.store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    EventStore,
    ExpectedVersion,
    PastView,
    RecordedEvent,
    RepairReport,
    open_store,
    repair_store,
)
from eventador.store.diff import StoreDiff
from eventador.store.lake import LakeTarget
from eventador.store.lake_reader import Lake, open_lake
from eventador.testing.scenario import AggregateScenario
from eventador.upcasting import Add, Convert, Drop, Rename, Split, Upcaster, upcaster, upcasters

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
    "Add",
    "AggregateRoot",
    "AggregateScenario",
    "AskTimeoutError",
    "CheckpointConflict",
    "Clock",
    "Command",
    "CommandRejected",
    "ConcurrencyError",
    "Convert",
    "CorruptionError",
    "CrossShardError",
    "DeadLetter",
    "Digits",
    "Directive",
    "DiskFullError",
    "Drop",
    "ErrorPolicy",
    "Event",
    "EventLogColumnError",
    "EventLogRowError",
    "EventStore",
    "EventadorError",
    "ExpectedVersion",
    "Failure",
    "InvalidInputError",
    "Lag",
    "Lake",
    "LakeError",
    "LakeTarget",
    "Lease",
    "LiveView",
    "LocalActorSystem",
    "ManualClock",
    "MessageError",
    "MessageNotFoundError",
    "NestingError",
    "PastView",
    "PersistentActor",
    "Projection",
    "ProjectionError",
    "ProjectionNameError",
    "ProjectionRunner",
    "QueueClosedError",
    "QueueError",
    "QueueManager",
    "ReadOnlyError",
    "RecordedEvent",
    "RegistrationError",
    "Rename",
    "RepairReport",
    "Repository",
    "Retry",
    "RetryPolicy",
    "Saga",
    "SagaCommandFailed",
    "SagaCoordinator",
    "SagaState",
    "SagaStatus",
    "SagaTimeout",
    "SchemaError",
    "SerializationError",
    "ShardLayoutError",
    "ShardLockedError",
    "ShardNotWritableError",
    "ShardedRepository",
    "ShardedStore",
    "SnapshotConfig",
    "SnapshotWarning",
    "Split",
    "SqlCorruptionError",
    "SqlError",
    "SqlProjection",
    "State",
    "StoreClosedError",
    "StoreDiff",
    "StoreError",
    "StoreLockedError",
    "StorePermissionError",
    "Supervisor",
    "SystemClock",
    "TypeRegistry",
    "UnknownEvent",
    "Upcaster",
    "batch_view_name",
    "explore",
    "list_projections",
    "list_sagas",
    "open_lake",
    "open_shard",
    "open_sharded",
    "open_store",
    "plot_events_per_day",
    "plot_timeline",
    "read_event_log",
    "read_xes",
    "registry",
    "repair_store",
    "upcaster",
    "upcasters",
]


def __getattr__(name: str) -> Any:
    # ev.demo (a demo bank) is imported when first used: its event classes would
    # otherwise claim their type names ("bank.AccountOpened", ...) in every program.
    # ev.fleet (Dask) is imported when first used too.
    if name in ("demo", "fleet"):
        return importlib.import_module(f"eventador.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
