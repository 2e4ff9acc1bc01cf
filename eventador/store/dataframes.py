"""Importing event logs from DataFrames: one stream per case, one event per row.

The columns of the case, the activity and the time are found by name; the times are
read as UTC; every other column is reduced to codes into its distinct values (pandas,
in C), only those values are encoded, and the new streams go to the store's bulk path
(``EventStore.append_new_streams``, see ``store/bulk.py``) as one Parquet file.
The readers of files (XES, CSV, Parquet) are in ``eventador.io``.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from eventador.codec import encode_coded_rows
from eventador.errors import EventLogColumnError, EventLogRowError, InvalidInputError, SerializationError
from eventador.progress import bar
from eventador.store.bulk import NewStreams
from eventador.store.columns import uniform_array
from eventador.store.records import micros_to_datetime

if TYPE_CHECKING:  # pandas is imported when used: `import eventador` stays quick
    import pandas as pd

    from eventador.store.store import EventStore

__all__ = ["find_column", "import_dataframe"]


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
        written = store.append_new_streams(streams)
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
