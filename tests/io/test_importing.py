"""Importing event logs: XES parsing, the bulk write path, and what an error or a crash leaves."""

from __future__ import annotations

import gzip
import math
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import cbor2
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tqdm import tqdm

import eventador as ev
from eventador.codec import encode_rows
from tests.support.domain import Deposited
from tests.workers.import_crash_child import log

REPO = Path(__file__).resolve().parents[2]

XES = """<?xml version="1.0" encoding="UTF-8"?>
<log xes.version="1.0" xmlns="http://www.xes-standard.org/">
  <global scope="event"><string key="concept:name" value="__INVALID__"/></global>
  <string key="concept:name" value="the log itself"/>
  <trace>
    <string key="concept:name" value="c1"/>
    <float key="amount" value="12.5"/>
    <event>
      <string key="concept:name" value="submitted"/>
      <date key="time:timestamp" value="2012-01-02T10:00:00.000+01:00"/>
      <int key="items" value="3"/>
      <boolean key="urgent" value="true"/>
      <list key="tags"><string key="x" value="ignored"/></list>
    </event>
    <event>
      <string key="concept:name" value="approved &amp; sent"/>
      <date key="time:timestamp" value="2012-01-02T11:30:00.000+01:00"/>
      <string key="org:resource" value="anna"/>
    </event>
  </trace>
  <trace>
    <string key="concept:name" value="c2"/>
    <event>
      <string key="concept:name" value="submitted"/>
      <date key="time:timestamp" value="2012-01-03T09:00:00Z"/>
    </event>
  </trace>
</log>
"""


@pytest.fixture
def xes_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.xes"
    path.write_text(XES, encoding="utf-8")
    return path


def test_read_xes_gives_one_row_per_event_with_typed_values(xes_file: Path) -> None:
    df = ev.read_xes(xes_file)
    assert len(df) == 3
    assert df["case:concept:name"].tolist() == ["c1", "c1", "c2"]
    assert df["concept:name"].tolist() == ["submitted", "approved & sent", "submitted"]
    assert df["time:timestamp"].tolist() == [
        pd.Timestamp("2012-01-02T09:00:00Z"), pd.Timestamp("2012-01-02T10:30:00Z"), pd.Timestamp("2012-01-03T09:00:00Z")
    ]
    assert df["case:amount"].iloc[0] == 12.5 and df["case:amount"].iloc[1] == 12.5
    assert math.isnan(df["case:amount"].iloc[2])  # c2 has no amount
    assert df["items"].iloc[0] == 3 and df["urgent"].iloc[0] is True
    assert "tags" not in df.columns and "x" not in df.columns  # nested attributes are skipped
    assert "__INVALID__" not in df["concept:name"].tolist()  # <global> defaults are not events


def test_read_xes_reads_gzip_and_namespaced_tags_alike(tmp_path: Path, xes_file: Path) -> None:
    prefixed = XES.replace("<log ", "<xes:log xmlns:xes='urn:x' ").replace("</log>", "</xes:log>")
    prefixed = prefixed.replace("<trace>", "<xes:trace>").replace("</trace>", "</xes:trace>")
    packed = tmp_path / "small.xes.gz"
    packed.write_bytes(gzip.compress(prefixed.encode()))
    assert ev.read_xes(packed).equals(ev.read_xes(xes_file))


def test_malformed_xes_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.xes"
    path.write_text(XES.replace("</event>\n    <event>", "</event>\n    <event", 1), encoding="utf-8")
    with pytest.raises(ev.InvalidInputError, match=r"broken\.xes: not well-formed XES at line 1[0-9]"):
        ev.read_xes(path)


def test_a_log_without_events_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.xes"
    path.write_text('<log><trace><string key="concept:name" value="c"/></trace></log>', encoding="utf-8")
    with pytest.raises(ev.InvalidInputError, match="no traces with events"):
        ev.read_xes(path)


