"""SQL over the store: the ``events`` view and one typed view per event type, in DuckDB.

The views read the Parquet files directly and the hot tier as a registered
Arrow table, so unflushed events are included. A typed view renames the
``"<Type>.<field>"`` columns back to field names; a field whose column no file
holds yet reads as a typed NULL, so a query over a new event type works before
its first event is written. Each typed view shows its type's events of every stored
schema version as today's class, upcasters applied in SQL (``store/typed_sql.py``).

A typed view is named like its event type, unless that name is one of the store's
own (``events``, a table of the store such as ``files``): then it is ``event_<type>``
(a warning says so once per process), so that it never hides the store's table and
the table never hides it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa

from eventador.digits import DEFAULT_DIGITS
from eventador.errors import SerializationError
from eventador.messages import Event
from eventador.store.columns import ENVELOPE, column_name, exact_text_column
from eventador.store.segments import unify
from eventador.store.sqlguard import STORE_TABLES, STORE_VIEWS
from eventador.store.stored_versions import stored_versions
from eventador.store.typed_sql import (
    COLUMNS_VERSION,
    TypedField,
    Versions,
    columns_version,
    data_value,
    decimal_expr,
    duck_type,
    field_column,
    literal,
    quote,
    stored_decimals,
    typed_view,
)
from eventador.upcasting import Split, upcasters

__all__ = ["Sources", "SqlViews", "literal", "quote", "typed_view_name"]

_RESERVED = frozenset(STORE_VIEWS) | frozenset(STORE_TABLES)
_told: set[str] = set()  # the event types whose renamed view a warning has announced


def typed_view_name(event_type: str) -> str:
    """The name of the typed view of `event_type`: the type's own, or ``event_<type>`` when
    that is a name of the store's (``events``, ``files``...)."""
    return f"event_{event_type}" if event_type.lower() in _RESERVED else event_type

# The envelope columns of every view: (name, expression over _all, SQL type).
_ENVELOPE = [
    ("position", "position", "BIGINT"),
    ("stream_id", "stream_id", "VARCHAR"),
    ("version", "version", "BIGINT"),
    ("event_type", "event_type", "VARCHAR"),
    ("event_id", "CAST(hex(event_id) AS UUID)", "UUID"),
    ("recorded_at", "recorded_at", "TIMESTAMPTZ"),
    ("occurred_at", "coalesce(occurred_at, recorded_at)", "TIMESTAMPTZ"),
    ("stream_type", "stream_type", "VARCHAR"),
]
_ENVELOPE_SELECT = ", ".join(expr if expr == name else f"{expr} AS {name}" for name, expr, _ in _ENVELOPE)


def _stored_expr(
    event_type: str, name: str, col: str, arrow_type: pa.DataType, columns: dict[str, pa.DataType]
) -> tuple[str, str]:
    """The SQL and SQL type of a field of a type with no class here, as stored: its column,
    or for a Decimal field with several columns (or values kept as exact text) their exact value."""
    base = column_name(event_type, name)
    stored = stored_decimals(event_type, name, columns)
    if col == base and not pa.types.is_decimal(arrow_type):
        return quote(col), duck_type(arrow_type)
    if stored == [base] and exact_text_column(event_type, name) not in columns:
        return quote(base), duck_type(columns[base])
    target = base if base in columns else stored[0] if stored else base
    sql_type = duck_type(columns[target]) if target in columns else str(DEFAULT_DIGITS)
    return decimal_expr(event_type, name, target, sql_type, columns), sql_type


class _View(NamedTuple):
    fields: list[TypedField]
    rows: str | None  # the condition on the rows of ``_all`` (+ ``_cv``); None: the rows of the type
    present: bool  # some column the view reads exists: else it is made empty, when a query names it
    versioned: bool = False  # the SQL reads ``_cv``


def _stored_field(column: str) -> tuple[str, str]:
    """(event type, field) of a typed column ``"<type>.<field>"`` (or of a Decimal field's
    ``"<type>.<field>:DECIMAL(18,2)"``, ``"<type>.<field>:exact"``); ("", "") for another column."""
    if column in ENVELOPE.names or column == "metadata_json" or "." not in column:
        return "", ""
    event_type, name = field_column(column).rsplit(".", 1)
    return event_type, name


@dataclass(frozen=True)
class Sources:
    """What the views read: Parquet files, in-memory tables, and the visible hot rows."""

    files: tuple[Path, ...]
    schemas: tuple[pa.Schema, ...]
    tables: tuple[pa.Table, ...]
    hot: pa.Table
    position_limit: int | None = None
    occurred_limit: Any = None  # an aware datetime: keep events that occurred at or before it


