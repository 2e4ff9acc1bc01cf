"""The event store: durable appends, Arrow hot tier, Parquet files, DuckDB SQL."""

from eventador.store.reads import PastView
from eventador.store.records import ANY, NO_STREAM, STREAM_EXISTS, ExpectedVersion, RecordedEvent
from eventador.store.repair import RepairReport, repair_store
from eventador.store.store import EventStore, open_store
from eventador.store.subscription import Subscription

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "EventStore",
    "ExpectedVersion",
    "PastView",
    "RecordedEvent",
    "RepairReport",
    "Subscription",
    "open_store",
    "repair_store",
]