def test_import_writes_each_case_as_a_stream_in_time_order(tmp_path: Path, xes_file: Path) -> None:
    with ev.open_store(tmp_path / "s") as store:
        assert store.import_dataframe(ev.read_xes(xes_file)) == 3
        c1 = store.read_stream("c1")
        assert [r.event_type for r in c1] == ["submitted", "approved & sent"]
        assert c1[0].occurred_at == datetime(2012, 1, 2, 9, tzinfo=UTC)
        assert c1[0].event.data == {"case:amount": 12.5, "items": 3, "urgent": True}
        assert c1[1].event.data == {"case:amount": 12.5, "org:resource": "anna"}
        assert store.sql('SELECT "items", "urgent" FROM submitted WHERE stream_id = \'c1\'').fetchall() == [(3, True)]
    with ev.open_store(tmp_path / "s", read_only=True) as again:
        assert [r.version for r in again.read_stream("c1")] == [1, 2]
        assert again.stream_version("c2") == 1


def test_import_follows_events_still_in_the_hot_tier_and_appends_continue_after_it(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with ev.open_store(path) as store:
        store.append("first", [Deposited(account_id="first", amount=Decimal(1))])
        written = store.import_dataframe(log(20), stream_id="case", event_type="activity", occurred_at="at")
        store.append("last", [Deposited(account_id="last", amount=Decimal(2))])
        positions = [r.position for r in store.read_all()]
    assert written == 60
    assert positions == list(range(1, 63))
    with ev.open_store(path) as reopened:  # "last" comes back from the WAL, after the imported file
        assert [r.position for r in reopened.read_all()] == positions
        assert reopened.read_stream("last")[0].position == 62
        assert reopened.stream_version("case-7") == 3


def test_import_into_memory_store_and_sql_over_it() -> None:
    store = ev.open_store()
    store.import_dataframe(log(50), stream_id="case", event_type="activity", occurred_at="at")
    counts = dict(store.sql("SELECT event_type, count(*) FROM events GROUP BY 1").fetchall())
    assert counts == {"opened": 50, "checked": 50, "closed": 50}
    assert store.sql("SELECT count(DISTINCT who) FROM closed").fetchall() == [(7,)]


def test_an_existing_case_writes_nothing(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "s") as store:
        store.append("case-3", [Deposited(account_id="case-3", amount=Decimal(1))])
        with pytest.raises(ev.InvalidInputError, match="case-3"):
            store.import_dataframe(log(5), stream_id="case", event_type="activity", occurred_at="at")
        assert store.last_position == 1
        assert list((tmp_path / "s" / "data").glob("*.parquet")) == []


def test_a_value_that_cannot_be_stored_writes_nothing_and_names_the_column() -> None:
    store = ev.open_store()
    df = log(3)
    df["who"] = [object() if i == 4 else "x" for i in range(len(df))]
    with pytest.raises(ev.EventLogRowError, match=r"df\.loc\[4\], column 'who': cannot be stored") as caught:
        store.import_dataframe(df, stream_id="case", event_type="activity", occurred_at="at")
    assert (caught.value.row, caught.value.column) == (4, "who")
    assert store.last_position == 0


def test_missing_columns_and_bad_times_are_named() -> None:
    store = ev.open_store()
    with pytest.raises(ev.InvalidInputError, match="'when' not found"):
        store.import_dataframe(log(2), stream_id="case", event_type="activity", occurred_at="when")
    df = log(2)
    df["at"] = df["at"].astype(object)
    df.loc[3, "at"] = "not a time"
    with pytest.raises(ev.EventLogRowError, match=r"df\.loc\[3\], column 'at': 'not a time' is missing or not a time"):
        store.import_dataframe(df, stream_id="case", event_type="activity", occurred_at="at")
    assert store.last_position == 0


def test_a_registered_class_gets_its_own_typed_columns_on_import() -> None:
    class Closed(ev.Event, event_type="closed"):
        who: str

    store = ev.open_store()
    store.import_dataframe(log(4), stream_id="case", event_type="activity", occurred_at="at")
    closed = store.read_stream("case-2")[-1].event
    assert isinstance(closed, Closed) and closed.who == "r2"
    assert store.sql("SELECT who FROM closed ORDER BY stream_id").fetchall() == [("r0",), ("r1",), ("r2",), ("r3",)]


_VALUES = st.one_of(
    st.none(), st.text(max_size=5), st.integers(), st.floats(allow_nan=False), st.booleans(),
    st.datetimes(timezones=st.just(UTC)), st.lists(st.integers(), max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=4), st.lists(_VALUES, min_size=3, max_size=3), max_size=30))
