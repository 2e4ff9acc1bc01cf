"""The SQL of one typed view: today's fields of an event class over every stored version.

A row's typed columns (``"<type>.<field>"``) hold the fields of one schema version of
its stored type: ``coalesce(columns_version, schema_version, 1)``, 1 in files written
before versions were recorded, 0 for a row that did not decode when it was flushed
(it has no typed columns). Rows whose columns hold the class's own version read them
as they are. Other rows read what the upcasters make of their columns
(``UpcasterRegistry.sql_sources``), then are fitted to the class as Python fits them:
a field still absent takes its default, a required one is an error. Each field is one
``CASE`` over (event type, version), so the view costs no Python call per row; where all
the rows a view reads hold one version (``Versions``, the usual case), it is that
version's one expression.

What SQL cannot compute is an error on the rows that need it, never a NULL: a field a
Python-only upcaster computes, a required field no version gives, a row with no
columns. DuckDB evaluates a ``CASE`` branch only on its own rows, so the other rows
of the view read normally, and a query that leaves the field out is not stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from eventador.codec import schema_of, unwrap_optional
from eventador.digits import DEFAULT_DIGITS, Digits, declared_digits
from eventador.errors import InvalidInputError
from eventador.messages import Event
from eventador.store.columns import arrow_type_for, column_name, decimal_column, exact_text_column
from eventador.upcasting import NeedsPython, SqlFields, SqlValue, sql_literal, upcasters

__all__ = ["COLUMNS_VERSION", "TypedField", "TypedView", "Versions", "duck_type", "literal", "quote", "typed_view"]

COLUMNS_VERSION = "_cv"
"""The column the typed views add over ``_all``: the schema version a row's typed columns hold."""

_DUCK_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.binary(): "BLOB",
    pa.date32(): "DATE",
}


def duck_type(arrow_type: pa.DataType) -> str:
    """The DuckDB type of a typed column of `arrow_type`."""
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ"
    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL({arrow_type.precision}, {arrow_type.scale})"
    return _DUCK_TYPES.get(arrow_type, "VARCHAR")


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def columns_version(columns: dict[str, pa.DataType]) -> str:
    """The SQL of a row's columns version over `_all`, whichever envelope columns exist."""
    parts = [c for c in ("columns_version", "schema_version") if c in columns]
    return f"coalesce({', '.join(parts)}, 1)" if parts else "1"


@dataclass(frozen=True)
class TypedField:
    """One column of a typed view: its name, its SQL over ``_all`` (+ ``_cv``), its SQL type."""

    name: str
    expr: str
    sql_type: str
    own: str
    """The field read from the row's own column, with no upcasting (the ``events`` view's ``data``)."""


@dataclass(frozen=True)
class TypedView:
    """A typed view's fields and which rows of ``_all`` it shows."""

    fields: list[TypedField]
    where: str
    present: bool
    """False when no column the view reads exists yet (no event stored): the view is made empty."""
    versioned: bool
    """True when the SQL reads ``_cv`` (the view adds it over ``_all``)."""


@dataclass(frozen=True)
class _Field:
    name: str
    sql_type: str
    micros: bool  # a timedelta: the column holds microseconds, the view shows an INTERVAL
    default: str | NeedsPython | None  # an SQL literal, why SQL has none, or None: no default
    nullable: bool  # None is a value of the field (a default of None, or an Optional annotation)
    decimal_column: str | None = None  # a Decimal field: its typed column for the digits declared now

    @property
    def raw_type(self) -> str:
        return "BIGINT" if self.micros else self.sql_type

    def show(self, expr: str) -> str:
        """`expr` (a raw value) as the view shows it."""
        if self.micros:
            return f"to_microseconds(CAST({expr} AS BIGINT))"
        return f"CAST({expr} AS {self.sql_type})"


@dataclass(frozen=True)
class Versions:
    """What the sources say about the columns versions their rows hold."""

    uniform: int | None = None
    """The one version of every row of the store, when there is one (statistics show it)."""
    by_type: dict[str, frozenset[int]] | None = None
    """Else, where known: the versions each stored type's rows hold."""

    def of(self, event_types: set[str]) -> int | None:
        """The one version every row of `event_types` holds, or None (several, or unknown)."""
        if self.uniform is not None or self.by_type is None:
            return self.uniform
        found = set().union(*(self.by_type.get(t, frozenset()) for t in event_types))
        return found.pop() if len(found) == 1 else None


