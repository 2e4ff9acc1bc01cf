"""The lake table's schema: what a store's data file becomes when it is published (store/lake.py),
and what the lake reader turns back into the store's layout (store/lake_reader.py).

Engines other than eventador read the table, so its schema is stable and plain:

* the envelope (``LAKE_ENVELOPE``): ``shard`` (the partition: one writer's events), then the
  store's envelope columns, with ``occurred_at`` never null (the store's null means "same as
  ``recorded_at``") and ``event_id`` as plain binary; ``payload`` (CBOR, exact) and
  ``payload_json`` (the same as JSON text, values JSON has no type for as text; built from the
  typed columns where they hold the payload, store/lake_json.py);
* typed columns, one per event field, named ``<type>__<field>`` with every character outside
  ``[A-Za-z0-9_]`` made ``_`` (``bank.MoneyDeposited`` field ``amount`` ->
  ``bank_MoneyDeposited__amount``): dotted names break Spark and Iceberg. Decimal fields are
  DOUBLE, which every engine sums (Arrow's DECIMAL(38,12) sums overflow its precision, and Dask
  cannot sum decimals at all): exact digits are in ``payload_json``. Only plain scalar types are
  typed columns (booleans, integers, floats, text, dates, UTC timestamps); other fields are in
  ``payload_json`` only. A column keeps the type it was first published with: a later value of
  another type is cast when it fits, else left to ``payload_json``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from eventador.store.columns import ENVELOPE, EXACT_TEXT
from eventador.store.lake_json import payload_json as build_payload_json

if TYPE_CHECKING:
    from eventador.messages import Event

__all__ = [
    "LAKE_ENVELOPE",
    "SHARD",
    "is_lake_column",
    "lake_column_name",
    "lake_rows",
    "matches_table",
    "to_lake",
    "to_store_layout",
    "with_lake_columns",
    "without_lake_columns",
]

SHARD = "shard"
_TIMESTAMP = pa.timestamp("us", tz="UTC")
LAKE_ENVELOPE = pa.schema(
    [
        (SHARD, pa.string()),
        ("position", pa.int64()),
        ("stream_id", pa.string()),
        ("version", pa.int64()),
        ("event_type", pa.string()),
        ("schema_version", pa.int16()),
        ("event_id", pa.binary()),
        ("recorded_at", _TIMESTAMP),
        ("occurred_at", _TIMESTAMP),
        ("stream_type", pa.string()),
        ("metadata", pa.binary()),
        ("metadata_json", pa.string()),
        ("payload", pa.binary()),
        ("payload_json", pa.string()),
    ]
)
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
PAYLOAD_JSON = "payload_json"


def is_lake_column(name: str) -> bool:
    """True for a column only the lake reads: ``payload_json`` and the typed ``<type>__<field>``
    (the store's typed columns always hold a dot, the lake's never do)."""
    return name == PAYLOAD_JSON or ("__" in name and "." not in name)


def lake_column_name(event_type: str, field: str) -> str:
    """The lake's name of a typed column: ``bank.MoneyDeposited`` + ``amount`` -> ``bank_MoneyDeposited__amount``."""
    return f"{_UNSAFE.sub('_', event_type)}__{_UNSAFE.sub('_', field)}"


def _lake_type(arrow_type: pa.DataType) -> pa.DataType | None:
    """The lake column's type for a store column of `arrow_type`; None: not a typed column there."""
    if pa.types.is_decimal(arrow_type):
        return pa.float64()
    if pa.types.is_dictionary(arrow_type):
        return _lake_type(arrow_type.value_type)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pa.string()
    if pa.types.is_timestamp(arrow_type):
        return _TIMESTAMP if arrow_type.tz is not None else None  # naive: Delta's timestamp_ntz feature
    plain = (pa.types.is_boolean, pa.types.is_signed_integer, pa.types.is_floating, pa.types.is_date32)
    return arrow_type if any(is_type(arrow_type) for is_type in plain) else None


