"""Real event logs in: XES files (IEEE 1849), CSV and Parquet, read into DataFrames.

A log is a set of cases (traces); each case becomes a stream, each row an event
whose type is the activity and whose ``occurred_at`` is the row's timestamp.
The other columns become the payload; events of types this process has no
class for still get typed SQL views, inferred from the values. The import of a DataFrame
into a store (``import_dataframe``, ``find_column``) is the store's own
(``eventador.store.dataframes``); its names stay importable from here.
"""

from __future__ import annotations

import csv
import gzip
import os
import pyexpat
import sys
import typing
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from eventador.errors import InvalidInputError
from eventador.progress import Bar, bar
from eventador.store.dataframes import find_column, import_dataframe

if TYPE_CHECKING:  # pandas is imported when used: `import eventador` stays quick
    import pandas as pd

__all__ = ["find_column", "import_dataframe", "locate_row", "read_event_log", "read_xes"]

_ATTRIBUTES = {"string", "date", "int", "float", "boolean", "id"}
_TEXT = {"string", "id"}
_NESTED = {"global", "list", "container"}
_CHUNK = 1 << 14


def _value(kind: str, raw: str | None) -> Any:
    if raw is None:
        return None
    if kind == "date":
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(UTC)
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "boolean":
        return raw.strip().lower() == "true"
    return raw


def read_xes(path: str | os.PathLike[str], *, progress: bool | None = None) -> pd.DataFrame:
    """The events of an XES log (``.xes`` or ``.xes.gz``) as a DataFrame with pm4py's column names.

    One row per event: ``case:concept:name`` (the trace's name), ``concept:name``
    (the activity), ``time:timestamp`` (aware, UTC), the event's other attributes,
    and the trace's other attributes prefixed ``case:``. Nested attributes (lists,
    containers) and the log's ``<global>`` defaults are skipped.

    With ``rustxes`` installed (``pip install "eventador[xes]"``) a compiled reader
    does the work, about three times faster; the result is the same (its first
    traces are checked against this module's own reader, which reads the whole log
    whenever they differ or rustxes fails).

    `progress`: a bar counting the bytes of the file read by this module's own reader
    (default: for files over 10 MB when stderr is a terminal). ``rustxes`` reads the
    whole file in one call, with nothing to count, so it shows none.

    Raises:
        InvalidInputError: the file is missing or not well-formed XML (names the line
            and column), or holds no traces.
    """
    source = Path(path)
    if not source.is_file():
        raise InvalidInputError(f"no such file: {source}")
    fast = _fast_frame(source)
    if fast is not None:
        checked = _checked(source, fast)
        if checked is not None:
            return checked
    return _read_with_expat(source, progress=progress)


def _read_with_expat(source: Path, *, progress: bool | None = None) -> pd.DataFrame:
    """The whole log read by this module's own reader (the reference ``rustxes`` is checked against)."""
    reader = _XesReader()
    size = source.stat().st_size
    shown = bar(size, f"reading {source.name}", _show_reading(progress, size), unit="B")
    try:
        with open(source, "rb") as raw:
            zipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            counted = typing.cast(BinaryIO, _Counted(raw, shown))  # the file's own bytes: zipped ones if zipped
            reader.parse(typing.cast(BinaryIO, gzip.GzipFile(fileobj=counted, mode="rb")) if zipped else counted)
    except pyexpat.ExpatError as exc:
        raise InvalidInputError(
            f"{source}: not well-formed XES at line {exc.lineno}, column {exc.offset + 1}: "
            f"{pyexpat.ErrorString(exc.code)}"
        ) from None
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(f"{source}: cannot read: {exc}") from None
    finally:
        shown.close()
    if not reader.rows:
        raise InvalidInputError(f"{source}: no traces with events found")
    return reader.frame()


def _fast_frame(source: Path) -> pd.DataFrame | None:
    """The log read by ``rustxes`` (a compiled XES reader, if installed), in our column types; else None.

    Its column order is arbitrary and a few of its choices differ from ours
    (lists kept as text, mixed types quoted, only UUIDs as ids): ``read_xes``
    takes the order from the first traces, and uses this frame only where those
    traces read the same with both readers. Any failure here means "read it the
    slow way", which names the problem properly.
    """
    try:
        import polars as pl  # rustxes's own dependency
        import rustxes
    except ImportError:
        return None
    try:
        frame, _ = rustxes.import_xes(str(source))
        # its times are naive UTC in ns: aware, in µs (as pandas makes them from Python datetimes)
        times = [pl.col(name).dt.cast_time_unit("us").dt.replace_time_zone("UTC")
                 for name, kind in frame.schema.items() if isinstance(kind, pl.Datetime)]
        df: pd.DataFrame = frame.with_columns(times).to_pandas()
    except BaseException as exc:  # rustxes panics (BaseException) on what it cannot read
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return None
    return df