def typed_view(
    event_type: str, cls: type[Event], columns: dict[str, pa.DataType], versions: Versions = Versions()
) -> TypedView:
    """The SQL of the typed view of `event_type` (class `cls`) over the columns `columns`.

    `versions`: when every row the view reads holds one columns version, each field is
    the one expression of that version (the CASE over versions costs about a quarter of
    a plain sum's speed).

    Raises:
        SerializationError: the class has a field no column can hold (it has no view).
    """
    schema = schema_of(cls)

    def column(stored_type: str, name: str) -> str | None:
        col = column_name(stored_type, name)
        return quote(col) if col in columns else stored_decimal(stored_type, name, columns)

    sources = upcasters.sql_sources(event_type, column)
    digits = declared_digits(cls)
    plan = _Plan(
        event_type,
        cls.schema_version,
        [
            _field(event_type, name, schema.hints[name], schema.defaults.get(name), digits.get(name))
            for name in schema.names
        ],
        sources,
        {u.from_version for u in upcasters if u.event_type == event_type},
        column,
        columns,
    )
    stored_types = {event_type, *(stored for stored, _, _, _ in sources)}
    present = not plan.fields or any(c.startswith(f"{t}.") for c in columns for t in stored_types)
    uniform = versions.of(stored_types)
    if uniform is not None and uniform > 0:
        fields, where = plan.one_version(uniform)
        return TypedView(fields, where, present, versioned=False)
    fields, where = plan.every_version()
    return TypedView(fields, where, present, versioned=True)


@dataclass(frozen=True)
class _Plan:
    """What one typed view reads: the class's fields, and the stored (type, version) pairs
    the upcasters bring to it (`sources`), or take away from it (`registered` versions)."""

    event_type: str
    version: int
    fields: list[_Field]
    sources: list[tuple[str, int, str | None, SqlFields]]
    registered: set[int]
    column: Callable[[str, str], str | None]
    columns: dict[str, pa.DataType]

    @property
    def own_ok(self) -> bool:
        """True when rows at the class's version read their own columns: they hold the decoded
        event, unless an upcaster leads that version away (then they hold the stored fields)."""
        return self.version not in self.registered or any(
            (s, v) == (self.event_type, self.version) for s, v, _, _ in self.sources
        )

    def own(self, f: _Field) -> str:
        """The field read from the row's own column, which holds the class's version."""
        if f.decimal_column is not None:
            return decimal_expr(self.event_type, f.name, f.decimal_column, f.sql_type, self.columns)
        col = self.column(self.event_type, f.name)
        return f.show(col) if col is not None else f"CAST(NULL AS {f.sql_type})"

    def fitted(self, version: int | None) -> list[str]:
        """Each field of the type's own rows at `version` (None: the row's), no upcaster applied."""
        stored = SqlFields(self.event_type, self.column)
        return [_fitted(f, stored.get(f.name), self.event_type, version) for f in self.fields]

    def upcast(self, values: SqlFields, stored_type: str, version: int) -> list[str]:
        """Each field of rows stored as (`stored_type`, `version`), the upcasters' SQL `values`."""
        return [_fitted(f, values.get(f.name), stored_type, version) for f in self.fields]

    def typed_fields(self, exprs: list[str]) -> list[TypedField]:
        return [TypedField(f.name, e, f.sql_type, self.own(f)) for f, e in zip(self.fields, exprs, strict=True)]

    def one_version(self, version: int) -> tuple[list[TypedField], str]:
        """The fields and rows when every row read holds `version`: one expression per
        stored type, and no ``_cv``."""
        parts: list[tuple[str, str | None, list[str]]] = []  # (stored type, its condition, values)
        own_ok = self.own_ok
        if version == self.version and own_ok:
            parts.append((self.event_type, None, [self.own(f) for f in self.fields]))
        for stored, stored_version, condition, values in self.sources:
            if stored_version == version and not (own_ok and (stored, version) == (self.event_type, self.version)):
                parts.append((stored, condition, self.upcast(values, stored, version)))
        if version != self.version and version not in self.registered:
            parts.append((self.event_type, None, self.fitted(version)))
        conditions = [
            f"event_type = {literal(stored)}" + ("" if condition is None else f" AND ({condition})")
            for stored, condition, _ in parts
        ]
        exprs = []
        for i, f in enumerate(self.fields):
            if len(parts) == 1:
                exprs.append(parts[0][2][i])
            elif parts:
                pairs = zip(conditions, parts, strict=True)
                exprs.append(f"CASE {' '.join(f'WHEN {c} THEN {values[i]}' for c, (_, _, values) in pairs)} END")
            else:
                exprs.append(f"CAST(NULL AS {f.sql_type})")
        where = " OR ".join(f"({c})" for c in conditions) if conditions else "FALSE"
        return self.typed_fields(exprs), where

    def every_version(self) -> tuple[list[TypedField], str]:
        """The fields and rows over rows of any version: a CASE per field on (type, ``_cv``)."""
        own_rows = f"event_type = {literal(self.event_type)}"
        renamed = any(stored != self.event_type for stored, _, _, _ in self.sources)
        member = []
        branches: list[tuple[str, list[str]]] = []  # (condition, one SQL value per field)
        for stored, stored_version, condition, values in self.sources:
            rows = f"event_type = {literal(stored)} AND {COLUMNS_VERSION} = {stored_version}"
            if condition is not None:
                rows = f"{rows} AND ({condition})"
            branches.append((rows, self.upcast(values, stored, stored_version)))
            member.append(f"({rows})")
            undecoded = f"{COLUMNS_VERSION} = 0 AND coalesce(schema_version, 1) = {stored_version}"
            member.append(f"(event_type = {literal(stored)} AND {undecoded})")
        if self.registered:  # the type's rows at those versions are where the upcasters lead them (`member`)
            start = f"CASE WHEN {COLUMNS_VERSION} = 0 THEN coalesce(schema_version, 1) ELSE {COLUMNS_VERSION} END"
            kept = f"{start} NOT IN ({', '.join(map(str, sorted(self.registered)))})"
            where = " OR ".join([f"({own_rows} AND {kept})", *member])
        else:
            where = " OR ".join([own_rows, *member])
        # Rows of the type at a version no upcaster starts from: their own columns, fitted (ELSE).
        others = self.fitted(None)
        own_version = f"{COLUMNS_VERSION} = {self.version}" + (f" AND {own_rows}" if renamed else "")
        exprs = []
        for i, f in enumerate(self.fields):
            whens = [f"WHEN {own_version} THEN {self.own(f)}"]
            whens += [f"WHEN {rows} THEN {values[i]}" for rows, values in branches]
            whens.append(f"WHEN {COLUMNS_VERSION} = 0 THEN {_undecoded()}")
            exprs.append(f"CASE {' '.join(whens)} ELSE {others[i]} END")
        return self.typed_fields(exprs), where


