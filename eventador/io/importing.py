"""Real event logs in: XES files (IEEE 1849) and DataFrames (so also CSV and Parquet via pandas).

A log is a set of cases (traces); each case becomes a stream, each row an event
whose type is the activity and whose ``occurred_at`` is the row's timestamp.
The other columns become the payload; events of types this process has no
class for still get typed SQL views, inferred from the values.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import pyexpat
import re
import sys
import typing
import zlib
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pyarrow as pa

from eventador.codec import encode_coded_rows
from eventador.errors import EventLogColumnError, EventLogRowError, InvalidInputError, SerializationError
from eventador.projections.progress import Bar, bar
from eventador.store.bulk import NewStreams
from eventador.store.columns import uniform_array
from eventador.store.records import micros_to_datetime

if TYPE_CHECKING:  # pandas is imported when used: `import eventador` stays quick
    import pandas as pd

    from eventador.store.store import EventStore

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


# Column names that say which column is the case, the activity and the time: pm4py's first,
# then common spellings (compared in lower case, with spaces and dashes read as "_").
_ROLES: dict[str, tuple[str, tuple[frozenset[str], ...]]] = {
    "stream_id": ("case id", (
        frozenset({"case:concept:name"}),
        frozenset({"case", "case_id", "caseid", "case_concept_name", "trace", "trace_id"}),
    )),
    "event_type": ("activity", (
        frozenset({"concept:name"}),
        frozenset({"activity", "activity_name", "activity_id", "event", "event_name", "event_type", "task", "action"}),
    )),
    "occurred_at": ("timestamp", (
        frozenset({"time:timestamp"}),
        frozenset({"timestamp", "time", "datetime", "date", "event_time", "occurred_at", "complete_timestamp",
                   "end_timestamp"}),
    )),
}


def find_column(df: pd.DataFrame, parameter: str, given: str | None) -> str:
    """The column for `parameter` ("stream_id", "event_type" or "occurred_at"): `given`, or the one
    whose name says so (pm4py's name, or a common one such as ``case``, ``activity``, ``timestamp``).

    Raises:
        EventLogColumnError: `given` is not a column, or no column (or more than one) fits.
    """
    role, tiers = _ROLES[parameter]
    columns = [str(c) for c in df.columns]
    if given is not None:
        if given not in df.columns:
            raise EventLogColumnError(role, parameter, f"column {given!r} not found", columns)
        return given
    for names in tiers:
        found = [c for c in columns if c.strip().lower().replace(" ", "_").replace("-", "_") in names]
        if len(found) == 1:
            return found[0]
        if found:
            raise EventLogColumnError(
                role, parameter, f"the {role} could be any of the columns {', '.join(map(repr, found))}", columns
            )
    raise EventLogColumnError(role, parameter, f"no column is named like a {role}", columns)


def import_dataframe(
    store: EventStore,
    df: pd.DataFrame,
    *,
    stream_id: str | None = None,
    event_type: str | None = None,
    occurred_at: str | None = None,
    tz: str | None = None,
    stream_type: str | None = None,
    progress: bool | None = None,
) -> int:
    """Append one stream per case and one event per row (in time order); returns events written.

    `stream_id`, `event_type`, `occurred_at`: the columns of the case id, the
    activity and the time. By default the one whose name says so: pm4py's
    (``case:concept:name``, ``concept:name``, ``time:timestamp``) or a common name
    (``case``/``case_id``, ``activity``, ``timestamp``/``time``...). Times must say
    their zone, as in ``append``; `tz` (``"Europe/Amsterdam"``, ``"UTC"``) is the
    zone of those that do not. `progress`: a bar counting rows (default: over
    50,000 rows).

    Everything is checked and encoded first: the columns exist, every row has a
    case id, an activity and a time, no case is already a stream in the store,
    every value can be stored. Then all the cases are written as one new Parquet
    file recorded in one catalog transaction: a crash or an error leaves all of
    them or none.

    Raises:
        EventLogColumnError: a named column is missing, or no column (or several) fits a role.
        EventLogRowError: a row has no case id or activity, a time that is missing, not a
            time, or without a zone (and no `tz`), or a value that cannot be stored
            (names the row's index label and the column).
        InvalidInputError: `tz` is not a time zone, or a case already exists in the store.
    """
    import pandas as pd

    stream_id = find_column(df, "stream_id", stream_id)
    event_type = find_column(df, "event_type", event_type)
    occurred_at = find_column(df, "occurred_at", occurred_at)
    if df.empty:
        return 0
    cases = _names(df, stream_id, "the case id is empty")
    activities = _names(df, event_type, "the activity is empty")
    times = _times(df, occurred_at, tz)
    order = pd.DataFrame({"case": cases, "t": times, "i": range(len(df))})
    order = order.sort_values(["case", "t", "i"], kind="stable")
    index = order["i"].to_numpy()
    sorted_cases = order["case"].tolist()
    existing = [c for c in dict.fromkeys(sorted_cases) if store.stream_version(c) > 0]
    if existing:
        raise InvalidInputError(
            f"{len(existing)} case(s) already exist as streams (first: {existing[0]!r}); import into a new store"
        )
    show = progress if progress is not None else len(df) > 50_000
    payload_columns = [c for c in df.columns if c not in (stream_id, event_type, occurred_at)]
    coded = {str(c): _coded(df[c], index) for c in payload_columns}
    pieces: list[pa.Array] = []
    shown = bar(len(df), "importing", show, unit="row")
    try:
        for start in range(0, len(df), _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, len(df))
            chunk = {key: _distinct(codes[start:stop], values) for key, (codes, values) in coded.items()}
            try:
                pieces.append(encode_coded_rows(chunk, stop - start, what="row"))
            except SerializationError as exc:
                raise _unstorable(df, index, coded, exc) from None
            shown.update(stop - start)
        streams = NewStreams(
            stream_ids=sorted_cases,
            event_types=activities.to_numpy()[index].tolist(),
            occurred_us=order["t"].dt.as_unit("us").astype("int64").to_numpy(),
            payloads=pa.concat_arrays(pieces),
            data={key: _typed(codes, values) for key, (codes, values) in coded.items()},
            stream_type=stream_type,
        )
        written = store._append_new_streams(streams)
    finally:
        shown.close()
    return written


def _label(df: pd.DataFrame, row: Any) -> Any:
    """The index label of the row at position `row`, as a plain Python value (``4``, not ``np.int64(4)``)."""
    label = df.index[int(row)]
    return label.item() if hasattr(label, "item") else label


_CHUNK_ROWS = 50_000  # rows encoded at a time: the progress bar moves by this much


def _names(df: pd.DataFrame, column: str, empty: str) -> pd.Series:
    """The column as text, every row checked to have some (a case id, an activity)."""
    values = df[column]
    text = values.astype(str)
    bad = (values.isna() | (text.str.strip() == "")).to_numpy().nonzero()[0]
    if len(bad):
        raise EventLogRowError(int(bad[0]), _label(df, bad[0]), column, empty)
    return text.reset_index(drop=True)


_ZONE = re.compile(r"\d:\d\d(?::\d\d(?:[.,]\d+)?)?\s*(?:[zZ]|(?:UTC|GMT)?\s*[+-]\d\d(?::?\d\d)?|UTC|GMT)$")


def _zone_kind(value: Any) -> str:
    """Whether one value of a time column is "aware", "naive", "missing" or "other" (not a time)."""
    import pandas as pd

    if pd.isna(value):
        return "missing"
    if isinstance(value, datetime):  # pandas Timestamps too
        return "naive" if value.tzinfo is None else "aware"
    if isinstance(value, str):
        return "aware" if _ZONE.search(value.strip()) else "naive"
    return "other"


def _times(df: pd.DataFrame, column: str, tz: str | None) -> pd.Series:
    """The column as UTC times; naive ones are read in zone `tz`, or refused without it.

    Raises:
        EventLogRowError: for the first row whose time is missing, not a time, without
            a zone (and no `tz`), or not a time that `tz` has (a clock change).
    """
    import pandas as pd

    values = df[column].reset_index(drop=True)  # by position: df's index may repeat labels
    if tz is not None:
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise InvalidInputError(f"unknown time zone {tz!r} (try UTC, or a name such as Europe/Amsterdam)") from None
    if pd.api.types.is_datetime64_any_dtype(values):
        kinds = np.where(values.isna(), "missing", "naive" if values.dt.tz is None else "aware")
    else:
        kinds = np.array([_zone_kind(v) for v in values.astype(object)], dtype=object)
    times = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
    aware, naive = kinds == "aware", kinds == "naive"
    if aware.any():
        times[aware] = _parse(values[aware], utc=True)
    wrong = np.full(len(values), "", dtype=object)  # what is wrong with each naive row, if anything
    if naive.any():
        local = _parse(values[naive], utc=False)
        if local.dt.tz is not None:  # the parser read them as aware after all
            local = local.dt.tz_localize(None)
        parsed = local.notna().to_numpy()
        where = naive.nonzero()[0]
        if tz is None:
            wrong[where[parsed]] = (
                "does not say its time zone; name the zone of such times (tz='Europe/Amsterdam' in Python, "
                "--timezone Europe/Amsterdam on the command line; or UTC), or write them with an offset"
            )
        else:
            placed = local.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
            wrong[where[parsed & placed.isna().to_numpy()]] = f"is ambiguous or does not exist in {tz} (a clock change)"
            times[naive] = placed.dt.tz_convert("UTC")
    wrong[(times.isna().to_numpy()) & (wrong == "")] = "is missing or not a time"
    bad = (wrong != "").nonzero()[0]
    if len(bad):
        first = int(bad[0])
        value = values.iloc[first]
        shown = repr(str(value) if isinstance(value, datetime) else value)
        raise EventLogRowError(first, _label(df, first), column, f"{shown} {wrong[first]}")
    return times


def _parse(values: pd.Series, *, utc: bool) -> pd.Series:
    """Times from text or datetimes: ISO 8601 quickly, other spellings one by one (NaT where none fits)."""
    import pandas as pd

    try:
        return pd.to_datetime(values, utc=utc, format="ISO8601")
    except (ValueError, TypeError):
        return pd.to_datetime(values, utc=utc, errors="coerce", format="mixed")


def _unstorable(df: pd.DataFrame, index: np.ndarray, coded: dict[str, tuple[np.ndarray, list[Any]]],
                exc: SerializationError) -> EventLogRowError:
    """The error naming the row and column of the value `encode_coded_rows` could not store."""
    for key, (codes, values) in coded.items():
        for code, value in enumerate(values):
            if value is exc.value:
                row = int(index[np.flatnonzero(codes == code)[0]])
                return EventLogRowError(row, _label(df, row), key, f"cannot be stored: {exc.reason}")
    return EventLogRowError(int(index[0]), _label(df, index[0]), str(exc.path), str(exc))


def _coded(series: pd.Series, order: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """The column, rows taken in `order`, as codes into its distinct values (plain Python
    values; -1 where missing). pandas finds them in C where no two values of the column can
    be equal across types (1, 1.0 and True are) or be told apart only by sign (0.0 and -0.0
    are equal keys); otherwise every row is its own value."""
    import pandas as pd

    dtype = series.dtype
    objects = pd.api.types.is_object_dtype(dtype)
    plain = isinstance(dtype, np.dtype) and dtype.kind in "iubfM"
    if plain or objects or isinstance(dtype, (pd.StringDtype, pd.DatetimeTZDtype)):
        try:
            codes, distinct = pd.factorize(series, use_na_sentinel=True)
        except TypeError:  # unhashable values (lists, dicts)
            codes = None
        if codes is not None:
            values = _python_values(pd.Series(distinct))
            signed_zero = dtype.kind == "f" and bool(np.any((distinct == 0) & np.signbit(distinct)))
            if not signed_zero and (not objects or set(map(type, values)) <= {str}):
                return codes.astype(np.int64)[order], values
    return np.arange(len(series), dtype=np.int64), _python_values(series.iloc[order])


def _distinct(codes: np.ndarray, values: list[Any]) -> tuple[np.ndarray, list[Any]]:
    """`codes` renumbered over the values they use (so a chunk encodes only its own values)."""
    used = np.flatnonzero(np.bincount(codes + 1, minlength=len(values) + 1)[1:])  # -1, missing, counted first
    renumber = np.full(len(values) + 1, -1, dtype=np.int64)  # the last one: -1 stays -1
    renumber[used] = np.arange(len(used), dtype=np.int64)
    return renumber[codes], [values[i] for i in used.tolist()]


def _typed(codes: np.ndarray, values: list[Any]) -> pa.Array | list[Any]:
    """The column's values for its typed columns: an Arrow array when one type fits all of them."""
    uniform = uniform_array(values)
    if uniform is not None:
        return uniform.take(pa.array(codes, mask=codes < 0))
    objects = np.empty(len(values) + 1, dtype=object)
    objects[:-1] = values  # element by element: a list value stays one element
    rows: list[Any] = objects[codes].tolist()  # code -1 picks the last: None
    return rows


def _python_values(series: pd.Series) -> list[Any]:
    """Plain Python values (None for missing) for a column, in one vectorised pass."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series):
        utc = series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
        micros = utc.dt.as_unit("us").astype("int64").to_numpy()
        known: dict[int, datetime] = {}  # dates repeat (a case's attributes are on each of its events)
        out: list[Any] = []
        for missing, us in zip(utc.isna().to_numpy().tolist(), micros.tolist(), strict=True):
            if missing:
                out.append(None)
                continue
            when = known.get(us)
            if when is None:
                when = known[us] = micros_to_datetime(us)
            out.append(when)
        return out
    out = series.astype(object).where(series.notna(), None).tolist()
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "integer", "floating", "boolean", "empty"):
        return out  # plain Python values already
    return [None if isinstance(v, float) and math.isnan(v) else _plain(v) for v in out]


def _plain(value: Any) -> Any:
    to_datetime = getattr(value, "to_pydatetime", None)  # a pandas Timestamp
    return to_datetime() if to_datetime is not None else value
