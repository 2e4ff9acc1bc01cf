"""Issue 6's proof for real event logs: an import reproduces the raw log, counted independently.

The expected numbers come from parsing the XES file here with a deliberately different
method than ``ev.read_xes`` (a whole-document ``xml.etree.ElementTree`` tree, walked
trace by trace), never from the library: events, cases, events per activity, and each
case's activities and times in order. The store is then asked through SQL and
``info()``, before and after a reopen.

Data: BPI Challenge 2012, B.F. van Dongen (2012), 4TU.ResearchData,
DOI 10.4121/uuid:3926db30-f712-4394-aebc-75976070e91f; Road Traffic Fine Management
Process (100-trace subset), M. de Leoni and F. Mannhardt, 4TU.ResearchData,
DOI 10.4121/uuid:270fd440-1057-4fb9-89a9-b699b47990f5. Both under the 4TU.ResearchData
General Terms of Use; not part of eventador. See ``data/README.md``.
"""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import eventador as ev

DATA = Path(__file__).resolve().parents[2] / "data"  # the real logs ship with the repository
BPI2012 = DATA / "bpic2012.xes.gz"
ROAD = DATA / "roadtraffic100traces.xes"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)



# -- the independent count -------------------------------------------------------------------------


@dataclass
class LogCounts:
    events: int
    cases: int
    per_activity: dict[str, int]
    per_case: dict[str, list[tuple[int, str]]]  # case -> (occurred µs since the epoch, activity), in time order


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def string_attribute(element: ET.Element, key: str, kind: str = "string") -> str | None:
    """The value of a direct child attribute element (<string key=... value=...>) of `element`."""
    for child in element:
        if local(child.tag) == kind and child.get("key") == key:
            return child.get("value")
    return None