def _field(event_type: str, name: str, hint: object, default_factory: object, digits: Digits | None) -> _Field:
    arrow_type, kind = arrow_type_for(hint, digits)
    sql_type = "JSON" if kind == "json" else "INTERVAL" if kind == "micros" else duck_type(arrow_type)
    default: str | NeedsPython | None = None
    nullable = unwrap_optional(hint)[1]
    if callable(default_factory):
        value = default_factory()
        nullable = nullable or value is None
        try:
            default = sql_literal(value)
        except InvalidInputError:
            default = NeedsPython(f"its default {value!r}, which has no SQL literal")
    decimal = decimal_column(event_type, name, digits or DEFAULT_DIGITS) if kind == "decimal" else None
    return _Field(name, sql_type, kind == "micros", default, nullable, decimal)


_VERSION = "\0version\0"  # where an error's text names the stored version


def _error(stored_type: str, version: int | None, text: str) -> str:
    """An SQL error raised on the rows that reach it, worded like ``SchemaError`` (with the
    position); `version` None: the row's own (``_cv``). `text` may name it as ``_VERSION``."""
    shown = literal(str(version)) if version is not None else COLUMNS_VERSION
    head = f"{literal(stored_type + ' (schema version ')} || {shown} || ') at position ' || position"
    body = f" || {shown} || ".join(literal(part) for part in (": " + text).split(_VERSION))
    return f"error({head} || {body})"


def _undecoded() -> str:
    return (
        "error(event_type || ' (schema version ' || coalesce(schema_version, 1) || ') at position ' || position || "
        + literal(
            ": the event did not fit its class when it was flushed, so SQL has no typed columns for it; "
            "read_all() decodes it (with the upcasters registered since) or names what is missing"
        )
        + ")"
    )