def _checked(source: Path, fast: pd.DataFrame) -> pd.DataFrame | None:
    """`fast` in our column order if our own reader reads its first traces the same; else None."""
    reader = _XesReader()
    try:
        if not reader.parse_first_traces(_pieces(source), set(fast.columns)):
            return None
    except (pyexpat.ExpatError, zlib.error, OSError):
        return None
    return fast[list(reader.columns)] if reader.agrees_with(fast) else None


def _pieces(path: Path) -> Iterator[bytes]:
    """The file's bytes (unzipped if gzipped) piece by piece: for a quick look at its start."""
    with open(path, "rb") as f:
        inflate = zlib.decompressobj(wbits=47) if f.read(2) == b"\x1f\x8b" else None
        f.seek(0)
        while raw := f.read(_CHUNK):
            yield raw if inflate is None else inflate.decompress(raw)


def _show_reading(progress: bool | None, size: int) -> bool:
    """Whether to show a bar reading a file of `size` bytes: `progress` if given, else for
    files over 10 MB when stderr is a terminal."""
    return progress if progress is not None else size > 10_000_000 and sys.stderr.isatty()


class _Counted:
    """A binary file whose reads move a progress bar by the bytes read."""

    def __init__(self, f: BinaryIO, shown: Bar) -> None:
        self._f, self._shown = f, shown

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._shown.update(len(data))
        return data


