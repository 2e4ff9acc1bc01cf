"""The infrastructure factory: which store an application's recorders use.

Settings (eventsourcing's environment: each may be prefixed with the application's name,
``BANKACCOUNTS_EVENTADOR_PATH``):

- ``EVENTADOR_PATH``: a directory; each application keeps its store in the subdirectory
  named after it (``<EVENTADOR_PATH>/BankAccounts``). Without it, the store is in memory
  (one per factory, gone when the application closes).
- ``EVENTADOR_DURABILITY``: ``fsync`` (the default: an insert returns once it is on disk),
  ``batch`` or ``none``, as ``open_store``.
- ``ORIGINATOR_ID_TYPE``: ``uuid`` (the default) or ``text``, as eventsourcing's SQL modules.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic

from eventador.errors import InvalidInputError
from eventador.ext.eventsourcing.recorders import (
    EventadorAggregateRecorder,
    EventadorApplicationRecorder,
    EventadorProcessRecorder,
    EventadorSnapshotRecorder,
    EventadorTrackingRecorder,
)
from eventador.store import EventStore, open_store
from eventador.store.core import DURABILITIES, Durability

__all__ = ["EventadorFactory"]


class _OpenStores:
    """The stores applications of this process have open, one per directory, counted.

    eventsourcing makes a factory per application (and per projection view, per runner),
    each knowing only its settings; two factories of one directory must share its store, as
    a directory has one writer. The last factory to close closes the store.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, tuple[EventStore, int]] = {}

    def acquire(self, path: Path | None, durability: Durability) -> EventStore:
        if path is None:
            return open_store(None)
        key = Path(os.path.realpath(path))
        with self._lock:
            store, users = self._open.get(key, (None, 0))
            if store is None or store.closed:
                store, users = open_store(key, durability=durability), 0
            self._open[key] = (store, users + 1)
            return store

    def release(self, store: EventStore) -> None:
        close = store.path is None
        if not close:
            assert store.path is not None
            key = Path(os.path.realpath(store.path))
            with self._lock:
                held, users = self._open.get(key, (None, 0))
                if held is not store:
                    return
                close = users == 1
                if close:
                    del self._open[key]
                else:
                    self._open[key] = (store, users - 1)
        if close:
            store.close()


_stores = _OpenStores()


class EventadorFactory(InfrastructureFactory[EventadorTrackingRecorder]):
    """Recorders on the application's eventador store (see the module's settings).

    Raises:
        InvalidInputError: a setting has a value it cannot take (names the setting).
        StoreLockedError: another process writes the application's directory.
    """

    EVENTADOR_PATH = "EVENTADOR_PATH"
    EVENTADOR_DURABILITY = "EVENTADOR_DURABILITY"
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        durability = self.env.get(self.EVENTADOR_DURABILITY) or "fsync"
        if durability not in DURABILITIES:
            raise InvalidInputError(
                f"{self.EVENTADOR_DURABILITY} must be one of {', '.join(DURABILITIES)}, got {durability!r}"
            )
        self.originator_id_type = (self.env.get(self.ORIGINATOR_ID_TYPE) or "uuid").lower()
        if self.originator_id_type not in ("uuid", "text"):
            raise InvalidInputError(
                f"{self.ORIGINATOR_ID_TYPE} must be 'uuid' or 'text', got {self.originator_id_type!r}"
            )
        base = self.env.get(self.EVENTADOR_PATH)
        name = self.env.name or "default"
        if base and (os.sep in name or name in (".", "..")):
            raise InvalidInputError(f"application name {name!r} cannot name a directory in {base}")
        self.path = Path(base) / name if base else None
        """The application's store directory (None: in memory)."""
        self.store = _stores.acquire(self.path, durability)  # type: ignore[arg-type]  # checked above
        """The application's eventador store."""
        self._release = weakref.finalize(self, _stores.release, self.store)  # also if never closed

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        """The application's events (`purpose` "events") without notifications, or a
        snapshot recorder (any other purpose: "snapshots" and others apart)."""
        if purpose == "events":
            return EventadorAggregateRecorder(self.store, originator_id_type=self.originator_id_type, factory=self)
        namespace = "" if purpose == "snapshots" else f"{purpose}/"
        return EventadorSnapshotRecorder(
            self.store, originator_id_type=self.originator_id_type, factory=self, namespace=namespace
        )

    def application_recorder(self) -> ApplicationRecorder:
        """The application's events and notifications (``APPLICATION_RECORDER_TOPIC`` picks a subclass)."""
        topic = self.env.get(self.APPLICATION_RECORDER_TOPIC)
        cls: type[EventadorApplicationRecorder] = resolve_topic(topic) if topic else EventadorApplicationRecorder
        return cls(self.store, originator_id_type=self.originator_id_type, factory=self)

    def tracking_recorder(
        self, tracking_recorder_class: type[EventadorTrackingRecorder] | None = None
    ) -> EventadorTrackingRecorder:
        """Tracking records (and, in a subclass, a view's own state) in the store
        (``TRACKING_RECORDER_TOPIC`` picks a subclass when none is given)."""
        cls = tracking_recorder_class
        if cls is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            cls = resolve_topic(topic) if topic else EventadorTrackingRecorder
        assert cls is not None
        return cls(self.store, originator_id_type=self.originator_id_type, factory=self)

    def process_recorder(self) -> ProcessRecorder:
        """Events, notifications and tracking records written together (``PROCESS_RECORDER_TOPIC``)."""
        topic = self.env.get(self.PROCESS_RECORDER_TOPIC)
        cls: type[EventadorProcessRecorder] = resolve_topic(topic) if topic else EventadorProcessRecorder
        return cls(self.store, originator_id_type=self.originator_id_type, factory=self)

    def close(self) -> None:
        """Let go of the store (closed when no other factory of its directory holds it). Idempotent."""
        self._release()