def to_lake(
    table: pa.Table, shard: str, published: pa.Schema | None = None, *, payload_json: bool = True,
    classes: dict[str, type[Event]] | None = None,
) -> pa.Table:
    """The store's rows `table` (its data file's layout) in the lake's schema, for shard `shard`.

    `published`: the table's schema so far; a typed column it has keeps its type (cast when
    the values fit, else dropped from these rows: ``payload_json`` holds them).
    `payload_json`: False leaves that column null. `classes`: the event classes by type, whose
    typed columns give most rows' ``payload_json`` in one vectorised pass (store/lake_json.py);
    other rows' is decoded from the CBOR payload in Python.
    """
    n = table.num_rows
    recorded = table.column("recorded_at").cast(_TIMESTAMP)
    occurred = table.column("occurred_at").cast(_TIMESTAMP)
    envelope = {
        SHARD: pa.repeat(pa.scalar(shard, pa.string()), n),
        "occurred_at": pc.coalesce(occurred, recorded),
        "recorded_at": recorded,
        "payload_json": build_payload_json(table, classes or {}) if payload_json else pa.nulls(n, pa.string()),
    }
    names, columns = list(LAKE_ENVELOPE.names), []
    for field in LAKE_ENVELOPE:
        column = envelope.get(field.name)
        if column is None:
            column = table.column(field.name) if field.name in table.column_names else pa.nulls(n, field.type)
        columns.append(column.cast(field.type))
    typed: dict[str, pa.ChunkedArray] = {}
    for name in table.column_names:
        if name in ENVELOPE.names or name.endswith(EXACT_TEXT) or "." not in name:
            continue
        event_type, _, field = name.split(":", 1)[0].rpartition(".")
        lake_name, kind = lake_column_name(event_type, field), _lake_type(table.schema.field(name).type)
        if kind is None or lake_name in LAKE_ENVELOPE.names:
            continue
        if published is not None and lake_name in published.names:
            kind = published.field(lake_name).type
        try:
            column = table.column(name).cast(kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue  # not this column's type: payload_json holds the values
        # A field's digits may change between versions: its columns become one.
        typed[lake_name] = pc.coalesce(typed[lake_name], column) if lake_name in typed else column
    names.extend(typed)
    columns.extend(typed.values())
    return pa.Table.from_arrays(columns, names=names)


def to_store_layout(table: pa.Table) -> pa.Table:
    """Lake rows back in the store's envelope layout (no typed columns: events decode from
    the CBOR payload), for the lake reader."""
    recorded, occurred = table.column("recorded_at"), table.column("occurred_at")
    columns: dict[str, pa.ChunkedArray | pa.Array] = {
        "occurred_at": pc.if_else(pc.equal(occurred, recorded), pa.scalar(None, _TIMESTAMP), occurred),
        "event_id": table.column("event_id").cast(pa.binary(16)),
        "columns_version": pa.nulls(table.num_rows, pa.int16()),
    }
    return pa.Table.from_arrays(
        [columns.get(f.name, table.column(f.name) if f.name in table.column_names else None) for f in ENVELOPE],
        schema=ENVELOPE,
    )


def with_lake_columns(
    table: pa.Table, shard: str, published: pa.Schema | None = None, *, payload_json: bool = True,
    classes: dict[str, type[Event]] | None = None,
) -> pa.Table:
    """The store's rows `table` in the layout a store with a lake writes its data files in:
    the store's columns, ``occurred_at`` never null, and the lake's own columns beside them
    (``payload_json``, all null without `payload_json`; the typed ``<type>__<field>``), so
    that the flush's file is also the lake's (its readers read the table's columns and skip
    the others). The arguments are `to_lake`'s."""
    lake = to_lake(table, shard, published, payload_json=payload_json, classes=classes)
    layout = table.set_column(table.schema.get_field_index("occurred_at"), "occurred_at", lake.column("occurred_at"))
    for name in lake.column_names:
        if is_lake_column(name):
            layout = layout.append_column(name, lake.column(name))
    return layout


def without_lake_columns(table: pa.Table) -> pa.Table:
    """`table` without the lake's own columns (a merged file: the lake merges its own)."""
    return table.drop_columns([name for name in table.column_names if is_lake_column(name)])


def matches_table(table: pa.Table, published: pa.Schema) -> bool:
    """True when `table` (a data file's rows) was written in the lake's layout and each of its
    lake columns is a column of the table's schema `published`, of the same type: then the
    file itself can be added to the table."""
    if PAYLOAD_JSON not in table.column_names:
        return False
    names = set(published.names)
    return all(
        field.name in names and published.field(field.name).type == field.type
        for field in table.schema
        if is_lake_column(field.name)
    )


def lake_rows(table: pa.Table) -> pa.Table:
    """The columns of `table` (a data file in the lake's layout) that the lake's readers read."""
    return table.select([n for n in table.column_names if n in LAKE_ENVELOPE.names or is_lake_column(n)])
