"""SQL over the store: the ``events`` view and one typed view per event type, in DuckDB.

The views read the Parquet files directly and the hot tier as a registered
Arrow table, so unflushed events are included. A typed view renames the
``"<Type>.<field>"`` columns back to field names; a field whose column no file
holds yet reads as a typed NULL, so a query over a new event type works before
its first event is written.

A typed view is named like its event type, unless that name is one of the store's
own (``events``, a table of the store such as ``files``): then it is ``event_<type>``
(a warning says so once per process), so that it never hides the store's table and
the table never hides it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from eventador.codec import schema_of
from eventador.digits import DEFAULT_DIGITS, declared_digits
from eventador.errors import SerializationError
from eventador.messages import Event
from eventador.store.columns import ENVELOPE, arrow_type_for, column_name, decimal_column, exact_text_column
from eventador.store.sqlguard import STORE_TABLES, STORE_VIEWS

__all__ = ["Sources", "SqlViews", "typed_view_name"]

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


_DUCK_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.binary(): "BLOB",
    pa.date32(): "DATE",
}


def _duck_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ"
    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL({arrow_type.precision}, {arrow_type.scale})"
    return _DUCK_TYPES.get(arrow_type, "VARCHAR")


def _field_column(col: str) -> str:
    """The ``"<Type>.<field>"`` a typed column belongs to (``"T.f:DECIMAL(18,2)"`` and
    ``"T.f:exact"`` belong to ``"T.f"``; field names hold no ``:``)."""
    head, _, rest = col.rpartition(".")
    return f"{head}.{rest.partition(':')[0]}"


def _stored_decimals(event_type: str, field: str, columns: dict[str, pa.DataType]) -> list[str]:
    """The typed columns a field has in the sources: ``"<Type>.<field>"``, and one per other
    digits it was declared with (``"<Type>.<field>:DECIMAL(18,2)"``)."""
    base = column_name(event_type, field)
    return [c for c in columns if c == base or c.startswith(base + ":DECIMAL(")]


def _decimal_expr(event_type: str, field: str, target: str, sql_type: str, columns: dict[str, pa.DataType]) -> str:
    """A Decimal field's value in its typed view, of `sql_type` (whose column is `target`):
    exact, or an error when a query reads a row whose value `sql_type` cannot hold, never a
    rounded number. Just the column when it is the field's only one (fast sums)."""
    stored = _stored_decimals(event_type, field, columns)
    text = exact_text_column(event_type, field)
    if stored == [target] and text not in columns:
        return f"CAST({quote(target)} AS {sql_type})"

    def error(held: str, why: str) -> str:
        where = f"{literal(f'{event_type}.{field} at position ')} || position || ' holds ' || CAST({held} AS VARCHAR)"
        return f"error({where} || {literal(why)})"

    whens = []
    for col in sorted(stored, key=lambda c: c != target):  # the column of the digits declared now first
        value = f"CAST({quote(col)} AS {sql_type})"
        if col != target and pa.types.is_decimal(columns[col]):
            # Stored under other digits: shown only if `sql_type` holds it exactly (there and back).
            back = f"TRY_CAST(TRY_CAST({quote(col)} AS {sql_type}) AS {_duck_type(columns[col])})"
            why = f", which {sql_type} (the digits declared now) cannot hold exactly"
            value = f"CASE WHEN {back} = {quote(col)} THEN {value} ELSE {error(quote(col), why)} END"
        whens.append(f"WHEN {quote(col)} IS NOT NULL THEN {value}")
    if text in columns:
        whens.append(f"WHEN {quote(text)} IS NOT NULL THEN {error(quote(text), _too_many_digits(field, sql_type))}")
    if not whens:
        return f"CAST(NULL AS {sql_type})"
    return f"CASE {' '.join(whens)} ELSE CAST(NULL AS {sql_type}) END"


def _too_many_digits(field: str, sql_type: str) -> str:
    return (
        f", which {sql_type} cannot hold exactly: its exact digits are in events.data->>'{field}' "
        f"(and read_all); for events appended from now on, declare digits that hold such values, "
        f"e.g. {field}: Annotated[Decimal, ev.Digits(38, 20)]"
    )