def test_encode_rows_writes_the_bytes_of_each_rows_dict(columns: dict[str, list[Any]]) -> None:
    rows = [{k: v[i] for k, v in columns.items() if v[i] is not None} for i in range(3)] if columns else []
    assert encode_rows(columns) == [cbor2.dumps(row) for row in rows]


def _run_child(directory: Path, cases: int, point: str) -> str:
    args = [sys.executable, str(REPO / "tests/workers/import_crash_child.py"), str(directory), str(cases), point]
    with subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        last = ""
        try:
            assert child.stdout.readline().strip() == "READY"
            last = child.stdout.readline().strip()
        finally:
            if child.poll() is None and not last.startswith("DONE"):
                child.send_signal(signal.SIGKILL)
        code = child.wait(timeout=60)
    assert code == (-signal.SIGKILL if last.startswith("STALL") else 0), (last, code)
    return last


@pytest.mark.parametrize(
    ("point", "imported"),
    [
        # (Each file is written under a temporary name in pending/, renamed there, named in the
        # catalog, then moved into data/: two renames a file.)
        ("parquet-before-rename:1", False),  # the hot tier's own flush, before the import's file
        ("parquet-before-rename:3", False),  # the import's file, under its temporary name
        ("parquet-after-rename:3", False),  # complete in pending/, not in the catalog yet
        ("parquet-before-rename:4", True),  # the catalog names it, still in pending/: moved on opening
        ("manifest-after-rename:2", True),  # the catalog and the manifest list it
    ],
)
def test_a_killed_import_leaves_all_its_cases_or_none(tmp_path: Path, point: str, imported: bool) -> None:
    cases = 2_000
    said = _run_child(tmp_path / "s", cases, point)
    assert said.startswith("STALL"), f"the child never reached {point}: {said}"
    with ev.open_store(tmp_path / "s") as store:
        assert store.read_stream("before")[0].event.amount == Decimal(1)  # acknowledged before: kept
        expected = 1 + (3 * cases if imported else 0)
        assert store.last_position == expected
        if imported:
            assert store.stream_version("case-1999") == 3
            assert store.sql("SELECT count(DISTINCT stream_id) FROM events").fetchall() == [(cases + 1,)]
        else:
            assert store.stream_version("case-0") == 0
        # The store takes the same import again, or appends, after the crash.
        store.append("after", [Deposited(account_id="after", amount=Decimal(3))])
        assert store.read_stream("after")[0].position == expected + 1
    files = {p.name for p in (tmp_path / "s" / "data").iterdir()}
    assert not any(name.startswith(".tmp-") for name in files)


def test_an_import_the_child_finishes_is_all_there(tmp_path: Path) -> None:
    assert _run_child(tmp_path / "s", 300, "never:1") == "DONE"
    with ev.open_store(tmp_path / "s", read_only=True) as store:
        assert store.last_position == 901
        first = store.read_stream("case-0")
        assert [r.event_type for r in first] == ["opened", "checked", "closed"]
        assert first[0].occurred_at == datetime(2024, 1, 1, tzinfo=UTC)
        assert first[2].occurred_at - first[0].occurred_at == timedelta(minutes=2)


# -- columns, times and rows named (issue 16, part 3) ------------------------------------------------


def frame(**columns: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_columns_named_like_case_activity_and_time_are_found() -> None:
    store = ev.open_store()
    df = frame(case_id=["a", "a"], Activity=["x", "y"], time=pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True))
    assert store.import_dataframe(df) == 2
    assert [r.event_type for r in store.read_stream("a")] == ["x", "y"]
    assert store.read_stream("a")[0].event.data == {}  # nothing besides the three columns


