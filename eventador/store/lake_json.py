"""The lake's ``payload_json`` column, built with Arrow compute from a data file's typed columns.

Decoding each event's CBOR and encoding it as JSON in Python costs about 5 µs an event (most
of a publish). The typed columns of a data file already hold the fields, so most rows' JSON is
a few vectorised text operations per event type (each field's text, joined between the keys).
A row takes that path only when its columns give the same JSON values as its payload:

* its type has a class here, whose fields are exactly the type's columns in the file, and the
  row's payload and columns both hold the class's version (no upcaster between them);
* every field's column is not null (a null may be a None or a value that did not fit) and
  of a kind whose JSON is the payload's: booleans, integers, finite floats, text (without
  control characters), UUIDs, dates, UTC times, Decimals (their exact value; the column's
  trailing zeros are trimmed, so ``1.50`` reads ``1.5``) and nested values of those (the
  column holds their JSON already, used where it has no NaN or Infinity).

Other rows (types with no class, whose columns are inferred per file; bytes, enums, sets,
durations; None values; undecoded rows) are decoded in Python, as before.
"""

from __future__ import annotations

import dataclasses
import json
import typing
import uuid
from datetime import date, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from eventador.codec import decode_value, schema_of, unwrap_optional
from eventador.digits import DEFAULT_DIGITS, declared_digits
from eventador.errors import SerializationError
from eventador.messages import Event
from eventador.store.columns import arrow_type_for, decimal_column
from eventador.store.typed_sql import field_column

__all__ = ["payload_json"]

_LEAVES = (str, int, float, bool, Decimal, datetime, date, uuid.UUID, type(None))
_CONTAINERS = (list, tuple, dict)


@dataclasses.dataclass(frozen=True)
class _Field:
    """One field of a type whose column gives its JSON value: its key and its column."""

    name: str
    column: str
    kind: str  # "plain", "decimal", "uuid" or "json" (arrow_type_for's)
    arrow_type: pa.DataType


def payload_json(table: pa.Table, classes: dict[str, type[Event]]) -> pa.Array:
    """The JSON text of each row's payload of `table` (a data file's rows): from the typed
    columns where they hold it (see the module's doc), from the CBOR payload elsewhere."""
    columns = {f.name: f.type for f in table.schema}
    built = pa.nulls(table.num_rows, pa.string())
    for event_type in pc.unique(table.column("event_type")).to_pylist():
        cls = classes.get(event_type)
        fields = _fields(event_type, cls, columns) if cls is not None else None
        if cls is None or fields is None:
            continue
        mask = _rows(table, event_type, cls.schema_version, fields)
        chosen, every = pc.sum(mask).as_py() or 0, len(mask)
        if chosen:
            rows = table.select([f.column for f in fields])
            # A value whose text is not the payload's (a tiny Decimal, a NaN in nested JSON) stays null here.
            texts = _objects(rows if chosen == every else rows.filter(mask), fields).combine_chunks()
            built = texts if chosen == every else pc.replace_with_mask(built, mask, texts)
    missing = pc.and_(pc.is_null(built), pc.is_valid(table.column("payload")))
    if not pc.any(missing).as_py():
        return built
    rows_missing = pc.indices_nonzero(missing)
    texts_all = built.to_pylist()
    decoded = _decoded(table.column("payload").take(rows_missing)).to_pylist()
    for i, text in zip(rows_missing.to_pylist(), decoded, strict=True):
        texts_all[i] = text
    return pa.array(texts_all, pa.string())