def micros(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.utcoffset() is not None, f"a timestamp without an offset: {text}"
    return (moment - EPOCH) // timedelta(microseconds=1)


def count_log(path: Path) -> LogCounts:
    """Counts by hand: the whole document as one tree; only <trace> children of <log> and their <event>s."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    root = ET.fromstring(raw)
    assert local(root.tag) == "log"
    events = 0
    per_activity: Counter[str] = Counter()
    per_case: dict[str, list[tuple[int, str]]] = {}
    for trace in root:
        if local(trace.tag) != "trace":  # <global>, <extension>, <classifier>, log attributes
            continue
        case = string_attribute(trace, "concept:name")
        assert case is not None, "a trace without a name"
        rows = []
        for event in trace:
            if local(event.tag) != "event":
                continue
            activity = string_attribute(event, "concept:name")
            stamp = string_attribute(event, "time:timestamp", kind="date")
            assert activity is not None and stamp is not None
            rows.append((micros(stamp), activity))
        if not rows:
            continue
        assert case not in per_case, f"case {case!r} twice in the log"
        events += len(rows)
        per_activity.update(activity for _, activity in rows)
        per_case[case] = sorted(rows, key=lambda row: row[0])  # stable: equal times keep the file's order
    return LogCounts(events, len(per_case), dict(per_activity), per_case)


# -- what the store says ---------------------------------------------------------------------------


def assert_store_holds(store: ev.EventStore, log: LogCounts) -> None:
    info = store.info()
    assert info["events"] == log.events == store.last_position
    assert info["streams"] == log.cases
    assert info["event_types"] == log.per_activity
    assert store.sql("SELECT count(*), count(DISTINCT stream_id) FROM events").fetchall() == [(log.events, log.cases)]
    per_type = store.sql("SELECT event_type, count(*) FROM events GROUP BY event_type").fetchall()
    assert dict(per_type) == log.per_activity
    # every case's events in time order, as stream versions 1..n
    backwards = store.sql(
        "SELECT stream_id, version FROM (SELECT stream_id, version, occurred_at, "
        "lag(occurred_at) OVER (PARTITION BY stream_id ORDER BY version) AS before FROM events) "
        "WHERE occurred_at < before LIMIT 5"
    ).fetchall()
    assert backwards == [], f"events out of time order: {backwards}"
    rows = store.sql(
        "SELECT stream_id, version, epoch_us(occurred_at), event_type FROM events ORDER BY stream_id, version"
    ).fetchall()
    stored: dict[str, list[tuple[int, str]]] = {}
    for stream_id, version, occurred, event_type in rows:
        stream = stored.setdefault(stream_id, [])
        assert version == len(stream) + 1, f"{stream_id}: version {version} after {len(stream)} events"
        stream.append((occurred, event_type))
    assert stored.keys() == log.per_case.keys()
    different = [case for case, expected in log.per_case.items() if stored[case] != expected]
    assert different == [], f"{len(different)} cases differ, first {different[0]!r}: {stored[different[0]]}"


def import_and_check(path: Path, directory: Path) -> None:
    log = count_log(path)
    with ev.open_store(directory) as store:
        written = store.import_dataframe(ev.read_xes(path), progress=False)
        assert written == log.events
        assert_store_holds(store, log)
    with ev.open_store(directory, read_only=True) as store:  # again, from the files alone
        assert_store_holds(store, log)


# -- the logs --------------------------------------------------------------------------------------


def test_bpi_2012_import_reproduces_the_raw_logs_counts(tmp_path: Path) -> None:
    log = count_log(BPI2012)
    # The published figures (data/README.md), so the count above is itself checked.
    assert (log.events, log.cases, len(log.per_activity)) == (262_200, 13_087, 24)
    assert log.per_activity["A_SUBMITTED"] == log.per_activity["A_PARTLYSUBMITTED"] == 13_087
    import_and_check(BPI2012, tmp_path / "bpi2012")


def test_road_traffic_100_traces_import_reproduces_the_raw_logs_counts(tmp_path: Path) -> None:
    log = count_log(ROAD)
    assert (log.events, log.cases) == (390, 100)  # the README's figures
    import_and_check(ROAD, tmp_path / "fines")


# -- bad input: an error naming the file and line, and nothing imported -------------------------------


def assert_empty(directory: Path) -> None:
    with ev.open_store(directory, read_only=True) as store:
        assert store.last_position == 0 and store.info()["events"] == 0 and store.info()["streams"] == 0


def test_a_truncated_xes_names_the_file_and_line_and_imports_nothing(tmp_path: Path) -> None:
    text = ROAD.read_bytes()
    cut = text[: int(len(text) * 0.6)]
    bad = tmp_path / "truncated.xes"
    bad.write_bytes(cut)
    last_line = cut.count(b"\n") + 1
    with ev.open_store(tmp_path / "store") as store:
        with pytest.raises(ev.InvalidInputError) as caught:
            store.import_dataframe(ev.read_xes(bad), progress=False)
        assert store.last_position == 0
    message = str(caught.value)
    assert str(bad) in message and f"line {last_line}" in message, message
    assert_empty(tmp_path / "store")


def test_a_mismatched_tag_names_its_line(tmp_path: Path) -> None:
    lines = ROAD.read_bytes().split(b"\n")
    broken = next(i for i, line in enumerate(lines) if b"</event>" in line and i > len(lines) // 2)
    lines[broken] = lines[broken].replace(b"</event>", b"</evnt>")
    bad = tmp_path / "mismatched.xes"
    bad.write_bytes(b"\n".join(lines))
    with pytest.raises(ev.InvalidInputError) as caught:
        ev.read_xes(bad)
    message = str(caught.value)
    assert str(bad) in message and f"line {broken + 1}," in message, message


def test_a_truncated_gzip_names_the_file_and_imports_nothing(tmp_path: Path) -> None:
    packed = gzip.compress(ROAD.read_bytes())
    bad = tmp_path / "truncated.xes.gz"
    bad.write_bytes(packed[: len(packed) // 2])
    with ev.open_store(tmp_path / "store") as store, pytest.raises(ev.InvalidInputError, match=r"truncated\.xes\.gz"):
        store.import_dataframe(ev.read_xes(bad), progress=False)
    assert_empty(tmp_path / "store")


def test_a_missing_column_names_it_and_imports_nothing(tmp_path: Path) -> None:
    frame = ev.read_xes(ROAD)
    with ev.open_store(tmp_path / "store") as store, pytest.raises(ev.InvalidInputError, match="'activity'"):
        store.import_dataframe(frame, event_type="activity", progress=False)
    assert_empty(tmp_path / "store")
