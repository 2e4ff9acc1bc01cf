"""Opening a store whose data files are evicted to the cold tier downloads none of them: what
opening needs of each (its streams' heads, its newest recorded_at) is in the catalog from its
upload on. Shown by hiding every copy while the store opens (a local lake and a real SeaweedFS
server): opening still succeeds, and only reads fetch once the copies are back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

import eventador as ev
from eventador.store.segments import FileSegment
from tests.support.coldtier import hidden


class OpenDeposited(ev.Event, event_type="lake.coldopen.Deposited"):
    amount: int


def fill(store: ev.EventStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.append(f"acc-{i % 7}", [OpenDeposited(amount=i)])


def local(store: ev.EventStore) -> list[str]:
    return [s.path.name for s in store.state().segments if isinstance(s, FileSegment) and s.path.exists()]


def build(path: Path, target: ev.LakeTarget, files: int = 4) -> dict[str, object]:
    """A store of `files` evicted data files; returns what it answers."""
    with ev.open_store(path, lake=target, flush_every=10**6, durability="none") as store:
        assert store.lake is not None
        for round_ in range(files):
            fill(store, 70, round_ * 70)
            store.flush()
        store.lake.sync()
        assert local(store) == []
        return truth(store)


def truth(store: ev.EventStore) -> dict[str, object]:
    return {
        "versions": {f"acc-{i}": store.stream_version(f"acc-{i}") for i in range(8)},
        "last": store.last_position,
        "stream": [r.event for r in store.read_stream("acc-3")],
        "past": [r.position for r in store.as_of(100).read_stream("acc-2")],
    }


def check_opens_without_copies(path: Path, target: ev.LakeTarget, expected: dict[str, object]) -> None:
    # A clock behind the stored events: recorded_at must still not go back (the catalog's newest).
    clock = ev.ManualClock(datetime(2000, 1, 1, tzinfo=UTC))
    with hidden(target), ev.open_store(path, lake=target, clock=clock, durability="none") as store:
        assert local(store) == []
        assert {f"acc-{i}": store.stream_version(f"acc-{i}") for i in range(8)} == expected["versions"]
        assert store.last_position == expected["last"]
        with pytest.raises(ev.ConcurrencyError):
            store.append("acc-1", [OpenDeposited(amount=-1)], expected_version=1)
        version = store.append("acc-1", [OpenDeposited(amount=-1)], expected_version=expected["versions"]["acc-1"])  # type: ignore[index]
        assert version == expected["versions"]["acc-1"] + 1  # type: ignore[index,operator]
        assert store.append("acc-new", [OpenDeposited(amount=1)], expected_version=0) == 1
    with ev.open_store(path, lake=target) as store:  # the copies are back: reads fetch them
        answers = truth(store)
        assert answers["stream"] == expected["stream"]
        assert answers["past"] == expected["past"]
        assert answers["last"] == expected["last"] + 2  # type: ignore[operator]
        (new,) = store.read_stream("acc-new")
        assert new.event == OpenDeposited(amount=1)
        assert new.recorded_at == max(r.recorded_at for r in store.read_all() if r.stream_id != "acc-new")


def test_opening_downloads_no_evicted_file(tmp_path: Path) -> None:
    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)
    expected = build(tmp_path / "s", target)
    check_opens_without_copies(tmp_path / "s", target, expected)


def test_opening_downloads_no_evicted_file_from_s3(tmp_path: Path, s3_lake: tuple[str, dict[str, str]]) -> None:
    uri, options = s3_lake
    target = ev.LakeTarget(uri, storage_options=options, max_lag=None, local_bytes=0)
    expected = build(tmp_path / "s", target, files=2)
    check_opens_without_copies(tmp_path / "s", target, expected)


def test_files_uploaded_without_a_summary_are_fetched_once_then_summarized(tmp_path: Path) -> None:
    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)
    expected = build(tmp_path / "s", target)
    db = duckdb.connect(str(tmp_path / "s" / "catalog.duckdb"))  # as an older version left it
    db.execute("UPDATE uploaded_files SET max_recorded_us = NULL")
    db.execute("DELETE FROM uploaded_heads")
    db.close()
    with hidden(target), pytest.raises(ev.LakeError, match="cannot fetch"):
        ev.open_store(tmp_path / "s", lake=target)
    with ev.open_store(tmp_path / "s", lake=target) as store:  # fetches each, and records what it needs
        assert local(store) == []
    check_opens_without_copies(tmp_path / "s", target, expected)


def test_a_fetched_copy_of_a_file_opened_evicted_is_checked(tmp_path: Path) -> None:
    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)
    build(tmp_path / "s", target, files=2)
    copies = sorted((tmp_path / "lake" / "_eventador" / "main").glob("*.parquet"))
    original = copies[0].read_bytes()
    copies[0].write_bytes(copies[1].read_bytes())  # another file of the store, sound
    with ev.open_store(tmp_path / "s", lake=target) as store:
        with pytest.raises(ev.CorruptionError, match="is another file"):
            list(store.read_all())
        assert not (tmp_path / "s" / "data" / copies[0].name).exists()  # not kept
        copies[0].write_bytes(original)
        assert len(list(store.read_all())) == 140
