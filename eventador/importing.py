"""Real event logs in: XES files (IEEE 1849) and DataFrames (so also CSV and Parquet via pandas).

A log is a set of cases (traces); each case becomes a stream, each row an event
whose type is the activity and whose ``occurred_at`` is the row's timestamp.
The other columns become the payload; events of types this process has no
class for still get typed SQL views, inferred from the values.
"""

from __future__ import annotations

import gzip
import math
import os
import pyexpat
import typing
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from tqdm.auto import tqdm

from eventador.codec import encode_rows
from eventador.errors import InvalidInputError
from eventador.store.bulk import NewStreams
from eventador.store.records import micros_to_datetime

if TYPE_CHECKING:  # pandas is imported when used: `import eventador` stays quick
    import pandas as pd

    from eventador.store.store import EventStore

__all__ = ["import_dataframe", "read_event_log", "read_xes"]

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


def read_xes(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The events of an XES log (``.xes`` or ``.xes.gz``) as a DataFrame with pm4py's column names.

    One row per event: ``case:concept:name`` (the trace's name), ``concept:name``
    (the activity), ``time:timestamp`` (aware, UTC), the event's other attributes,
    and the trace's other attributes prefixed ``case:``. Nested attributes (lists,
    containers) and the log's ``<global>`` defaults are skipped.

    With ``rustxes`` installed (``pip install "eventador[xes]"``) a compiled reader
    does the work, about three times faster; the result is the same (its first
    traces are checked against this module's own reader, which reads the whole log
    whenever they differ or rustxes fails).

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
    return _read_with_expat(source)


def _read_with_expat(source: Path) -> pd.DataFrame:
    """The whole log read by this module's own reader (the reference ``rustxes`` is checked against)."""
    reader = _XesReader()
    try:
        with _open(source) as f:
            reader.parse(f)
    except pyexpat.ExpatError as exc:
        raise InvalidInputError(
            f"{source}: not well-formed XES at line {exc.lineno}, column {exc.offset + 1}: "
            f"{pyexpat.ErrorString(exc.code)}"
        ) from None
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(f"{source}: cannot read: {exc}") from None
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


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return typing.cast(BinaryIO, gzip.open(path, "rb"))
    return open(path, "rb")  # the caller closes it


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


def read_event_log(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A DataFrame from an ``.xes``/``.xes.gz``, ``.csv`` or ``.parquet`` file."""
    import pandas as pd

    source = Path(path)
    name = source.name.lower()
    if name.endswith((".xes", ".xes.gz")):
        return read_xes(source)
    try:
        if name.endswith(".csv"):
            return pd.read_csv(source)
        if name.endswith(".parquet"):
            return pd.read_parquet(source)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{source}: cannot read: {exc}") from None
    raise InvalidInputError(f"{source}: unknown format (expected .xes, .xes.gz, .csv or .parquet)")


def import_dataframe(
    store: EventStore,
    df: pd.DataFrame,
    *,
    stream_id: str = "case:concept:name",
    event_type: str = "concept:name",
    occurred_at: str = "time:timestamp",
    stream_type: str | None = None,
    progress: bool | None = None,
) -> int:
    """Append one stream per case and one event per row (in time order); returns events written.

    Everything is checked and encoded first: the columns exist, timestamps parse,
    no case is already a stream in the store, every value can be stored. Then all
    the cases are written as one new Parquet file recorded in one catalog
    transaction: a crash or an error leaves all of them or none.

    Raises:
        InvalidInputError: a named column is missing, a timestamp is missing or
            not a time, or a case already exists in the store.
        SerializationError: a value cannot be stored (names the column).
    """
    import pandas as pd

    missing = [c for c in (stream_id, event_type, occurred_at) if c not in df.columns]
    if missing:
        raise InvalidInputError(
            f"column {missing[0]!r} not found; the columns are: {', '.join(map(str, df.columns))}"
        )
    if df.empty:
        return 0
    times = pd.to_datetime(df[occurred_at], utc=True, errors="coerce")
    if times.isna().any():
        bad = int(times.isna().to_numpy().nonzero()[0][0])
        raise InvalidInputError(f"row {bad}: {occurred_at!r} is missing or not a time: {df[occurred_at].iloc[bad]!r}")
    order = pd.DataFrame({"case": df[stream_id].astype(str), "t": times, "i": range(len(df))})
    order = order.sort_values(["case", "t", "i"], kind="stable")
    index = order["i"].to_numpy()
    cases = order["case"].tolist()
    existing = [c for c in dict.fromkeys(cases) if store.stream_version(c) > 0]
    if existing:
        raise InvalidInputError(
            f"{len(existing)} case(s) already exist as streams (first: {existing[0]!r}); import into a new store"
        )
    show = progress if progress is not None else len(df) > 50_000
    payload_columns = [c for c in df.columns if c not in (stream_id, event_type, occurred_at)]
    with tqdm(total=len(payload_columns) + 2, desc="importing", unit="step", disable=not show) as bar:
        data: dict[str, list[Any]] = {}
        for c in payload_columns:
            data[str(c)] = _python_values(df[c].iloc[index])
            bar.update()
        payloads = encode_rows(data, what="row")
        bar.update()
        streams = NewStreams(
            stream_ids=cases,
            event_types=df[event_type].astype(str).to_numpy()[index].tolist(),
            occurred_us=order["t"].dt.as_unit("us").astype("int64").to_numpy(),
            payloads=payloads,
            data=data,
            stream_type=stream_type,
        )
        written = store._append_new_streams(streams)
        bar.update()
    return written


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