class SqlViews:
    """A DuckDB connection whose views show one state of the store."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        # Times print in UTC, as the store records them, whatever the machine's zone
        # (a restricted connection has it set already, and its configuration locked).
        if con.execute("SELECT current_setting('TimeZone')").fetchall() != [("UTC",)]:
            con.execute("SET TimeZone = 'UTC'")
        self._shape: tuple[Any, ...] | None = None
        self.generation = 0
        """Bumped whenever the views are recreated (a new file, a new event type)."""
        self._empty: dict[str, str] = {}  # view name -> CREATE of its empty view, not yet run
        self.typed: tuple[str, ...] = ()
        """The event types that have a typed view named like the type."""
        self.view_names: dict[str, str] = {}
        """Every event type that has a typed view -> the view's name (see ``typed_view_name``)."""

    def update(self, sources: Sources, classes: dict[str, type[Event]], *, query: str | None = None) -> None:
        """Point the views at `sources`, recreating them only when their shape changed.

        Types with no stored event get an empty view. Given the `query` about to run,
        only those it mentions are made (a process may define hundreds of event types,
        and each view costs about a millisecond to create); without it, all of them.
        The views are made again when an upcaster is registered or removed.
        """
        memory = unify(list(sources.tables)) if sources.tables else None
        columns = self._columns(sources, memory)
        versions = stored_versions(sources.hot, sources.tables, sources.files)
        shape = (
            sources.files,
            tuple(id(t) for t in sources.tables),
            tuple(sorted(columns)),
            frozenset(classes.items()),
            sources.position_limit,
            sources.occurred_limit,
            upcasters.generation,
            versions.uniform,
            None if versions.by_type is None else tuple(sorted(versions.by_type.items())),
        )
        self.con.register("_hot", sources.hot)
        if memory is not None:
            self.con.register("_memory", memory)
        if shape != self._shape:
            self._create(sources, memory is not None, columns, classes, versions)
            self._shape = shape
        self.make_empty_views(query)

    def _columns(self, sources: Sources, memory: pa.Table | None) -> dict[str, pa.DataType]:
        found: dict[str, pa.DataType] = {}
        schemas = [sources.hot.schema]
        if memory is not None:
            schemas.append(memory.schema)
        schemas.extend(sources.schemas)
        for schema in schemas:
            for field in schema:
                found.setdefault(field.name, field.type)
        return found

    def _create(
        self, sources: Sources, has_memory: bool, columns: dict[str, pa.DataType], classes: dict[str, type[Event]],
        versions: Versions,
    ) -> None:
        parts = ["SELECT * FROM _hot"]
        if has_memory:
            parts.append("SELECT * FROM _memory")
        if sources.files:
            paths = ", ".join(literal(str(p)) for p in sources.files)
            parts.append(f"SELECT * FROM read_parquet([{paths}], union_by_name = true)")
        union = " UNION ALL BY NAME ".join(parts)
        conditions = []
        if sources.position_limit is not None:
            conditions.append(f"position <= {int(sources.position_limit)}")
        if sources.occurred_limit is not None:
            conditions.append(
                f"coalesce(occurred_at, recorded_at) <= {literal(sources.occurred_limit.isoformat())}::TIMESTAMPTZ"
            )
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW _all AS SELECT * FROM ({union}){where}")

        typed = self._typed_views(columns, classes, versions)
        row_version = columns_version(columns)
        metadata = "CAST(metadata_json AS JSON)" if "metadata_json" in columns else "CAST(NULL AS JSON)"
        schema_version = "coalesce(schema_version, 1)" if "schema_version" in columns else "1"
        self.con.execute(
            f"CREATE OR REPLACE TEMP VIEW events AS SELECT {_ENVELOPE_SELECT}, "
            f"CAST({schema_version} AS SMALLINT) AS schema_version, {metadata} AS metadata, "
            f"CAST({self._data(typed, columns, classes, row_version)} AS JSON) AS data, payload FROM _all"
        )
        statements: list[str] = []  # run as one batch: one round trip for many views
        self._empty = {}
        taken = set(_RESERVED)
        view_names: dict[str, str] = {}
        for event_type, (fields, rows, present, versioned) in typed.items():
            view = typed_view_name(event_type)
            if view.lower() in taken:
                warnings.warn(f"no SQL view for event type {event_type!r}: the name {view!r} is taken", stacklevel=3)
                continue
            if view != event_type and event_type not in _told:
                _told.add(event_type)
                warnings.warn(
                    f"event type {event_type!r} is named like the store's own {event_type.lower()!r}: "
                    f"its SQL view is {view!r} (or use events WHERE event_type = {literal(event_type)})",
                    stacklevel=3,
                )
            taken.add(view.lower())
            view_names[event_type] = view
            # A payload field named like an envelope column (say `version`) wins.
            names = {f.name for f in fields}
            envelope = [e for e in _ENVELOPE if e[0] not in names and e[0] != "event_type"]
            # Types with no stored event yet get empty views: binding hundreds of views over
            # the real tables would cost more than the queries (a notebook defines many classes).
            if present:
                columns_sql = [expr if expr == name else f"{expr} AS {name}" for name, expr, _ in envelope]
                columns_sql += [f"{f.expr} AS {quote(f.name)}" for f in fields]
                select = ", ".join(columns_sql)
                source = f"(SELECT *, {row_version} AS {COLUMNS_VERSION} FROM _all)" if versioned else "_all"
                where = f"event_type = {literal(event_type)}" if rows is None else rows
                statements.append(
                    f"CREATE OR REPLACE TEMP VIEW {quote(view)} AS SELECT {select} FROM {source} WHERE {where}"
                )
            else:
                columns_sql = [f"CAST(NULL AS {sql_type}) AS {quote(name)}" for name, _, sql_type in envelope]
                columns_sql += [f"CAST(NULL AS {f.sql_type}) AS {quote(f.name)}" for f in fields]
                self._empty[view] = (
                    f"CREATE OR REPLACE TEMP VIEW {quote(view)} AS SELECT {', '.join(columns_sql)} LIMIT 0"
                )
        if statements:
            self.con.execute(";\n".join(statements))
        self.view_names = view_names
        self.typed = tuple(t for t, view in view_names.items() if t == view)
        self.generation += 1

    def make_empty_views(self, query: str | None) -> None:
        """Create the empty views of types without events that `query` mentions (all if None)."""
        if not self._empty:
            return
        if query is None:
            wanted = list(self._empty)
        else:
            text = query.lower()
            wanted = [t for t in self._empty if t.lower() in text]
        if wanted:
            self.con.execute(";\n".join(self._empty.pop(t) for t in wanted))

    @staticmethod
    def _typed_views(
        columns: dict[str, pa.DataType], classes: dict[str, type[Event]], versions: Versions
    ) -> dict[str, _View]:
        """The typed views to make, by event type."""
        views: dict[str, _View] = {}
        for event_type, cls in classes.items():
            try:
                view = typed_view(event_type, cls, columns, versions)
            except SerializationError:
                continue  # a class no event of which can be stored has no view (append names the problem)
            views[event_type] = _View(view.fields, view.where, view.present, view.versioned)
        # Types this process has no class for still get views from the columns on disk, as
        # stored; but a type that upcasters rename or split away has none: its events show
        # in the views of the types they become (and in ``events``, under the stored type).
        moved = {u.event_type for u in upcasters if isinstance(u.to_type, Split) or u.to_type != u.event_type}
        seen: set[tuple[str, str]] = set()
        for col, arrow_type in columns.items():
            event_type, name = _stored_field(col)
            if not event_type or event_type in classes or event_type in moved or (event_type, name) in seen:
                continue
            seen.add((event_type, name))
            expr, sql_type = _stored_expr(event_type, name, col, arrow_type, columns)
            views.setdefault(event_type, _View([], None, True)).fields.append(TypedField(name, expr, sql_type, expr))
        return views

    @staticmethod
    def _data(
        views: dict[str, _View], columns: dict[str, pa.DataType], classes: dict[str, type[Event]], versions: str
    ) -> str:
        """The SQL of ``events.data``: the fields the row's typed columns hold, as stored (no
        upcaster applied): today's fields where they hold today's version (``columns_version``),
        else every typed column of the stored type (null where that version had no such field)."""
        stored: dict[str, list[str]] = {}
        seen: set[tuple[str, str]] = set()
        for col in columns:
            event_type, name = _stored_field(col)
            if event_type and (event_type, name) not in seen:
                seen.add((event_type, name))
                own = quote(col) if col == column_name(event_type, name) else "NULL"
                stored.setdefault(event_type, []).append(
                    f"{literal(name)}, {data_value(event_type, name, own, columns)}"
                )
        cases = []
        for event_type, cls in classes.items():
            view = views.get(event_type)
            if view is not None and view.present and view.fields:
                pairs = ", ".join(
                    f"{literal(f.name)}, {data_value(event_type, f.name, f.own, columns)}" for f in view.fields
                )
                cases.append(
                    f"WHEN event_type = {literal(event_type)} AND {versions} = {cls.schema_version} "
                    f"THEN json_object({pairs})"
                )
        cases += [f"WHEN event_type = {literal(t)} THEN json_object({', '.join(p)})" for t, p in stored.items()]
        return f"CASE {' '.join(cases)} END" if cases else "CAST(NULL AS JSON)"

    def close(self) -> None:
        self.con.close()
