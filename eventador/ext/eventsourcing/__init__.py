"""A persistence module for the ``eventsourcing`` library: its applications store their events
in eventador, and keep their code.

    PERSISTENCE_MODULE=eventador.ext.eventsourcing
    EVENTADOR_PATH=/var/lib/myapps        # each application in <EVENTADOR_PATH>/<its name>
    EVENTADOR_DURABILITY=fsync            # or batch, none

Without ``EVENTADOR_PATH`` the store is in memory. The recorders are in ``recorders``, the
factory and its settings in ``factory``; ``queries`` adds what eventsourcing does not have:
SQL over an application's events with their state as columns, and an application as it was
at a past time.
"""

from eventador.ext.eventsourcing.factory import EventadorFactory
from eventador.ext.eventsourcing.queries import PastApplication, as_of, create_topic_views, store_of
from eventador.ext.eventsourcing.recorders import (
    EventadorAggregateRecorder,
    EventadorApplicationRecorder,
    EventadorProcessRecorder,
    EventadorSnapshotRecorder,
    EventadorSubscription,
    EventadorTrackingRecorder,
    StoredEventRecord,
)

Factory = EventadorFactory  # the name eventsourcing's own modules give theirs

__all__ = [
    "EventadorAggregateRecorder",
    "EventadorApplicationRecorder",
    "EventadorFactory",
    "EventadorProcessRecorder",
    "EventadorSnapshotRecorder",
    "EventadorSubscription",
    "EventadorTrackingRecorder",
    "PastApplication",
    "StoredEventRecord",
    "as_of",
    "create_topic_views",
    "store_of",
]