def _data_value(event_type: str, field: str, expr: str, columns: dict[str, pa.DataType]) -> str:
    """A field's value in the ``events`` view's JSON. A Decimal is the JSON string of its exact
    digits (DuckDB reads a JSON number as a double), from the text column beside its typed
    columns when they could not hold it."""
    text = exact_text_column(event_type, field)
    parts = [quote(text)] if text in columns else []
    parts += [
        f"CAST({quote(c)} AS VARCHAR)"
        for c in _stored_decimals(event_type, field, columns)
        if pa.types.is_decimal(columns[c])
    ]
    if not parts:
        return expr
    return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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
        """
        memory = None
        if sources.tables:
            memory = pa.concat_tables(list(sources.tables), promote_options="default")
        columns = self._columns(sources, memory)
        shape = (
            sources.files,
            tuple(id(t) for t in sources.tables),
            tuple(sorted(columns)),
            frozenset(classes.items()),
            sources.position_limit,
            sources.occurred_limit,
        )
        self.con.register("_hot", sources.hot)
        if memory is not None:
            self.con.register("_memory", memory)
        if shape != self._shape:
            self._create(sources, memory is not None, columns, classes)
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
        self, sources: Sources, has_memory: bool, columns: dict[str, pa.DataType], classes: dict[str, type[Event]]
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

        typed = self._typed_fields(columns, classes)
        # Types with no stored event yet get empty views: binding hundreds of views over
        # the real tables would cost more than the queries (a notebook defines many classes).
        stored = {_field_column(c) for c in columns if "." in c}  # "T.f:DECIMAL(18,2)" is a column of T.f
        present = {
            t for t, fields in typed.items() if not fields or any(column_name(t, n) in stored for n, _, _ in fields)
        }
        data_cases = []
        for event_type, fields in typed.items():
            if event_type not in present:
                continue
            pairs = ", ".join(
                f"{literal(name)}, {_data_value(event_type, name, expr, columns)}" for name, expr, _ in fields
            )
            data_cases.append(f"WHEN {literal(event_type)} THEN json_object({pairs})")
        data = f"CASE event_type {' '.join(data_cases)} END" if data_cases else "CAST(NULL AS JSON)"
        metadata = "CAST(metadata_json AS JSON)" if "metadata_json" in columns else "CAST(NULL AS JSON)"
        self.con.execute(
            f"CREATE OR REPLACE TEMP VIEW events AS SELECT {_ENVELOPE_SELECT}, {metadata} AS metadata, "
            f"CAST({data} AS JSON) AS data, payload FROM _all"
        )
        statements: list[str] = []  # run as one batch: one round trip for many views
        self._empty = {}
        taken = set(_RESERVED)
        view_names: dict[str, str] = {}
        for event_type, fields in typed.items():
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
            names = {name for name, _, _ in fields}
            envelope = [e for e in _ENVELOPE if e[0] not in names and e[0] != "event_type"]
            if event_type in present:
                columns_sql = [expr if expr == name else f"{expr} AS {name}" for name, expr, _ in envelope]
                columns_sql += [f"{expr} AS {quote(name)}" for name, expr, _ in fields]
                select = ", ".join(columns_sql)
                statements.append(
                    f"CREATE OR REPLACE TEMP VIEW {quote(view)} AS SELECT {select} "
                    f"FROM _all WHERE event_type = {literal(event_type)}"
                )
            else:
                columns_sql = [f"CAST(NULL AS {sql_type}) AS {quote(name)}" for name, _, sql_type in envelope]
                columns_sql += [f"CAST(NULL AS {sql_type}) AS {quote(name)}" for name, _, sql_type in fields]
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
    def _typed_fields(
        columns: dict[str, pa.DataType], classes: dict[str, type[Event]]
    ) -> dict[str, list[tuple[str, str, str]]]:
        """Per event type: (field, SQL expression, SQL type) for each field."""
        typed: dict[str, list[tuple[str, str, str]]] = {}
        for event_type, cls in classes.items():
            try:
                schema = schema_of(cls)
            except SerializationError:
                continue  # a class no event of which can be stored has no view (append names the problem)
            fields = []
            declared = declared_digits(cls)
            for name in schema.names:
                arrow_type, kind = arrow_type_for(schema.hints[name], declared.get(name))
                col = column_name(event_type, name)
                sql_type = "JSON" if kind == "json" else "INTERVAL" if kind == "micros" else _duck_type(arrow_type)
                if kind == "decimal":
                    target = decimal_column(event_type, name, declared.get(name, DEFAULT_DIGITS))
                    expr = _decimal_expr(event_type, name, target, sql_type, columns)
                elif col not in columns:
                    expr = f"CAST(NULL AS {sql_type})"
                elif kind == "micros":
                    expr = f"to_microseconds(CAST({quote(col)} AS BIGINT))"
                else:
                    expr = f"CAST({quote(col)} AS {sql_type})"
                fields.append((name, expr, sql_type))
            typed[event_type] = fields
        # Types this process has no class for still get views from the columns on disk.
        seen: set[str] = set()
        for col, arrow_type in columns.items():
            if col in ENVELOPE.names or col == "metadata_json" or "." not in col:
                continue
            field_col = _field_column(col)
            event_type, name = field_col.rsplit(".", 1)
            if event_type in classes or field_col in seen:
                continue
            seen.add(field_col)
            stored = _stored_decimals(event_type, name, columns)
            if col == field_col and not pa.types.is_decimal(arrow_type):
                expr, sql_type = quote(col), _duck_type(arrow_type)
            elif stored == [field_col] and exact_text_column(event_type, name) not in columns:
                expr, sql_type = quote(col), _duck_type(arrow_type)  # as stored
            else:  # a Decimal field with several columns, or values kept as exact text
                target = field_col if field_col in columns else stored[0] if stored else field_col
                sql_type = _duck_type(columns[target]) if target in columns else str(DEFAULT_DIGITS)
                expr = _decimal_expr(event_type, name, target, sql_type, columns)
            typed.setdefault(event_type, []).append((name, expr, sql_type))
        return typed

    def close(self) -> None:
        self.con.close()
