"""The lake's ``payload_json`` column, built in DuckDB from a data file's typed columns.

Decoding each event's CBOR and encoding it as JSON in Python costs about 5 µs an event (most
of a publish). The typed columns of a data file already hold the fields, so most rows' JSON is
one vectorised ``json_object`` per event type. A row takes that path only when its columns
give the same JSON values as its payload:

* its type has a class here, whose fields are exactly the type's columns in the file, and the
  row's payload and columns both hold the class's version (no upcaster between them);
* every field's column is not null (a null may be a None or a value that did not fit) and
  of a kind whose JSON is the payload's: booleans, integers, finite floats, text, UUIDs,
  dates, UTC times, Decimals (their exact value; the column's trailing zeros are trimmed, so
  ``1.50`` reads ``1.5``) and nested values of those (the column holds their JSON already).

Other rows (types with no class, whose columns are inferred per file; bytes, enums, sets,
durations; None values; undecoded rows) are decoded in Python, as before.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import typing
import uuid
from datetime import date, datetime
from decimal import Decimal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from eventador.codec import decode_value, schema_of, unwrap_optional
from eventador.digits import DEFAULT_DIGITS, declared_digits
from eventador.errors import SerializationError
from eventador.messages import Event
from eventador.store.columns import arrow_type_for, decimal_column
from eventador.store.typed_sql import columns_version, field_column, literal, quote

__all__ = ["payload_json"]

_LEAVES = (str, int, float, bool, Decimal, datetime, date, uuid.UUID, type(None))
_CONTAINERS = (list, tuple, dict)
_UNREAD = frozenset({"payload", "metadata", "metadata_json", "event_id", "stream_id", "stream_type"})
_local = threading.local()  # each publisher thread's DuckDB connection


def payload_json(table: pa.Table, classes: dict[str, type[Event]]) -> pa.Array:
    """The JSON text of each row's payload of `table` (a data file's rows): from the typed
    columns where they hold it (see the module's doc), from the CBOR payload elsewhere."""
    columns = {f.name: f.type for f in table.schema}
    present = pc.unique(table.column("event_type")).to_pylist()
    cases = [case for t in present if t in classes and (case := _case(t, classes[t], columns)) is not None]
    if not cases:
        return _decoded(table.column("payload"))
    con = _connection()
    needed = [c for c in table.column_names if c not in _UNREAD]  # Arrow hands DuckDB every column it is given
    con.register("_rows", table.select(needed))
    try:
        built = con.sql(f"SELECT CASE {' '.join(cases)} END AS j FROM _rows").to_arrow_table().column("j")
    except duckdb.Error:  # a value DuckDB refuses (a NaN in nested JSON text): never stall the lake
        return _decoded(table.column("payload"))
    finally:
        con.unregister("_rows")
    built = built.combine_chunks() if isinstance(built, pa.ChunkedArray) else built
    missing = pc.and_(pc.is_null(built), pc.is_valid(table.column("payload")))
    if not pc.any(missing).as_py():
        return built.cast(pa.string())
    rows = pc.indices_nonzero(missing)
    texts = built.to_pylist()
    for i, text in zip(rows.to_pylist(), _decoded(table.column("payload").take(rows)).to_pylist(), strict=True):
        texts[i] = text
    return pa.array(texts, pa.string())


def _connection() -> duckdb.DuckDBPyConnection:
    """This thread's DuckDB connection (opening one costs about 15 ms: more than a query)."""
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect(config={"threads": 1})
        con.execute("SET TimeZone = 'UTC'")  # times print in UTC, as the payload's do
    return con


def _decoded(payloads: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Each CBOR payload as JSON text, decoded in Python (values JSON has no type for as text)."""
    # One encoder for every row: json.dumps(default=...) would build one per call (twice the time).
    encode = json.JSONEncoder(default=str).encode
    return pa.array([None if raw is None else encode(decode_value(raw)) for raw in payloads.to_pylist()], pa.string())


def _case(event_type: str, cls: type[Event], columns: dict[str, pa.DataType]) -> str | None:
    """The ``WHEN ... THEN json_object(...)`` of `event_type`'s rows whose columns give their
    JSON, or None when no row of it can (a field of another kind, columns of another class)."""
    try:
        schema = schema_of(cls)
    except SerializationError:
        return None
    stored = {field_column(c).rpartition(".")[2] for c in columns if field_column(c).rpartition(".")[0] == event_type}
    if stored != set(schema.names):
        return None
    digits = declared_digits(cls)
    pairs, conditions = [], []
    for name in schema.names:
        hint = schema.hints[name]
        arrow_type, kind = arrow_type_for(hint, digits.get(name))
        column = decimal_column(event_type, name, digits.get(name, DEFAULT_DIGITS)) if kind == "decimal" else None
        column = column or f"{event_type}.{name}"
        if column not in columns or columns[column] != arrow_type:
            return None
        value = _value(quote(column), kind, unwrap_optional(hint)[0], arrow_type)
        if value is None:
            return None
        pairs.append(f"{literal(name)}, {value}")
        conditions.append(f"{quote(column)} IS NOT NULL")
        if pa.types.is_floating(arrow_type):
            conditions.append(f"isfinite({quote(column)})")
    version = cls.schema_version
    rows = [f"event_type = {literal(event_type)}", f"coalesce(schema_version, 1) = {version}"]
    rows.append(f"{columns_version(columns)} = {version}")
    return f"WHEN {' AND '.join(rows + conditions)} THEN json_object({', '.join(pairs)})"


def _value(column: str, kind: str, hint: object, arrow_type: pa.DataType) -> str | None:
    """The SQL of a field's JSON value from its column, or None when it is not the payload's."""
    if kind == "decimal":  # the exact value's text: the column's scale adds trailing zeros
        text = f"CAST({column} AS VARCHAR)"
        return f"CASE WHEN contains({text}, '.') THEN rtrim(rtrim({text}, '0'), '.') ELSE {text} END"
    if kind == "uuid":
        return column
    if kind == "json":
        return f"CAST({column} AS JSON)" if _json_as_payload(hint) else None
    if kind != "plain" or pa.types.is_binary(arrow_type):
        return None  # bytes print as Python's repr
    if pa.types.is_timestamp(arrow_type):  # as Python's str of a UTC time
        seconds = f"strftime({column}, '%Y-%m-%d %H:%M:%S')"
        micros = f"CASE WHEN microsecond({column}) % 1000000 = 0 THEN '' ELSE strftime({column}, '.%f') END"
        return f"{seconds} || {micros} || '+00:00'"
    return column


def _json_as_payload(hint: object) -> bool:
    """True when a nested field's column JSON is its payload's JSON: containers that JSON has
    (lists, tuples, dicts, dataclasses) of values whose text both write alike (no sets, bytes,
    enums or durations, whose payload JSON is Python's text of them; no ``Any``)."""
    inner, _ = unwrap_optional(hint)
    origin = typing.get_origin(inner) or inner
    if dataclasses.is_dataclass(origin) and isinstance(origin, type):
        try:
            hints = typing.get_type_hints(origin)
        except Exception:  # a forward reference that does not resolve here
            return False
        return all(_json_as_payload(h) for h in hints.values())
    args = typing.get_args(inner)
    if origin in _CONTAINERS:
        return bool(args) and all(a is Ellipsis or _json_as_payload(a) for a in args)
    return isinstance(origin, type) and issubclass(origin, _LEAVES) and not issubclass(origin, bytes)