def _decoded(payloads: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Each CBOR payload as JSON text, decoded in Python (values JSON has no type for as text)."""
    # One encoder for every row: json.dumps(default=...) would build one per call (twice the time).
    encode = json.JSONEncoder(default=str).encode
    return pa.array([None if raw is None else encode(decode_value(raw)) for raw in payloads.to_pylist()], pa.string())


def _fields(event_type: str, cls: type[Event], columns: dict[str, pa.DataType]) -> list[_Field] | None:
    """The fields of `event_type` and their columns, when its columns give its rows' JSON; None
    when no row of it can (a field of another kind, columns of another class)."""
    try:
        schema = schema_of(cls)
    except SerializationError:
        return None
    stored = {field_column(c).rpartition(".")[2] for c in columns if field_column(c).rpartition(".")[0] == event_type}
    if stored != set(schema.names):
        return None
    digits = declared_digits(cls)
    fields = []
    for name in schema.names:
        hint = schema.hints[name]
        arrow_type, kind = arrow_type_for(hint, digits.get(name))
        column = decimal_column(event_type, name, digits.get(name, DEFAULT_DIGITS)) if kind == "decimal" else None
        column = column or f"{event_type}.{name}"
        if column not in columns or columns[column] != arrow_type:
            return None
        if kind == "json" and not _json_as_payload(unwrap_optional(hint)[0]):
            return None
        if kind not in ("plain", "decimal", "uuid", "json") or pa.types.is_binary(arrow_type):
            return None  # enums, durations; bytes print as Python's repr
        fields.append(_Field(name, column, kind, arrow_type))
    return fields


def _rows(table: pa.Table, event_type: str, version: int, fields: list[_Field]) -> pa.Array:
    """Which rows of `table` are `event_type`'s of `version`, with every field's column set."""
    one, names = pa.scalar(1, pa.int16()), table.column_names
    stored = [table.column(c) for c in ("columns_version", "schema_version") if c in names]
    payload_version = pc.coalesce(table.column("schema_version"), one) if "schema_version" in names else one
    conditions = [
        pc.equal(table.column("event_type"), event_type),
        pc.equal(payload_version, version),
        pc.equal(pc.coalesce(*stored, one) if stored else one, version),
    ]
    for field in fields:
        column = table.column(field.column)
        conditions.append(pc.is_valid(column))
        if pa.types.is_floating(field.arrow_type):
            conditions.append(pc.is_finite(column))
        elif field.kind == "plain" and pa.types.is_string(field.arrow_type):
            conditions.append(pc.utf8_is_printable(column))  # no control characters (JSON escapes them)
    mask = conditions[0]
    for condition in conditions[1:]:
        mask = pc.and_(mask, condition)
    mask = pc.fill_null(mask, False)
    return mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask


def _objects(rows: pa.Table, fields: list[_Field]) -> pa.ChunkedArray:
    """Each row's JSON object, from its fields' columns (null where a value's text is not its JSON)."""
    parts: list[object] = []
    pending = "{"  # the text between two values: keys, quotes, commas
    for field in fields:
        text, quoted = _value(rows.column(field.column), field)
        parts += [pending + json.dumps(field.name) + (':"' if quoted else ":"), text]
        pending = '",' if quoted else ","
    parts.append(pending[:-1] + "}")
    return pc.binary_join_element_wise(*parts, "")  # one pass for the whole object


def _value(column: pa.ChunkedArray, field: _Field) -> tuple[pa.ChunkedArray, bool]:
    """A field's JSON value from its column: its text, and whether JSON quotes it (a string)."""
    kind, arrow_type = field.kind, field.arrow_type
    if kind == "decimal":  # the exact value's text, without the column's trailing zeros
        text = column.cast(pa.string())
        if arrow_type.scale > 0:
            text = pc.utf8_rtrim(pc.utf8_rtrim(text, "0"), ".")
            # Arrow writes small values with an exponent (0E-12, 1E-7): zero is "0"; others are decoded.
            exponent = pc.match_substring(text, "E")
            if pc.any(exponent).as_py():
                text = pc.if_else(pc.equal(column, pa.scalar(0, arrow_type)), "0", text)
                text = pc.if_else(pc.match_substring(text, "E"), pa.scalar(None, pa.string()), text)
        return text, True
    if kind == "uuid":
        return column, True
    if kind == "json":  # the column's JSON text; NaN and Infinity are not JSON
        return pc.if_else(pc.match_substring_regex(column, "NaN|Infinity"), pa.scalar(None, pa.string()), column), False
    if pa.types.is_string(arrow_type):
        return pc.replace_substring(pc.replace_substring(column, "\\", "\\\\"), '"', '\\"'), True
    if pa.types.is_timestamp(arrow_type):  # as Python's str of a UTC time
        text = pc.strftime(column, format="%Y-%m-%d %H:%M:%S")
        return pc.binary_join_element_wise(pc.replace_substring_regex(text, r"\.000000$", ""), "+00:00", ""), True
    if pa.types.is_date32(arrow_type):
        return column.cast(pa.string()), True
    text = column.cast(pa.string())
    if pa.types.is_floating(arrow_type):  # Arrow writes 1.0 as "1": a float stays a float in JSON
        whole = pc.match_substring_regex(text, r"^-?[0-9]+$")
        text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
    return text, False


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