class _XesReader:
    """Expat callbacks that collect an XES log as columns (one value list per attribute key)."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {}
        self.kinds: set[tuple[str, str]] = set()  # (key, attribute element) pairs seen
        self.rows = 0  # finished events
        self.skip = 0  # depth inside <global>, <list> or <container>: not event data
        self.in_trace = False
        self.trace: list[tuple[str, Any]] = []
        self.events: list[list[tuple[str, Any]]] = []
        self.event: list[tuple[str, Any]] | None = None
        self.tags: dict[str, str] = {}  # element name -> its local name (namespace prefix dropped)

    def _parser(self) -> pyexpat.XMLParserType:
        parser = pyexpat.ParserCreate()
        parser.buffer_text = True
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        return parser

    def parse(self, f: BinaryIO) -> None:
        self._parser().ParseFile(f)

    def parse_first_traces(self, pieces: Iterator[bytes], keys: set[str]) -> bool:
        """Read traces from the first one on (the log's header is skipped: it can be long)
        until every key in `keys` has been seen; False if the log ended first."""
        data = b""
        while (start := data.find(b"<trace")) < 0:
            piece = next(pieces, b"")
            if not piece:
                return False
            data = data[-len(b"<trace") :] + piece
        parser = self._parser()
        parser.Parse(b"<log>", False)
        data = data[start:]
        while data:
            for offset in range(0, len(data), _CHUNK):  # small steps: stop soon after the last key
                parser.Parse(data[offset : offset + _CHUNK], False)
                if self.rows and keys.issubset(self.columns):
                    return True
            data = next(pieces, b"")
        return False

    def agrees_with(self, frame: pd.DataFrame) -> bool:
        """Whether `frame` has our columns and our values in the rows read so far."""
        import pandas as pd

        if set(frame.columns) != set(self.columns) or len(frame) < self.rows:
            return False
        for key in self.columns:
            ours = pd.Series(self.column(key)).tolist()
            theirs = frame[key].iloc[: self.rows].tolist()
            if any(_differ(a, b) for a, b in zip(ours, theirs, strict=True)):
                return False
        return True

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({key: self.column(key) for key in self.columns})

    def tag(self, name: str) -> str:
        tag = self.tags.get(name)
        if tag is None:
            tag = self.tags[name] = name.rpartition(":")[2]
        return tag

    def start(self, name: str, attrs: dict[str, str]) -> None:
        tag = self.tags.get(name) or self.tag(name)
        if tag in _ATTRIBUTES:
            key = attrs.get("key")
            if self.skip or key is None:
                return
            raw = attrs.get("value", "")
            value = raw if tag in _TEXT else _value(tag, raw)
            if self.event is not None:
                self.event.append((key, value))
            elif self.in_trace:
                key = "case:" + key
                self.trace.append((key, value))
            else:
                return
            self.kinds.add((key, tag))
        elif tag in _NESTED:
            self.skip += 1
        elif self.skip:
            return
        elif tag == "event":
            if self.in_trace:
                self.event = []
        elif tag == "trace":
            self.in_trace, self.trace, self.events = True, [], []

    def end(self, name: str) -> None:
        tag = self.tags[name]
        if tag in _ATTRIBUTES:
            return
        if tag in _NESTED:
            self.skip -= 1
        elif self.skip:
            return
        elif tag == "event":
            if self.event is not None:
                self.events.append(self.event)
            self.event = None
        elif tag == "trace":
            for event in self.events:
                self._add_row(self.trace + event)
            self.in_trace = False

    def _add_row(self, values: list[tuple[str, Any]]) -> None:
        row = self.rows
        columns = self.columns
        for key, value in values:
            column = columns.get(key)
            if column is None:
                column = columns[key] = [None] * row
            elif len(column) != row:
                if len(column) > row:  # the key twice in one event: the last one wins
                    column.pop()
                else:
                    column.extend([None] * (row - len(column)))
            column.append(value)
        self.rows = row + 1

    def column(self, key: str) -> Any:
        import pandas as pd

        values = self.columns[key]
        values.extend([None] * (self.rows - len(values)))
        if {kind for k, kind in self.kinds if k == key} == {"date"}:
            return pd.to_datetime(values, utc=True)
        return values


def _differ(a: Any, b: Any) -> bool:
    """Whether two cell values differ (all kinds of missing, None, NaN, NaT, NA, are the same)."""
    import pandas as pd

    missing_a, missing_b = bool(pd.isna(a)), bool(pd.isna(b))
    if missing_a or missing_b:
        return not (missing_a and missing_b)
    return bool(a != b)


def read_event_log(path: str | os.PathLike[str], *, progress: bool | None = None) -> pd.DataFrame:
    """A DataFrame from an ``.xes``/``.xes.gz``, ``.csv`` or ``.parquet`` file.

    `progress`: a bar counting the bytes read of a CSV file, or of an XES file read
    without ``rustxes`` (default: for files over 10 MB when stderr is a terminal).

    Raises:
        InvalidInputError: the file is missing, cannot be read, is of another format,
            or holds no events (a CSV with a header only, say).
    """
    import pandas as pd
    from tqdm.auto import tqdm  # in a Jupyter kernel it loads ipywidgets

    source = Path(path)
    name = source.name.lower()
    if name.endswith((".xes", ".xes.gz")):
        return read_xes(source, progress=progress)
    if not source.is_file():
        raise InvalidInputError(f"no such file: {source}")
    try:
        if name.endswith(".csv"):
            size = source.stat().st_size
            show = _show_reading(progress, size)
            with open(source, "rb") as raw, tqdm.wrapattr(
                raw, "read", total=size, desc=f"reading {source.name}", unit="B", unit_scale=True,
                unit_divisor=1024, disable=not show,
            ) as f:
                df = pd.read_csv(f)
        elif name.endswith(".parquet"):
            df = pd.read_parquet(source)
        else:
            raise InvalidInputError(f"{source}: unknown format (expected .xes, .xes.gz, .csv or .parquet)")
    except (OSError, ValueError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"{source}: cannot read: {exc}") from None
    if df.empty:
        columns = ", ".join(map(str, df.columns))
        raise InvalidInputError(f"{source}: no events (it has the columns {columns} but no rows)")
    return df


def locate_row(path: str | os.PathLike[str], row: int) -> str:
    """Where row `row` (0-based) of ``read_event_log(path)`` is in the file: "line 7" of a CSV
    (its header is line 1; blank lines and quoted line breaks counted), "event 7" of an XES
    log, "row 7" of a Parquet file. Reads a CSV once more, up to that row."""
    source = Path(path)
    name = source.name.lower()
    if name.endswith((".xes", ".xes.gz")):
        return f"event {row + 1}"
    if not name.endswith(".csv"):
        return f"row {row + 1}"
    with open(source, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        next(reader, None)  # the header
        seen, start = -1, reader.line_num + 1
        for record in reader:
            if record:  # pandas skips blank lines
                seen += 1
                if seen == row:
                    return f"line {start}"
            start = reader.line_num + 1
    return f"line {row + 2}"