def test_unclear_or_missing_columns_name_the_columns_and_the_argument() -> None:
    store = ev.open_store()
    times = pd.to_datetime(["2024-01-01"], utc=True)
    with pytest.raises(ev.EventLogColumnError, match="could be any of the columns 'case', 'trace'") as caught:
        store.import_dataframe(frame(case=["a"], trace=["b"], activity=["x"], timestamp=times))
    assert caught.value.parameter == "stream_id" and caught.value.columns == ["case", "trace", "activity", "timestamp"]
    assert "stream_id=" in str(caught.value)
    with pytest.raises(ev.EventLogColumnError, match=r"no column is named like a timestamp.*occurred_at="):
        store.import_dataframe(frame(case=["a"], activity=["x"], when=times))
    assert store.import_dataframe(frame(case=["a"], activity=["x"], when=times), occurred_at="when") == 1


def test_naive_times_are_refused_unless_a_zone_is_named() -> None:
    store = ev.open_store()
    df = frame(case=["a", "a"], activity=["x", "y"], timestamp=pd.to_datetime(["2024-01-15 10:00", "2024-07-15 10:00"]))
    df.index = [10, 20]
    with pytest.raises(ev.EventLogRowError, match=r"df\.loc\[10\], column 'timestamp': .* does not say its time zone"):
        store.import_dataframe(df)
    assert store.last_position == 0
    assert store.import_dataframe(df, tz="Europe/Amsterdam") == 2
    assert [r.occurred_at for r in store.read_stream("a")] == [
        datetime(2024, 1, 15, 9, tzinfo=UTC), datetime(2024, 7, 15, 8, tzinfo=UTC)
    ]
    # Text too, and a mix: times with an offset keep it, the others take the zone.
    text = frame(case=["b", "b"], activity=["x", "y"], timestamp=["2024-01-15T10:00:00+05:00", "2024-01-15 12:00"])
    with pytest.raises(ev.EventLogRowError, match=r"df\.loc\[1\]"):
        store.import_dataframe(text)
    assert store.import_dataframe(text, tz="UTC") == 2
    assert [r.occurred_at.hour for r in store.read_stream("b")] == [5, 12]
    with pytest.raises(ev.EventLogRowError, match="does not exist in Europe/Amsterdam"):  # clocks went forward
        store.import_dataframe(frame(case=["c"], activity=["x"], timestamp=["2024-03-31 02:30"]), tz="Europe/Amsterdam")
    with pytest.raises(ev.InvalidInputError, match="unknown time zone 'Nowhere'"):
        store.import_dataframe(text, tz="Nowhere")


def test_an_empty_case_id_or_activity_names_its_row_and_column() -> None:
    store = ev.open_store()
    at = pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"], utc=True)
    with pytest.raises(ev.EventLogRowError, match=r"df\.loc\[2\], column 'case': the case id is empty") as caught:
        store.import_dataframe(frame(case=["a", "b", "  "], activity=["x", "y", "z"], timestamp=at))
    assert (caught.value.row, caught.value.column) == (2, "case")
    with pytest.raises(ev.EventLogRowError, match=r"df\.loc\[1\], column 'activity': the activity is empty"):
        store.import_dataframe(frame(case=["a", "b", "c"], activity=["x", None, "z"], timestamp=at))
    assert store.last_position == 0


def test_progress_bars_count_rows_and_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ev.open_store()
    store.import_dataframe(log(50), stream_id="case", event_type="activity", occurred_at="at", progress=True)
    err = capsys.readouterr().err
    assert "150/150" in err and "row/s" in err and "step" not in err
    path = tmp_path / "log.csv"
    log(50).to_csv(path, index=False)
    assert len(ev.read_event_log(path, progress=True)) == 150
    err = capsys.readouterr().err
    size = tqdm.format_sizeof(path.stat().st_size, divisor=1024)  # the file's bytes, as the bar writes them
    assert f"reading {path.name}: 100%" in err and f"{size}/{size}" in err and "B/s" in err


def test_a_csv_with_a_header_only_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("case,activity,at\n")
    with pytest.raises(ev.InvalidInputError, match=r"empty\.csv: no events \(it has the columns case, activity, at"):
        ev.read_event_log(path)
