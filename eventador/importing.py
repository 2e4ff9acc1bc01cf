"""Real event logs in: XES files (IEEE 1849) and DataFrames (so also CSV and Parquet via pandas).

A log is a set of cases (traces); each case becomes a stream, each row an event
whose type is the activity and whose ``occurred_at`` is the row's timestamp.
The other columns become the payload; events of types this process has no
class for still get typed SQL views, inferred from the values.
"""

from __future__ import annotations

import gzip
import itertools
import math
import os
import typing
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from tqdm.auto import tqdm

from eventador.errors import InvalidInputError
from eventador.messages import UnknownEvent

if TYPE_CHECKING:  # pandas is imported when used: `import eventador` stays quick
    import pandas as pd

    from eventador.store.store import EventStore

__all__ = ["import_dataframe", "read_event_log", "read_xes"]

_ATTRIBUTES = {"string", "date", "int", "float", "boolean", "id"}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if tag[:1] == "{" else tag


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
    containers) are skipped. Streams the file: memory holds one trace at a time
    plus the rows.

    Raises:
        InvalidInputError: the file is missing or not well-formed XML (names the line
            and column), or holds no traces.
    """
    import pandas as pd

    source = Path(path)
    if not source.is_file():
        raise InvalidInputError(f"no such file: {source}")
    rows: list[dict[str, Any]] = []
    try:
        with _open(source) as f:
            rows = list(_xes_rows(f))
    except ET.ParseError as exc:
        line, column = exc.position
        raise InvalidInputError(f"{source}: not well-formed XES at line {line}, column {column}: {exc}") from None
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(f"{source}: cannot read: {exc}") from None
    if not rows:
        raise InvalidInputError(f"{source}: no traces with events found")
    df = pd.DataFrame.from_records(rows)
    if "time:timestamp" in df.columns:
        df["time:timestamp"] = pd.to_datetime(df["time:timestamp"], utc=True)
    return df


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return typing.cast(BinaryIO, gzip.open(path, "rb"))
    return open(path, "rb")  # the caller closes it


def _xes_rows(f: BinaryIO) -> Iterator[dict[str, Any]]:
    depth_skip = 0  # inside <global>, <list> or <container>: not event data
    trace_attrs: dict[str, Any] = {}
    trace_events: list[dict[str, Any]] = []
    event: dict[str, Any] | None = None
    for kind, el in ET.iterparse(f, events=("start", "end")):
        tag = _local(el.tag)
        if kind == "start":
            if tag in ("global", "list", "container"):
                depth_skip += 1
            elif depth_skip == 0 and tag == "trace":
                trace_attrs, trace_events = {}, []
            elif depth_skip == 0 and tag == "event":
                event = {}
            continue
        if tag in ("global", "list", "container"):
            depth_skip -= 1
            el.clear()
        elif depth_skip:
            continue
        elif tag in _ATTRIBUTES:
            key = el.get("key")
            if key is not None:
                value = _value(tag, el.get("value"))
                if event is not None:
                    event[key] = value
                else:
                    trace_attrs[key] = value
        elif tag == "event":
            if event is not None:
                trace_events.append(event)
            event = None
            el.clear()
        elif tag == "trace":
            case = {"case:" + k: v for k, v in trace_attrs.items()}
            for e in trace_events:
                yield {**case, **e}
            el.clear()


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
    chunk: int = 2_000,
) -> int:
    """Append one stream per case and one event per row (in time order); returns events written.

    Everything is checked first: the columns exist, timestamps parse, no case is
    already a stream in the store, every value can be stored. Then the cases are
    appended in chunks (``append_many``: one lock and one fsync each), each case
    atomically.

    Raises:
        InvalidInputError: a named column is missing, a timestamp is missing or
            not a time, or a case already exists in the store.
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
    types = df[event_type].astype(str).to_numpy()[index].tolist()
    when = [t.to_pydatetime() for t in order["t"]]
    payload_columns = [c for c in df.columns if c not in (stream_id, event_type, occurred_at)]
    values = [_python_values(df[c].iloc[index]) for c in payload_columns]
    keys = [str(c) for c in payload_columns]
    events = [
        UnknownEvent(event_type=t, data={k: v for k, v in zip(keys, row, strict=True) if v is not None})
        for t, row in zip(types, zip(*values, strict=True) if values else itertools.repeat(()), strict=False)
    ]
    groups = _group_by_case(cases, events, when)
    # Encode everything before the first write: a bad value anywhere writes nothing.
    prepared = [store._prepare(case, evs, 0, None, ts, stream_type) for case, evs, ts in groups]
    show = progress if progress is not None else len(events) > 50_000
    written = 0
    with tqdm(total=len(events), desc="importing", unit="event", disable=not show) as bar:
        for start in range(0, len(prepared), chunk):
            part = prepared[start : start + chunk]
            store._commit(part)
            n = sum(len(p.events) for p in part)
            written += n
            bar.update(n)
    return written


def _group_by_case(
    cases: list[str], events: list[UnknownEvent], when: list[datetime]
) -> list[tuple[str, list[UnknownEvent], list[datetime]]]:
    groups = []
    start = 0
    for case, run in itertools.groupby(cases):
        n = sum(1 for _ in run)
        groups.append((case, events[start : start + n], when[start : start + n]))
        start += n
    return groups


def _python_values(series: pd.Series) -> list[Any]:
    """Plain Python values (None for missing) for a column, in one vectorised pass."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series):
        utc = series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
        return [None if pd.isna(v) else v.to_pydatetime() for v in utc]
    out = series.astype(object).where(series.notna(), None).tolist()
    return [None if isinstance(v, float) and math.isnan(v) else _plain(v) for v in out]


def _plain(value: Any) -> Any:
    to_datetime = getattr(value, "to_pydatetime", None)  # a pandas Timestamp
    return to_datetime() if to_datetime is not None else value

