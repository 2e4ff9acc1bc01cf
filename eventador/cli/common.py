"""What the ``eventador`` commands share: finding a store, the output options, printing a table.

Every command group (``store``, ``demo``, ``projections``, ``queue``) imports this
module and nothing else of the command line.

Tables are bounded as DuckDB's and sqlite-utils' are: at most ``TABLE_ROWS`` rows
unless ``--limit`` says otherwise, then a line saying how many were left out.
Cells print as people read them: ``NULL`` for a missing value, the decoded data for
a payload (never ``bytearray(...)``). A DECIMAL prints with its exact digits in every
format: in JSON as a number written with those digits (``json.loads(text,
parse_float=Decimal)`` keeps them), never through a float; a Decimal inside a payload
is a string, as in the ``events`` view's ``data``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventador.codec import decode_value
from eventador.errors import InvalidInputError
from eventador.store.catalog import MANIFEST

if TYPE_CHECKING:
    import pandas as pd

    from eventador.store.sqlguard import SqlRelation

__all__ = [
    "TABLE_ROWS",
    "add_output_options",
    "existing_store",
    "is_store",
    "print_frame",
    "relation_frame",
    "remove_entries",
]

TABLE_ROWS = 40
"""Rows a table shows by default (DuckDB's shell shows 40 too)."""

_CELL_WIDTH = 60  # characters of one table cell; the rest is cut to "..."


def is_store(path: Path) -> bool:
    """Whether `path` holds an eventador store (its manifest, or a log not yet flushed)."""
    return (path / MANIFEST).exists() or (path / "wal").is_dir()


def existing_store(directory: str | Path) -> Path:
    """`directory` as a Path, checked to hold a store.

    Raises:
        InvalidInputError: there is no store there.
    """
    path = Path(directory)
    if not is_store(path):
        raise InvalidInputError(f"no eventador store at {path}")
    return path


def remove_entries(path: Path) -> None:
    """Remove everything in directory `path`; the directory stays (it may have been there before us)."""
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--format`` and ``--limit`` to a command that prints rows."""
    parser.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="output format (default: table)"
    )
    parser.add_argument(
        "--limit", type=_rows, default=None, metavar="N",
        help=f"print at most N rows; 0: all (default: {TABLE_ROWS} for a table, all for json and csv)",
    )


def _rows(text: str) -> int:
    """A --limit: a whole number, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of rows, 0 or more (0: all), got {text!r}")
    return int(text)


def relation_frame(relation: SqlRelation) -> pd.DataFrame:
    """A query's rows as Python values, as DuckDB gives them: a NULL integer stays None (not NaN
    in a float column), a DECIMAL stays exact, a DATE is a date."""
    import pandas as pd

    return pd.DataFrame(relation.fetchall(), columns=relation.columns, dtype=object)


def print_frame(df: pd.DataFrame, fmt: str, limit: int | None = None) -> None:
    """Print `df` as a table, JSON records or CSV; a table shows at most `limit` rows (default ``TABLE_ROWS``).

    The line saying how many rows were left out goes to stdout under a table, to
    stderr after JSON or CSV (so their output stays parseable).
    """
    if limit is None and fmt == "table":
        limit = TABLE_ROWS
    total = len(df)
    shown = df if not limit or total <= limit else df.iloc[:limit]
    if fmt == "json":
        records = [
            {str(k): _json_value(v, str(k)) for k, v in zip(shown.columns, row, strict=True)}
            for row in shown.itertuples(index=False, name=None)
        ]
        print(_json_text(records))
    elif fmt == "csv":
        cells = shown.astype(object).copy()
        for i, name in enumerate(cells.columns):
            cells.isetitem(i, [_text(v, str(name), null="") for v in cells.iloc[:, i]])
        print(cells.to_csv(index=False), end="")
    elif not total:
        print("(no rows)")
    else:
        cells = shown.astype(object).copy()
        for i, name in enumerate(cells.columns):
            cells.isetitem(i, [_text(v, str(name), null="NULL", width=_CELL_WIDTH) for v in cells.iloc[:, i]])
        print(cells.to_string(index=False))
    if len(shown) < total:
        note = f"({total - len(shown):,} more rows not shown of {total:,}; --limit N shows N, --limit 0 all)"
        print(note, file=sys.stdout if fmt == "table" else sys.stderr)


def _is_null(value: Any) -> bool:
    import pandas as pd  # loaded already: the value came from a DataFrame

    if value is None or value is pd.NaT or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _blob(value: bytes | bytearray | memoryview, column: str) -> str:
    """A payload column's CBOR as JSON text; other bytes as UTF-8 text, or hex as DuckDB shows them."""
    raw = bytes(value)
    if column == "payload":
        try:
            return json.dumps(decode_value(raw), default=str, ensure_ascii=False)
        except Exception:  # not CBOR after all: show the bytes
            pass
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return "".join(f"\\x{b:02X}" for b in raw)


def _text(value: Any, column: str, *, null: str, width: int | None = None) -> str:
    if _is_null(value):
        return null
    if isinstance(value, bytes | bytearray | memoryview):
        text = _blob(value, column)
    elif isinstance(value, dict | list):
        text = json.dumps(value, default=str, ensure_ascii=False)
    else:
        text = str(value)
    if width is not None and len(text) > width:
        text = text[: width - 3] + "..."
    return text


def _json_value(value: Any, column: str) -> Any:
    if _is_null(value):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item") and not isinstance(value, date):  # a NumPy scalar
        return _json_value(value.item(), column)
    if isinstance(value, Decimal):
        return value  # _json_text writes its digits
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict | list):
        return value
    if column == "payload" and isinstance(value, bytes | bytearray | memoryview):
        try:
            return decode_value(bytes(value))  # the event's data as JSON, not a string of it
        except Exception:  # not CBOR after all: show the bytes as text
            pass
    return _text(value, column, null="")


def _json_text(records: list[dict[str, Any]]) -> str:
    """`records` as JSON text, as ``json.dumps`` writes them, but a Decimal cell as a number
    with its exact digits (``str`` of a finite Decimal is a valid JSON number: ``12.50``,
    ``1E+30``). Inside a payload or a struct, a Decimal stays a string, as in ``events.data``."""

    def cell(value: Any) -> str:
        if isinstance(value, Decimal) and value.is_finite():
            return str(value)
        return json.dumps(value, ensure_ascii=False, default=str)

    rows = ("{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {cell(v)}" for k, v in r.items()) + "}"
            for r in records)
    return "[" + ", ".join(rows) + "]"
