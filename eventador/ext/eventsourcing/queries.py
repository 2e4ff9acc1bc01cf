"""What eventsourcing applications gain on eventador: SQL over their events, with each event
class's state as typed columns, and the application as it was at a past time::

    create_topic_views(app)                         # one live SQL view per event class
    store_of(app).sql("SELECT trick, count(*) FROM Dog_TrickAdded GROUP BY 1")
    as_of(app, yesterday).repository.get(dog_id)   # the aggregate as it was then
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import JSONTranscoder
from eventsourcing.utils import get_topic

from eventador.errors import InvalidInputError
from eventador.ext.eventsourcing.factory import EventadorFactory
from eventador.ext.eventsourcing.recorders import StoredEventRecord
from eventador.store import EventStore, PastView
from eventador.store.sqlguard import SqlRelation

__all__ = ["PastApplication", "as_of", "create_topic_views", "store_of"]

_SAMPLE = 1_000  # events per topic read to learn its fields' types

# eventsourcing's JSON transcodings of common types ({"_type_": name, "_data_": text}) -> SQL type
_TRANSCODED = {"datetime_iso": "TIMESTAMPTZ", "uuid_hex": "UUID", "decimal_str": "DECIMAL"}


def store_of(app: Application[Any]) -> EventStore:
    """The eventador store the application records its events in.

    Raises:
        InvalidInputError: the application's persistence module is not eventador's.
    """
    factory = app.factory
    if not isinstance(factory, EventadorFactory):
        raise InvalidInputError(
            f"application {app.name!r} does not store its events in eventador: its factory is "
            f"{get_topic(type(factory))} (set PERSISTENCE_MODULE=eventador.ext.eventsourcing)"
        )
    return factory.store


def create_topic_views(app: Application[Any]) -> dict[str, str]:
    """Make one live SQL view per event class the application has recorded; returns view name -> topic.

    A view is named after the class (``Dog.Registered`` -> ``Dog_Registered``; prefixed with
    its module when two classes share a name) and has the columns ``position``,
    ``originator_id``, ``originator_version``, ``recorded_at``, then one per field of the
    event's state, typed as the JSON holds it: numbers, text, booleans, and eventsourcing's
    datetimes, UUIDs and decimals as TIMESTAMPTZ, UUID and DECIMAL; anything else as JSON.
    The views are kept with the store (``store.views()``), current as events are recorded,
    and seen by ``store.as_of(...)`` too. Run again after new event classes appear.

    Costs one query for the topics and one per topic (reading up to 1,000 of its events).

    Raises:
        InvalidInputError: the application is not on eventador, or its stored state is not
            plain JSON (a cipher, a compressor or another transcoder: SQL cannot read it).
    """
    store = store_of(app)
    mapper = app.mapper
    if not isinstance(mapper.transcoder, JSONTranscoder) or mapper.cipher is not None or mapper.compressor is not None:
        raise InvalidInputError(
            f"the events of {app.name!r} are not stored as plain JSON (transcoder "
            f"{type(mapper.transcoder).__name__}, cipher {mapper.cipher!r}, compressor {mapper.compressor!r}): "
            "SQL cannot read their state"
        )
    event_type = StoredEventRecord.event_type
    topics = [t for (t,) in store.sql(f"SELECT DISTINCT topic FROM {event_type} ORDER BY 1").fetchall()]
    names = _view_names(topics)
    uuid_ids = getattr(app.factory, "originator_id_type", "uuid") == "uuid"
    for topic in topics:
        states = store.sql(
            f"SELECT decode(state) FROM {event_type} WHERE topic = ? ORDER BY position LIMIT {_SAMPLE}", [topic]
        ).fetchall()
        fields = _field_types([json.loads(s) for (s,) in states])
        store.create_view(names[topic], _view_sql(event_type, topic, fields, uuid_ids=uuid_ids), replace=True)
    return {names[t]: t for t in topics}


def _view_names(topics: Sequence[str]) -> dict[str, str]:
    """A SQL name per topic: its class's qualified name, or with its module when that is taken twice."""

    def identifier(text: str) -> str:
        return re.sub(r"\W", "_", text).strip("_") or "event"

    short = {t: identifier(t.rpartition(":")[2]) for t in topics}
    taken = [name.lower() for name in short.values()]
    return {t: name if taken.count(name.lower()) == 1 else identifier(t) for t, name in short.items()}