def _fitted(f: _Field, value: SqlValue, stored_type: str, version: int | None) -> str:
    """The SQL of field `f` for rows stored as (`stored_type`, `version`) whose fields, after the
    upcasters, are `value`: fitted to the class as Python fits them, shown in the view's type.

    A NULL column cannot tell a stored None from a field the old version did not have: it
    reads as absent (as ``Add`` does) unless None is a value of the field.
    """
    def fails(text: str) -> str:
        return _error(stored_type, version, f"field {f.name!r}: {text}")

    if isinstance(value, NeedsPython):
        return fails(
            f"SQL cannot compute it: it comes from {value.reason}, which runs only in Python "
            "(read these events with read_all() or read_stream(), or give the step an sql= form)"
        )
    missing = (
        f"the stored event has no value for this required field and no upcaster gives one "
        f"(register one with ev.upcaster({stored_type!r}, {_VERSION}, ...), "
        "or give the field a default)"
    )
    if isinstance(f.default, NeedsPython):
        default_sql: str | None = None
        no_default = fails(f"SQL cannot give it {f.default.reason}: read these events with read_all()")
    elif f.default is not None:
        default_sql = f"CAST({f.default} AS {f.raw_type})"
        no_default = default_sql
    else:
        default_sql = None
        no_default = fails(missing)
    if value is None:
        return f.show(no_default)
    raw = f"CAST({value} AS {f.raw_type})"
    if default_sql is not None and f.default != "NULL":
        return f.show(f"coalesce({raw}, {default_sql})")
    if f.nullable:
        return f.show(raw)
    return f.show(f"CASE WHEN {raw} IS NULL THEN {no_default} ELSE {raw} END")


# -- Decimal fields: exact values, or an error, never a rounded number ---------------------------
#
# A Decimal field's typed column is "<Type>.<field>" (DECIMAL(38, 12), the default) or
# "<Type>.<field>:DECIMAL(p,s)" for declared digits (ev.Digits): one name, one type in
# every file. A value its column cannot hold is null there, its exact digits in the text
# column "<Type>.<field>:exact" beside it (see eventador.store.columns).


def field_column(col: str) -> str:
    """The ``"<Type>.<field>"`` a typed column belongs to (``"T.f:DECIMAL(18,2)"`` and
    ``"T.f:exact"`` belong to ``"T.f"``; field names hold no ``:``)."""
    head, _, rest = col.rpartition(".")
    return f"{head}.{rest.partition(':')[0]}"


def stored_decimals(event_type: str, field: str, columns: dict[str, pa.DataType]) -> list[str]:
    """The typed columns a field has in the sources: ``"<Type>.<field>"``, and one per other
    digits it was declared with (``"<Type>.<field>:DECIMAL(18,2)"``)."""
    base = column_name(event_type, field)
    return [c for c in columns if c == base or c.startswith(base + ":DECIMAL(")]


def decimal_expr(event_type: str, field: str, target: str, sql_type: str, columns: dict[str, pa.DataType]) -> str:
    """A Decimal field's value in its typed view, of `sql_type` (whose column is `target`):
    exact, or an error when a query reads a row whose value `sql_type` cannot hold, never a
    rounded number. Just the column when it is the field's only one (fast sums)."""
    stored = stored_decimals(event_type, field, columns)
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
            back = f"TRY_CAST(TRY_CAST({quote(col)} AS {sql_type}) AS {duck_type(columns[col])})"
            why = f", which {sql_type} (the digits declared now) cannot hold exactly"
            value = f"CASE WHEN {back} = {quote(col)} THEN {value} ELSE {error(quote(col), why)} END"
        whens.append(f"WHEN {quote(col)} IS NOT NULL THEN {value}")
    if text in columns:
        whens.append(f"WHEN {quote(text)} IS NOT NULL THEN {error(quote(text), _too_many_digits(field, sql_type))}")
    if not whens:
        return f"CAST(NULL AS {sql_type})"
    return f"CASE {' '.join(whens)} ELSE CAST(NULL AS {sql_type}) END"


def stored_decimal(event_type: str, field: str, columns: dict[str, pa.DataType]) -> str | None:
    """A Decimal field's stored value in any of its typed columns (for upcasters' SQL), or
    None when it has none."""
    stored = stored_decimals(event_type, field, columns)
    if not stored:
        return None
    return quote(stored[0]) if len(stored) == 1 else f"coalesce({', '.join(map(quote, stored))})"


def _too_many_digits(field: str, sql_type: str) -> str:
    return (
        f", which {sql_type} cannot hold exactly: its exact digits are in events.data->>'{field}' "
        f"(and read_all); for events appended from now on, declare digits that hold such values, "
        f"e.g. {field}: Annotated[Decimal, ev.Digits(38, 20)]"
    )


def data_value(event_type: str, field: str, expr: str, columns: dict[str, pa.DataType]) -> str:
    """A field's value in the ``events`` view's JSON. A Decimal is the JSON string of its exact
    digits (DuckDB reads a JSON number as a double), from the text column beside its typed
    columns when they could not hold it."""
    text = exact_text_column(event_type, field)
    parts = [quote(text)] if text in columns else []
    parts += [
        f"CAST({quote(c)} AS VARCHAR)"
        for c in stored_decimals(event_type, field, columns)
        if pa.types.is_decimal(columns[c])
    ]
    if not parts:
        return expr
    return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"
