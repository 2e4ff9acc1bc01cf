"""The columnar layout of events: envelope columns, and typed payload columns per event type.

The CBOR ``payload`` column is the truth (exact, schema-free). Beside it, every
field of a registered event type gets a real typed column named
``"<Type>.<field>"``, so SQL aggregates run in DuckDB without a Python call
per row; the typed views rename them back to plain field names.

A Decimal field's column is DECIMAL(p, s): its declared ``Digits`` (which append
checks), else ``DEFAULT_DIGITS``, DECIMAL(38, 12). A column keeps one type in every
file (DuckDB reads the files as one table, and would round values to a common type),
so declared digits other than the default name theirs: ``"<Type>.<field>:DECIMAL(18,2)"``.
A value the column cannot hold exactly is never rounded: its typed cell is null and the
exact digits go to a text column beside it, ``"<Type>.<field>:exact"`` (made only in
files that need it), which the typed view turns into an error naming the field.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
import uuid
import warnings
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from eventador.codec import schema_of, unwrap_optional
from eventador.digits import DEFAULT_DIGITS, Digits, declared_digits
from eventador.errors import SerializationError
from eventador.messages import Event, UnknownEvent

__all__ = [
    "ENVELOPE",
    "arrow_type_for",
    "data_columns",
    "decimal_column",
    "exact_text_column",
    "typed_columns",
    "uniform_array",
]

TIMESTAMP = pa.timestamp("us", tz="UTC")
DECIMAL = pa.decimal128(DEFAULT_DIGITS.precision, DEFAULT_DIGITS.scale)

ENVELOPE = pa.schema(
    [
        ("position", pa.int64()),
        ("stream_id", pa.string()),
        ("version", pa.int64()),
        ("event_type", pa.string()),
        ("schema_version", pa.int16()),  # the event class's version when written (eventador.upcasting)
        ("columns_version", pa.int16()),  # the version the typed columns hold (see HotBuffer._typed_events)
        ("event_id", pa.binary(16)),
        ("recorded_at", TIMESTAMP),
        # Null when it equals recorded_at: most events, and a column of nulls costs nothing.
        ("occurred_at", TIMESTAMP),
        ("stream_type", pa.string()),
        ("metadata", pa.binary()),  # CBOR, exact
        ("metadata_json", pa.string()),  # the same as JSON, for SQL
        ("payload", pa.binary()),
    ]
)


def arrow_type_for(annotation: Any, digits: Digits | None = None) -> tuple[pa.DataType, str]:
    """The Arrow type of a typed column, and how values are prepared ("plain", "decimal",
    "uuid", "enum", "json"). A Decimal's column has the field's declared `digits`, if any."""
    inner, _ = unwrap_optional(annotation)
    origin = typing.get_origin(inner) or inner
    if origin is bool:
        return pa.bool_(), "plain"
    if origin is int:
        return pa.int64(), "plain"
    if origin is float:
        return pa.float64(), "plain"
    if origin is str:
        return pa.string(), "plain"
    if origin is bytes:
        return pa.binary(), "plain"
    if origin is Decimal:
        return (DECIMAL if digits is None else pa.decimal128(digits.precision, digits.scale)), "decimal"
    if origin is uuid.UUID:
        return pa.string(), "uuid"
    if origin is datetime:
        return TIMESTAMP, "plain"
    if origin is date:
        return pa.date32(), "plain"
    if origin is timedelta:
        # Microseconds: Parquet has no duration type, and DuckDB reads Arrow durations
        # and Parquet integers differently. The views turn it into an INTERVAL.
        return pa.int64(), "micros"
    if isinstance(origin, type) and issubclass(origin, enum.Enum):
        return pa.string(), "enum"
    return pa.string(), "json"


def _prepare(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "uuid":
        return str(value)
    if kind == "micros":
        return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if kind == "enum":
        return str(value.value) if isinstance(value, enum.Enum) else str(value)
    if kind == "json":
        return json.dumps(_jsonable(value), default=str)
    return value


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (Decimal, uuid.UUID, datetime, date, timedelta)):
        return str(value)
    return value


_EXACT = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), bytes: pa.binary()}


def exact_columns(cls: type[Event]) -> dict[str, pa.DataType] | None:
    """Field -> Arrow type when every field's typed column holds its value exactly, else None.

    Then reading can build events from the typed columns and skip CBOR decoding.
    Optional fields are excluded: a null might also stand for a value that did not fit,
    and so are Decimals: a column gives them its own scale (``100.00`` for ``100``).
    """
    cached = cls.__dict__.get("__eventador_exact__", False)
    if cached is not False:
        return typing.cast("dict[str, pa.DataType] | None", cached)
    try:
        schema = schema_of(cls)
    except SerializationError:
        return None  # no event of a class the codec refuses is stored (append names the problem)
    plan: dict[str, pa.DataType] | None = {}
    for name in schema.names:
        arrow_type = _EXACT.get(schema.hints[name])
        if arrow_type is None or plan is None:
            plan = None
            break
        plan[name] = arrow_type
    type.__setattr__(cls, "__eventador_exact__", plan)
    return plan


def column_name(event_type: str, field: str) -> str:
    return f"{event_type}.{field}"


EXACT_TEXT = ":exact"


def exact_text_column(event_type: str, field: str) -> str:
    """The text column beside a Decimal field's typed columns: the exact digits of the values
    the typed column cannot hold (null in every other row)."""
    return column_name(event_type, field) + EXACT_TEXT


def decimal_column(event_type: str, field: str, digits: Digits) -> str:
    """The typed column of a Decimal field of these digits: ``"<Type>.<field>"`` for the
    default, ``"<Type>.<field>:DECIMAL(18,2)"`` for others (one name, one type)."""
    name = column_name(event_type, field)
    return name if digits == DEFAULT_DIGITS else f"{name}:DECIMAL({digits.precision},{digits.scale})"


def typed_columns(
    event_types: Sequence[str], events: Sequence[Event | None], classes: dict[str, type[Event]]
) -> dict[str, pa.Array]:
    """Typed payload columns: for each event type, one column per field, null in other rows.

    `events[i]` is the typed instance of row i. Types with a class in `classes`
    get columns from its annotations; others from their data (``UnknownEvent``).
    A value that does not fit its column (an int beyond 64 bits) becomes null
    with a warning: the CBOR payload still holds it exactly.
    Costs one pass over each type's own rows per field, plus one Arrow scatter.
    """
    def build(event_type: str, rows: list[int]) -> dict[str, pa.Array]:
        mine = [events[i] for i in rows]
        if event_type in classes:
            return _class_columns(event_type, classes[event_type], mine)
        return _inferred_columns(event_type, mine)

    return _by_type(event_types, build)


def data_columns(
    event_types: Sequence[str],
    data: dict[str, list[Any] | pa.Array],
    classes: dict[str, type[Event]],
    decode: Callable[[int], Event],
) -> dict[str, pa.Array]:
    """Typed payload columns for rows whose payloads are given as columns (bulk imports).

    The same columns ``typed_columns`` makes for the same events: per type, one per
    key with a value in that type's rows, typed from the values; types with a class
    get its columns (`decode(i)` makes row i's instance). A column given as an Arrow
    array is ``uniform_array`` of its values.

    A column whose values are of one plain type is typed once and masked per event
    type (one vectorised pass each); others are typed from each type's own rows.
    """
    kinds = pa.array(event_types, pa.string()).dictionary_encode()
    codes = kinds.indices.to_numpy(zero_copy_only=False)
    n = len(codes)
    uniform = {key: values if isinstance(values, pa.Array) else uniform_array(values) for key, values in data.items()}
    objects: dict[str, np.ndarray] = {}
    out: dict[str, pa.Array] = {}
    for code, event_type in enumerate(kinds.dictionary.to_pylist()):
        mine = codes == code
        rows = np.flatnonzero(mine)
        if event_type in classes:
            columns = _class_columns(event_type, classes[event_type], [decode(i) for i in rows.tolist()])
            out.update(_scatter(columns, rows, n))
            continue
        for key, values in data.items():
            full = uniform[key]
            if full is not None:
                columns = {column_name(event_type, key): full if len(rows) == n else _masked(full, mine)}
            else:
                if key not in objects:
                    objects[key] = _object_array(typing.cast(list[Any], values))
                columns = _scatter(_inferred_column(event_type, key, objects[key][rows]), rows, n)
            out.update((name, column) for name, column in columns.items() if column.null_count < n)
    return out


_UNIFORM = (str, int, float, bool, bytes, datetime, date)


def _masked(array: pa.Array, keep: np.ndarray) -> pa.Array:
    """`array` with nulls where `keep` is False: its own value buffers under a new validity
    bitmap (no copy of the values; Arrow leaves what a null slot points to unread)."""
    if array.offset:  # a slice: its values from position 0, so the new bitmap lines up
        array = pa.concat_arrays([array])
    if array.null_count:
        keep = keep & array.is_valid().to_numpy(zero_copy_only=False)
    validity = pa.array(keep, pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(array.type, len(array), [validity, *array.buffers()[1:]])


def uniform_array(values: Sequence[Any]) -> pa.Array | None:
    """The typed column ``_infer_array`` makes of `values`, when it makes the same type of
    every subset of them: all values (None aside) of one plain type (not Decimal, whose
    precision follows the values); else None."""
    kinds = set(map(type, values)) - {type(None)}
    if len(kinds) != 1 or kinds.pop() not in _UNIFORM:
        return None
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        return None  # an int beyond 64 bits, text with a lone surrogate: typed per event type
    if not _plain_scalar_type(array.type):
        return None
    return array.cast(TIMESTAMP) if pa.types.is_timestamp(array.type) else array


def _object_array(values: list[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values  # element by element: a list value stays one element
    return array


def _by_type(
    event_types: Sequence[str], build: Callable[[str, list[int]], dict[str, pa.Array]]
) -> dict[str, pa.Array]:
    """Each type's columns (from `build(type, its rows)`) spread over the full height:
    null where another type's row is. One Arrow scatter per column."""
    n = len(event_types)
    rows_by_type: dict[str, list[int]] = {}
    for i, t in enumerate(event_types):
        rows_by_type.setdefault(t, []).append(i)
    out: dict[str, pa.Array] = {}
    for t, rows in rows_by_type.items():
        out.update(_scatter(build(t, rows), np.asarray(rows, dtype=np.int64), n))
    return out


def _scatter(columns: dict[str, pa.Array], rows: np.ndarray, n: int) -> dict[str, pa.Array]:
    """Columns of the rows `rows` spread over `n` rows, null in the others (one Arrow take each)."""
    if len(rows) == n:
        return columns
    where = np.full(n, -1, dtype=np.int64)
    where[rows] = np.arange(len(rows), dtype=np.int64)
    scatter = pa.array(where, mask=where < 0)
    return {name: values.take(scatter) for name, values in columns.items()}


def _class_columns(event_type: str, cls: type[Event], events: list[Event | None]) -> dict[str, pa.Array]:
    schema = schema_of(cls)
    declared = declared_digits(cls)
    out: dict[str, pa.Array] = {}
    for name in schema.names:
        arrow_type, kind = arrow_type_for(schema.hints[name], declared.get(name))
        if kind == "decimal":
            values = [getattr(e, name, None) for e in events]
            out.update(_decimal_columns(event_type, name, declared.get(name, DEFAULT_DIGITS), values))
            continue
        if kind == "plain":
            values = [getattr(e, name, None) for e in events]
        else:
            values = [_prepare(kind, getattr(e, name, None)) for e in events]
        out[column_name(event_type, name)] = _to_array(values, arrow_type, column_name(event_type, name))
    return out


def _decimal_columns(event_type: str, field: str, digits: Digits, values: Sequence[Any]) -> dict[str, pa.Array]:
    """A Decimal field's column of type `digits`, and its exact text column when some value
    does not fit: one type per column name, whatever the values."""
    fitted = digits.fitted_all(values)
    out = {decimal_column(event_type, field, digits): pa.array(fitted, pa.decimal128(digits.precision, digits.scale))}
    if fitted.count(None) > sum(v is None for v in values):  # rare: values that need more digits
        texts = [str(v) if f is None and isinstance(v, Decimal) else None for v, f in zip(values, fitted, strict=True)]
        out[exact_text_column(event_type, field)] = pa.array(texts, pa.string())
    return out


def _inferred_columns(event_type: str, events: list[Event | None]) -> dict[str, pa.Array]:
    """Columns for events of a type with no class here (imported logs, other writers):
    one per key of their data, typed from the values (mixed values become text)."""
    datas = [e.data if isinstance(e, UnknownEvent) and isinstance(e.data, dict) else {} for e in events]
    keys: dict[str, None] = {}
    for data in datas:
        keys.update(dict.fromkeys(k for k in data if isinstance(k, str)))
    out: dict[str, pa.Array] = {}
    for key in keys:
        out.update(_inferred_column(event_type, key, [d.get(key) for d in datas]))
    return out


def _inferred_column(event_type: str, key: str, values: Sequence[Any] | np.ndarray) -> dict[str, pa.Array]:
    """The typed column of values of no declared type (``_infer_array``); decimals get the
    default Decimal column (Arrow would size each file's type to its own values)."""
    kinds = set(map(type, values)) - {type(None)}
    if Decimal not in kinds or not kinds <= {Decimal, int}:
        return {column_name(event_type, key): _infer_array(values)}
    exact = [v if isinstance(v, Decimal) or v is None else Decimal(v) for v in values]  # ints beside decimals
    return _decimal_columns(event_type, key, DEFAULT_DIGITS, exact)


def _infer_array(values: Sequence[Any] | np.ndarray) -> pa.Array:
    """A typed column for values of no declared type: Arrow's own inference when every
    value is a plain scalar (aware times only), else the values as JSON text."""
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        array = None
    if array is not None and _plain_scalar_type(array.type):
        if pa.types.is_timestamp(array.type):
            array = array.cast(TIMESTAMP)
        return array
    return pa.array([None if v is None else _prepare("json", v) for v in values], pa.string())


def _plain_scalar_type(arrow_type: pa.DataType) -> bool:
    if pa.types.is_timestamp(arrow_type):
        return arrow_type.tz is not None
    return any(
        check(arrow_type)
        for check in (pa.types.is_string, pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean,
                      pa.types.is_binary, pa.types.is_date, pa.types.is_decimal)
    )


def _to_array(values: list[Any], arrow_type: pa.DataType, name: str) -> pa.Array:
    try:
        return pa.array(values, type=arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
        kept = []
        for v in values:
            try:
                pa.array([v], type=arrow_type)
                kept.append(v)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
                kept.append(None)
        warnings.warn(
            f"column {name!r}: some values do not fit {arrow_type} and read as NULL in SQL "
            "(the events themselves keep them exactly)",
            stacklevel=2,
        )
        return pa.array(kept, type=arrow_type)