def _field_types(states: list[Any]) -> dict[str, str]:
    """Each field of the states (JSON objects) -> its SQL type, in order of first appearance."""
    seen: dict[str, set[str]] = {}
    scales: dict[str, int] = {}
    for state in states:
        if not isinstance(state, dict):
            continue
        for name, value in state.items():
            kind = _kind(value)
            seen.setdefault(name, set()).add(kind)
            if kind == "DECIMAL":
                exponent = Decimal(value["_data_"]).as_tuple().exponent
                scales[name] = max(scales.get(name, 0), -exponent if isinstance(exponent, int) else 0)
    types = {}
    for name, kinds in seen.items():
        kinds.discard("NULL")
        if kinds == {"BIGINT", "DOUBLE"}:
            kinds = {"DOUBLE"}
        kind = kinds.pop() if len(kinds) == 1 else "JSON"
        types[name] = f"DECIMAL(38, {min(scales.get(name, 0), 18)})" if kind == "DECIMAL" else kind
    return types


def _kind(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT" if -(2**63) <= value < 2**63 else "JSON"
    if isinstance(value, float):
        return "DOUBLE"
    if isinstance(value, str):
        return "VARCHAR"
    if isinstance(value, dict) and set(value) == {"_type_", "_data_"} and isinstance(value["_data_"], str):
        return _TRANSCODED.get(value["_type_"], "JSON")
    return "JSON"


def _view_sql(event_type: str, topic: str, fields: dict[str, str], *, uuid_ids: bool) -> str:
    envelope = {
        "position": "position",
        "originator_id": "CAST(stream_id AS UUID)" if uuid_ids else "stream_id",
        "originator_version": "originator_version",
        "recorded_at": "recorded_at",
    }
    columns = [f"{expr} AS {name}" for name, expr in envelope.items() if name not in fields]
    for name, sql_type in fields.items():
        path = _literal("$." + json.dumps(name))
        if sql_type == "JSON":
            columns.append(f"json_extract(_state, {path}) AS {_quote(name)}")
            continue
        if sql_type in ("TIMESTAMPTZ", "UUID") or sql_type.startswith("DECIMAL"):
            path = _literal("$." + json.dumps(name) + "._data_")
        columns.append(f"CAST(json_extract_string(_state, {path}) AS {sql_type}) AS {_quote(name)}")
    return (
        f"SELECT {', '.join(columns)} FROM (SELECT *, CAST(decode(state) AS JSON) AS _state "
        f"FROM {event_type} WHERE topic = {_literal(topic)})"
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class PastApplication:
    """An eventsourcing application as it was at a past point: its aggregates and its SQL, read-only.

    ``repository.get(id)`` (or ``get(id)``) rebuilds the aggregate as the application would
    have then: from the newest snapshot at or below that version, then the events up to it.
    """

    def __init__(self, app: Application[Any], view: PastView) -> None:
        self.app = app
        self.view = view
        """The store at that point (``read_stream``, ``read_all``, ``sql``)."""

    @property
    def repository(self) -> PastApplication:
        """Itself: ``as_of(app, when).repository.get(id)`` reads as eventsourcing's ``app.repository.get(id)``."""
        return self

    def get(self, aggregate_id: UUID | str) -> Any:
        """The aggregate as it was at this point.

        Costs one read of the stream's newest event at that point, then what
        ``app.repository.get(id, version=...)`` costs.

        Raises:
            AggregateNotFoundError: the aggregate did not exist yet.
        """
        last = self.view.read_stream(str(aggregate_id), reverse=True, limit=1)
        if not last or not isinstance(last[0].event, StoredEventRecord):
            raise AggregateNotFoundError(aggregate_id)
        return self.app.repository.get(aggregate_id, version=last[0].event.originator_version)

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> SqlRelation:
        """SQL over the application's events up to this point (the live views too)."""
        return self.view.sql(query, params)

    def __repr__(self) -> str:
        return f"PastApplication({self.app.name}, {self.view!r})"


def as_of(app: Application[Any], when: datetime | int) -> PastApplication:
    """The application as it was at `when`: an aware datetime (events recorded at or before
    it) or a notification id (events up to it).

    Raises:
        InvalidInputError: the application is not on eventador, or `when` is a naive datetime.
    """
    return PastApplication(app, store_of(app).as_of(when))
