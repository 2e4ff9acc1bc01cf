"""The bulk import stores what appending the same rows would: the payload of each row is its
dict, and the typed columns are those ``typed_columns`` makes of the decoded events.

The import takes shortcuts (each column's distinct values encoded once, a column of one
plain type typed once and masked per event type); these cases pick the columns that
decide between a shortcut and the general path: NumPy dtypes with missing values and
signed zeros, text, times, and object columns mixing 1, 1.0, True, text and lists.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

import eventador as ev
from eventador import UnknownEvent
from eventador.codec import decode_value
from eventador.store.columns import typed_columns

ROWS = 8
START = datetime(2024, 1, 1, tzinfo=UTC)

_OBJECTS = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from([1.0, 0.0, 2.5]), st.booleans(),
                     st.text(max_size=3), st.lists(st.integers(0, 2), max_size=2))


def _columns() -> st.SearchStrategy[pd.Series]:
    n = ROWS
    floats = st.lists(st.sampled_from([0.0, -0.0, 1.5, np.nan, 3.0]), min_size=n, max_size=n)
    return st.one_of(
        floats.map(lambda v: pd.Series(v, dtype="float64")),
        st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype="int64")),
        st.lists(st.booleans(), min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype="bool")),
        st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", ""])), min_size=n, max_size=n).map(
            lambda v: pd.Series(v, dtype="str")),
        st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=n, max_size=n).map(
            lambda v: pd.Series([None if d is None else START + timedelta(days=d) for d in v],
                                dtype="datetime64[us, UTC]")),
        st.lists(_OBJECTS, min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype=object)),
    )


def _shown(values: Any) -> str:
    """`values` as text that tells 1, 1.0 and True apart (0.0 and -0.0 are one value to the codec)."""
    if isinstance(values, dict):
        return repr({k: _shown(v) for k, v in values.items()})
    if isinstance(values, list):
        return repr([_shown(v) for v in values])
    return repr(0.0 if isinstance(values, float) and values == 0 else values)


def _expected(value: Any) -> Any:
    """A cell as the row's dict holds it (None: absent)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if isinstance(value, np.generic) else value


@settings(max_examples=60, deadline=None)
@given(
    columns=st.lists(_columns(), min_size=1, max_size=3),
    types=st.lists(st.sampled_from(["x", "y", "z"]), min_size=ROWS, max_size=ROWS),
)
def test_an_import_stores_what_appending_the_rows_would(columns: list[pd.Series], types: list[str]) -> None:
    df = pd.DataFrame({
        "case": [f"c{i % 3}" for i in range(ROWS)],
        "activity": types,
        "timestamp": [START + timedelta(hours=i) for i in range(ROWS)],
        **{f"k{j}": column for j, column in enumerate(columns)},
    })
    store = ev.open_store()
    assert store.import_dataframe(df) == ROWS
    (segment,) = store._segments
    table = segment.read_table().sort_by("position")
    order = df.sort_values(["case", "timestamp"], kind="stable")
    keys = [f"k{j}" for j in range(len(columns))]
    decoded = [decode_value(p) for p in table.column("payload").to_pylist()]
    for data, (_, row) in zip(decoded, order.iterrows(), strict=True):
        wanted = {key: _expected(row[key]) for key in keys}
        assert _shown(data) == _shown({k: v for k, v in wanted.items() if v is not None})
    event_types = table.column("event_type").to_pylist()
    events = [UnknownEvent(event_type=t, data=d) for t, d in zip(event_types, decoded, strict=True)]
    appended = typed_columns(event_types, events, {})
    stored = {name: table.column(name).combine_chunks() for name in table.column_names if "." in name}
    assert sorted(stored) == sorted(appended)
    for name, column in appended.items():
        assert stored[name].type == column.type, name
        assert _shown(stored[name].to_pylist()) == _shown(column.to_pylist()), name
