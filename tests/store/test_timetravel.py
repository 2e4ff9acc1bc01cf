"""store.diff(a, b): the events between two points, by position or by recorded time."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventador as ev
from eventador import ManualClock, StoreDiff
from eventador.store.diff import diff


class TTOpened(ev.Event, event_type="tt.Opened"):
    n: int


class TTChanged(ev.Event, event_type="tt.Changed"):
    n: int


START = datetime(2026, 3, 1, 9, tzinfo=UTC)


def _store(appends: list[tuple[str, bool]]) -> ev.EventStore:
    """One event per append, one clock minute apart: (stream, opened?)."""
    clock = ManualClock(START)
    store = ev.open_store(clock=clock)
    for i, (stream, opened) in enumerate(appends):
        event: ev.Event = TTOpened(n=i) if opened else TTChanged(n=i)
        store.append(stream, event)
        clock.advance(timedelta(minutes=1))
    return store


def _sample() -> ev.EventStore:
    return _store([("a", True), ("b", True), ("a", False), ("c", True), ("a", False), ("b", False)])


def test_diff_by_position_counts_events_streams_and_types() -> None:
    store = _sample()
    d = store.diff(2, 5)
    assert isinstance(d, StoreDiff)
    assert (d.from_position, d.to_position, d.events) == (2, 5, 3)
    assert d.streams == ("a", "c")
    assert d.events_per_type == {"tt.Changed": 2, "tt.Opened": 1}
    assert list(d.df()["position"]) == [3, 4, 5]


def test_diff_by_aware_datetime_uses_recorded_time() -> None:
    store = _sample()
    # events recorded at START + 0..5 minutes; positions 1..6
    d = store.diff(START + timedelta(minutes=1, seconds=30), START + timedelta(minutes=4))
    assert (d.from_position, d.to_position) == (2, 5)
    assert d.events == 3


def test_diff_mixes_positions_and_datetimes_and_clamps_past_the_end() -> None:
    store = _sample()
    d = store.diff(START - timedelta(days=1), 1_000)
    assert (d.from_position, d.to_position, d.events) == (0, 6, 6)
    assert d.streams == ("a", "b", "c")


def test_empty_diff_when_points_are_equal() -> None:
    d = _sample().diff(3, 3)
    assert d.events == 0 and d.streams == () and d.events_per_type == {}
    assert d.df().empty


def test_naive_datetime_raises_invalid_input() -> None:
    store = _sample()
    with pytest.raises(ev.InvalidInputError, match="aware"):
        store.diff(datetime(2026, 3, 1), 3)
    with pytest.raises(ev.InvalidInputError, match="aware"):
        store.diff(0, datetime(2026, 3, 1))


@pytest.mark.parametrize("bad", [-1, "3", 2.5, True, None])
def test_not_a_point_raises_invalid_input(bad: object) -> None:
    with pytest.raises(ev.InvalidInputError):
        diff(_sample(), bad, 3)  # type: ignore[arg-type]


def test_b_before_a_raises_invalid_input() -> None:
    with pytest.raises(ev.InvalidInputError, match="before"):
        _sample().diff(5, 2)


def test_diff_reprs_are_one_line_and_html() -> None:
    d = _sample().diff(0, 6)
    assert repr(d) == "StoreDiff(positions 0..6: 6 events in 3 streams)"
    page = d._repr_html_()
    assert "StoreDiff" in page and "tt.Opened" in page and "<table>" in page


def test_diff_sees_flushed_and_hot_events_alike() -> None:
    store = _sample()
    store.flush()
    store.append("d", TTOpened(n=99))
    d = store.diff(4, 7)
    assert d.streams == ("a", "b", "d")
    assert d.events == 3


appends = st.lists(st.tuples(st.sampled_from(["x", "y", "z", "w"]), st.booleans()), max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(appends=appends, a=st.integers(0, 30), b=st.integers(0, 30))
def test_diff_equals_a_python_count_over_read_all(appends: list[tuple[str, bool]], a: int, b: int) -> None:
    a, b = min(a, b), max(a, b)
    store = _store(appends)
    d = store.diff(a, b)
    between = [r for r in store.read_all() if a < r.position <= b]
    assert d.events == len(between)
    assert d.streams == tuple(sorted({r.stream_id for r in between}))
    assert d.events_per_type == dict(Counter(r.event_type for r in between))
    # consecutive diffs add up to the whole
    mid = (a + b) // 2
    left, right = store.diff(a, mid), store.diff(mid, b)
    assert left.events + right.events == d.events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=25),
    probe=st.integers(-1, 60),
)
def test_as_of_a_time_is_the_last_position_recorded_by_then_across_files_and_hot_tier(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, bool]], probe: int
) -> None:
    # Minutes between appends (0: the same instant), with flushes at random points, so
    # the point falls before, inside or after Parquet files and the hot tier alike.
    clock = ManualClock(START)
    with ev.open_store(tmp_path_factory.mktemp("s"), clock=clock, durability="none") as store:
        for i, (minutes, flush) in enumerate(steps):
            clock.advance(timedelta(minutes=minutes))
            store.append(f"s{i % 3}", TTChanged(n=i))
            if flush:
                store.flush()
        when = START + timedelta(minutes=probe)
        expected = max((r.position for r in store.read_all() if r.recorded_at <= when), default=0)
        assert store.as_of(when).position == expected
