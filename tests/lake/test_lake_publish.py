"""Publishing a store's flushed events as a Delta Lake table on a local path (store/lake.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

import eventador as ev
from eventador.store.catalog import read_manifest
from eventador.store.lake_files import link_file
from eventador.store.lake_schema import LAKE_ENVELOPE, lake_column_name
from eventador.store.segments import FileSegment
from tests.support.coldtier import kill_writer_after


class LakeDeposited(ev.Event, event_type="lake.Money.Deposited"):
    account: str
    amount: int
    fee: Decimal
    note: str = ""


def fill(store: ev.EventStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.append(f"acc-{i % 7}", [LakeDeposited(account=f"acc-{i % 7}", amount=i, fee=Decimal("0.25"))])


def published(store: ev.EventStore, n: int, start: int = 0) -> None:
    """`n` events appended, flushed and published."""
    fill(store, n, start)
    store.flush()
    assert store.lake is not None
    store.lake.sync()


def positions(uri: str | Path) -> list[int]:
    table = pa.table(DeltaTable(str(uri)).to_pyarrow_dataset().to_table(columns=["position"]))
    return sorted(table.column("position").to_pylist())


def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_each_flush_is_one_commit_with_the_watermark(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(str(lake), max_lag=None), flush_every=1000) as store:
        assert store.lake is not None
        for flush in range(3):
            fill(store, 10, flush * 10)
            store.flush()
            store.lake.sync()
            # Where the publish's time went: the first adds the events' columns to the table;
            # the others add the store's own data file as it is.
            parts = store.lake.last_parts
            expected = {"convert", "write and commit"} if flush == 0 else {"stats", "upload", "commit"}
            assert set(parts) == expected
            assert 0 < sum(parts.values()) <= store.lake.last_seconds
        table = DeltaTable(str(lake))
        assert table.version() == 4  # the table's creation, the shard's claim, then one commit per flush
        assert table.transaction_version("eventador:main") == 30
        history = [h for h in table.history() if h["operation"] == "WRITE" and "eventador.last_position" in h]
        assert [h["eventador.last_position"] for h in history] == ["30", "20", "10"]
    assert positions(lake) == list(range(1, 31))


def test_the_table_adds_the_stores_own_file_written_once(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(str(lake), max_lag=None), flush_every=1000) as store:
        assert store.lake is not None
        published(store, 10)  # the first publish adds the type's columns: a file of its own
        fill(store, 10, 10)
        when = datetime(2021, 5, 6, tzinfo=UTC)
        store.append("acc-y", [LakeDeposited(account="y", amount=7, fee=Decimal("2.5"), note="q")], occurred_at=when)
        hot = list(store.read_all())
        store.flush()
        store.lake.sync()
        segment = store.state().segments[-1]
        assert isinstance(segment, FileSegment)
        files = [lake / f for f in pa.table(DeltaTable(str(lake)).get_add_actions()).column("path").to_pylist()]
        assert len(files) == 2
        assert sum(os.path.samefile(f, segment.path) for f in files) == 1  # a hard link: the bytes written once
        # The store reads its file as before: the same records, the same SQL.
        assert list(store.read_all()) == hot
        assert store.sql("select * from events").columns == ev.open_store(tmp_path / "plain").sql(
            "select * from events").columns
        lake_reader = ev.open_lake(lake)
        assert [r.event for r in lake_reader.read_all()] == [r.event for r in hot]
        assert lake_reader.read_stream("acc-y")[0].occurred_at == when
        rows = lake_reader.sql("select count(*), sum(lake_Money_Deposited__amount), count(payload_json), "
                               "min(occurred_at) from events").fetchall()
        assert rows == [(21, sum(range(20)) + 7, 21, when)]
        # The store's compaction deletes its files; the table's links stay.
        store.compact(min_files=2)
        store._empty_trash(everything=True)
    assert not segment.path.exists()
    assert positions(lake) == list(range(1, 22))


def test_the_schema_is_stable_and_plain(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    when = datetime(2020, 1, 2, tzinfo=UTC)
    with ev.open_store(tmp_path / "s", lake=str(lake)) as store:
        fill(store, 5)
        store.append("acc-x", [LakeDeposited(account="x", amount=1, fee=Decimal("1.5"), note="hi")], occurred_at=when)
    schema = pa.schema(DeltaTable(str(lake)).schema().to_arrow())
    typed = [name for name in schema.names if name not in LAKE_ENVELOPE.names]
    fields = ("account", "amount", "fee", "note")
    assert sorted(typed) == sorted(lake_column_name("lake.Money.Deposited", f) for f in fields)
    assert all("." not in name and ":" not in name for name in schema.names)
    assert schema.field("lake_Money_Deposited__fee").type == pa.float64()  # sums in every engine
    rows = ev.open_lake(lake).sql(
        "select occurred_at, recorded_at, payload_json, lake_Money_Deposited__fee from events order by position"
    ).fetchall()
    assert all(occurred is not None for occurred, *_ in rows)
    assert rows[0][0] == rows[0][1] and rows[-1][0] == when
    assert json.loads(rows[-1][2]) == {"account": "x", "amount": 1, "fee": "1.5", "note": "hi"}
    assert sum(r[3] for r in rows) == pytest.approx(0.25 * 5 + 1.5)


def test_reopening_publishes_the_difference_and_nothing_twice(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    with ev.open_store(tmp_path / "s", lake=lake) as store:
        fill(store, 20)
    version = DeltaTable(lake).version()
    with ev.open_store(tmp_path / "s", lake=lake):
        pass  # nothing new: no commit
    assert DeltaTable(lake).version() == version
    with ev.open_store(tmp_path / "s") as store:  # flushed with no publisher running
        fill(store, 15, 20)
    with ev.open_store(tmp_path / "s", lake=lake) as store:
        assert store.lake is not None
        assert store.lake.sync() == 35
    assert positions(lake) == list(range(1, 36))


def test_compaction_removes_and_adds_without_data_change(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(str(lake), max_lag=None), flush_every=1000) as store:
        assert store.lake is not None
        for flush in range(9):
            fill(store, 4, flush * 4)
            store.flush()
            store.lake.sync()
        # The store's own compaction (size-tiered, after the flushes) compacted the lake's 8 files.
        wait_for(lambda: any(h["operation"] == "OPTIMIZE" for h in DeltaTable(str(lake)).history()))
        assert len(DeltaTable(str(lake)).file_uris()) == 2  # the merged file, and the 9th flush's
    table = DeltaTable(str(lake))
    optimize = max(h["version"] for h in table.history() if h["operation"] == "OPTIMIZE")
    actions = [json.loads(line) for line in (lake / "_delta_log" / f"{optimize:020d}.json").read_text().splitlines()]
    changes = [a.get("add", a.get("remove")) for a in actions if "add" in a or "remove" in a]
    assert len(changes) == 9 and all(c["dataChange"] is False for c in changes)  # 8 removes, 1 add
    assert positions(lake) == list(range(1, 37))


def test_max_lag_flushes_on_a_timer(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(str(lake), max_lag=0.2)) as store:
        fill(store, 3)  # far below flush_every: only the timer flushes them
        wait_for(lambda: positions(lake) == [1, 2, 3], timeout=5)


def test_an_unusable_lake_is_refused_at_open_and_the_store_keeps_its_events(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "s") as store:
        fill(store, 4)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ev.LakeError, match=str(blocker / "lake")) as caught:
        ev.open_store(tmp_path / "s", lake=str(blocker / "lake"))
    assert isinstance(caught.value, ev.EventadorError) and caught.value.uri == str(blocker / "lake")
    with ev.open_store(tmp_path / "s") as store:  # closed again: not locked, nothing lost
        assert store.last_position == 4


def test_a_second_store_may_not_take_a_shard_that_is_ahead_of_it(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    with ev.open_store(tmp_path / "a", lake=lake) as store:
        fill(store, 5)
    with pytest.raises(ev.LakeError, match="shard 'main' already holds positions up to 5"):
        ev.open_store(tmp_path / "b", lake=lake)
    with ev.open_store(tmp_path / "b", lake=ev.LakeTarget(lake, shard="b")) as store:
        fill(store, 2)
    assert sorted(p["shard"] for p in DeltaTable(lake).partitions()) == ["b", "main"]


def test_a_later_value_of_another_type_keeps_the_columns_type(tmp_path: Path) -> None:
    # Events without a class here get inferred columns: an int column first, text later.
    lake = str(tmp_path / "lake")
    registry = ev.TypeRegistry()
    with ev.open_store(tmp_path / "s", lake=lake, registry=registry) as store:
        store.append("x", [ev.UnknownEvent(event_type="free.Form", data={"n": 1})])
        store.flush()
        store.append("x", [ev.UnknownEvent(event_type="free.Form", data={"n": "one"})])
    schema = pa.schema(DeltaTable(lake).schema().to_arrow())
    assert schema.field("free_Form__n").type == pa.int64()
    rows = ev.open_lake(lake).sql("select free_Form__n, payload_json from events order by position").fetchall()
    assert rows == [(1, '{"n": 1}'), (None, '{"n": "one"}')]


def test_the_core_does_not_import_deltalake(tmp_path: Path) -> None:
    code = (
        "import sys, eventador as ev\n"
        f"s = ev.open_store({str(tmp_path / 's')!r})\n"
        "s.append('a', [ev.UnknownEvent(event_type='t', data={})]); s.close()\n"
        "assert 'deltalake' not in sys.modules, 'deltalake imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ)
    assert done.returncode == 0, done.stderr


def test_recorded_times_survive_the_round_trip(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    when = datetime(2021, 5, 1, tzinfo=UTC)
    with ev.open_store(tmp_path / "s", lake=lake) as store:
        store.append("t", [LakeDeposited(account="t", amount=1, fee=Decimal(0))], occurred_at=when - timedelta(days=1))
        expected = store.read_stream("t")
    assert ev.open_lake(lake).read_stream("t") == expected


def test_payload_json_can_be_left_out(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(lake, payload_json=False)) as store:
        fill(store, 3)
    rows = ev.open_lake(lake).sql("SELECT payload_json, lake_Money_Deposited__amount FROM events ORDER BY 2").fetchall()
    assert rows == [(None, 0), (None, 1), (None, 2)]


def test_a_commit_that_landed_unseen_is_not_published_again(tmp_path: Path) -> None:
    # A timeout after the object store took the commit: the publisher believes it failed.
    lake = str(tmp_path / "lake")
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(lake, max_lag=None)) as store:
        assert store.lake is not None
        fill(store, 6)
        store.flush()
        assert store.lake.sync() == 6
        store.lake.published = 0  # what it knew before the commit
        store.lake.error = ev.LakeError(lake, "timed out")
        assert store.lake.sync() == 6  # the watermark, read again, says it is there
    assert positions(lake) == list(range(1, 7))


def test_only_a_writable_store_in_a_directory_publishes(tmp_path: Path) -> None:
    with pytest.raises(ev.InvalidInputError, match="publishes a lake"):
        ev.open_store(lake=str(tmp_path / "lake"))
    ev.open_store(tmp_path / "s").close()
    with ev.open_store(tmp_path / "s", read_only=True, lake=str(tmp_path / "lake")) as reader:
        assert reader.lake is None  # a reader only fetches evicted files from the lake's cold tier
    assert not (tmp_path / "lake").exists()


class LakeOpened(ev.Event, event_type="lake.Money.Opened"):
    owner: str


def test_two_shards_publish_into_one_table_at_once(tmp_path: Path) -> None:
    # Each adds its own typed columns: concurrent schema changes conflict, and are retried.
    lake = str(tmp_path / "lake")
    stores = [
        ev.open_store(tmp_path / shard, lake=ev.LakeTarget(lake, shard=shard, max_lag=None), flush_every=1000)
        for shard in ("a", "b")
    ]
    try:
        for round_ in range(5):
            fill(stores[0], 5, round_ * 5)
            stores[1].append(f"o-{round_}", [LakeOpened(owner="x")])
            for store in stores:
                store.flush()  # both publishers' threads commit at once
        for store in stores:
            assert store.lake is not None
            deadline = time.monotonic() + 20
            while True:
                try:
                    store.lake.sync()
                    break
                except ev.LakeError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
    finally:
        for store in stores:
            store.close()
    lake_a, lake_b = ev.open_lake(lake, shard="a"), ev.open_lake(lake, shard="b")
    assert lake_a.last_position == 25 and lake_b.last_position == 5
    counts = lake_a.sql("SELECT shard, count(*), count(DISTINCT position) FROM events GROUP BY 1 ORDER BY 1")
    assert counts.fetchall() == [("a", 25, 25), ("b", 5, 5)]


def test_a_flush_hands_its_rows_to_the_publisher_which_publishes_what_reading_the_file_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    read_table = FileSegment.read_table

    def counted(segment: FileSegment) -> pa.Table:
        reads.append(segment.path.name)
        return read_table(segment)

    monkeypatch.setattr(FileSegment, "read_table", counted)
    handed, read = tmp_path / "handed", tmp_path / "read"
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(str(handed), max_lag=None), flush_every=1000) as store:
        assert store.lake is not None
        for flush in range(3):
            fill(store, 10, flush * 10)
            store.flush()
            store.lake.sync()
    assert reads == []  # each publish took its flush's rows from memory
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(str(read), max_lag=None)) as store:
        assert store.lake is not None
        assert store.lake.sync() == 30  # a backlog: read from the files
    assert len(reads) == 3

    def rows(lake: Path) -> pa.Table:
        return pa.table(DeltaTable(str(lake)).to_pyarrow_dataset().to_table()).sort_by("position")

    assert rows(handed).equals(rows(read))


def test_a_failed_commit_is_retried_with_the_same_file_and_nothing_twice(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(str(lake), max_lag=None), flush_every=1000) as store:
        assert store.lake is not None
        published(store, 10)
        blocker = lake / "_delta_log" / f"{DeltaTable(str(lake)).version() + 1:020d}.json"
        blocker.mkdir()  # the next commit cannot be written: its file is, first
        fill(store, 10, 10)
        store.flush()
        with pytest.raises(ev.LakeError, match="publishing from position 11"):
            store.lake.sync()
        blocker.rmdir()
        assert store.lake.sync() == 20
    assert positions(lake) == list(range(1, 21))
    written = {p.relative_to(lake).as_posix() for p in lake.rglob("*.parquet")}
    committed = set(pa.table(DeltaTable(str(lake)).get_add_actions()).column("path").to_pylist())
    # The store's own file, linked again at each attempt under one name: nothing left beside the table.
    assert len(committed) == 2 and committed == written


def test_each_file_carries_the_statistics_readers_skip_files_by(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    when = datetime(2021, 5, 1, 12, 0, 0, 1500, tzinfo=UTC)
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(str(lake), max_lag=None), flush_every=1000) as store:
        assert store.lake is not None
        fill(store, 3)
        store.flush()
        store.lake.sync()  # the first file adds the type's columns: delta-rs writes it
        fill(store, 4, 3)
        store.append("late", [LakeDeposited(account="late", amount=-5, fee=Decimal("2.5"))], occurred_at=when)
        store.flush()
        store.lake.sync()
    actions = pa.table(DeltaTable(str(lake)).get_add_actions(flatten=True)).sort_by("min.position").to_pylist()
    ours = actions[1]
    assert ours["num_records"] == 5 and (ours["min.position"], ours["max.position"]) == (4, 8)
    assert ours["min.stream_id"] == "acc-3" and ours["max.stream_id"] == "late"
    assert ours["min.lake_Money_Deposited__amount"] == -5 and ours["max.lake_Money_Deposited__amount"] == 6
    assert ours["min.lake_Money_Deposited__fee"] == 0.25 and ours["max.lake_Money_Deposited__fee"] == 2.5
    assert ours["null_count.stream_type"] == 5 and ours["null_count.position"] == 0
    # Times widened to the millisecond: the minimum down, the maximum up.
    assert ours["min.occurred_at"] == datetime(2021, 5, 1, 12, 0, 0, 1000, tzinfo=UTC)
    assert ours["max.recorded_at"] >= max(r["max.recorded_at"] for r in actions[:1])
    dataset = DeltaTable(str(lake)).to_pyarrow_dataset()  # its fragments carry the statistics as guarantees
    assert dataset.to_table(filter=pc.field("position") > 3).num_rows == 5


@pytest.fixture
def other_disk(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs: a file system other than the store's, mounted for the test."""
    mount_point = tmp_path / "other"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], capture_output=True, text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip()}): this test needs one")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_table_on_another_file_system_gets_a_copy(tmp_path: Path, other_disk: Path) -> None:
    lake = other_disk / "lake"
    assert os.stat(other_disk).st_dev != os.stat(tmp_path).st_dev  # no hard link can cross
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(str(lake), max_lag=None), flush_every=1000) as store:
        assert store.lake is not None
        for flush in range(2):
            published(store, 10, flush * 10)
        assert set(store.lake.last_parts) == {"stats", "upload", "commit"}
        segment = store.state().segments[-1]
        assert isinstance(segment, FileSegment)
        copies = [p for p in lake.rglob("*.parquet") if p.read_bytes() == segment.path.read_bytes()]
        assert len(copies) == 1 and not os.path.samefile(copies[0], segment.path)
        assert not list(lake.rglob(".*.tmp"))  # the temporary name is gone
    assert positions(lake) == list(range(1, 21))


def test_a_flush_never_fails_for_the_lakes_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object, **kwargs: object) -> pa.Table:
        raise ValueError("no lake columns today")

    lake = tmp_path / "lake"
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(str(lake), max_lag=None), flush_every=1000) as store:
        assert store.lake is not None
        published(store, 10)
        monkeypatch.setattr("eventador.store.lake.with_lake_columns", broken)
        fill(store, 10, 10)
        store.flush()  # written without them, and published converted
        assert "no lake columns today" in caplog.text
        assert store.lake.sync() == 20
        assert set(store.lake.last_parts) == {"convert", "encode", "upload", "commit"}
        assert "payload_json" not in store.state().segments[-1].read_table().column_names
    assert positions(lake) == list(range(1, 21))
    assert ev.open_lake(lake).sql("select count(payload_json) from events").fetchall() == [(20,)]


def test_a_writer_killed_mid_publish_leaves_the_table_equal_to_the_log(tmp_path: Path) -> None:
    """A real child process, flushing every 7 events into a local lake (each file linked into
    the table and committed), killed with SIGKILL; reopened, the table ends exactly the log."""
    lake = tmp_path / "lake"
    acknowledged: dict[str, int] = {}
    kill_writer_after(1.5, str(tmp_path / "s"), str(lake), "{}", "keep", acknowledged=acknowledged)
    assert sum(acknowledged.values()) > 14  # a few flushes, so some files were in the table
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(str(lake), max_lag=None)) as store:
        assert store.lake is not None
        for stream, version in acknowledged.items():
            assert store.stream_version(stream) >= version
        store.flush()
        assert store.lake.sync() == store.last_position
        last = store.last_position
    assert positions(lake) == list(range(1, last + 1))  # nothing lost, nothing twice
    assert not list(lake.rglob("*.tmp"))  # a placing cut short was done again


def test_opening_removes_the_placings_a_crash_cut_short(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(str(lake), max_lag=None)) as store:
        fill(store, 5)
    store_id = read_manifest(tmp_path / "s").store_id
    assert store_id
    folder = lake / "shard=main"
    cut_short = folder / f".000000000006-000000000012-{store_id[:12]}.parquet.tmp"  # linked, never renamed
    cut_short.write_bytes(b"PAR1")
    others = folder / ".000000000006-000000000012-0123456789ab.parquet.tmp"  # another store's: not ours
    others.write_bytes(b"PAR1")
    with ev.open_store(tmp_path / "s", lake=ev.LakeTarget(str(lake), max_lag=None)):
        pass
    assert not cut_short.exists() and others.exists()


def test_a_sharded_store_publishes_every_shard_into_one_table(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    target = ev.LakeTarget(str(lake), max_lag=None)
    with ev.open_sharded(tmp_path / "bank", shards=2, lake=target, flush_every=1000) as bank:
        fill(bank, 40)  # type: ignore[arg-type]  # a sharded store appends as a store does
        bank.flush()
        for i in range(2):
            shard = bank.shard(i)
            assert shard.lake is not None and shard.lake.target.shard == str(i)
            shard.lake.sync()
        truth = bank.sql('SELECT count(*), sum(amount) FROM "lake.Money.Deposited"').fetchall()
        streams = {f"acc-{i}": [r.event for r in bank.read_stream(f"acc-{i}")] for i in range(7)}
        owners = {s: bank.shard_of(s) for s in streams}
    reader = ev.open_lake(lake)
    assert reader.sql("SELECT count(*), sum(lake_Money_Deposited__amount) FROM events").fetchall() == truth
    assert dict(reader.sql("SELECT shard, count(*) FROM events GROUP BY 1").fetchall()).keys() == {"0", "1"}
    for stream, events in streams.items():  # each stream in its shard's partition, whole
        assert [r.event for r in ev.open_lake(lake, shard=str(owners[stream])).read_stream(stream)] == events
    # One writer process per shard (a service): the same partitions.
    with ev.open_shard(tmp_path / "bank", 1, lake=target) as one:
        assert one.shard(1).lake is not None and one.shard(1).lake.target.shard == "1"
        assert one.shard(0).lake is None  # read-only: it publishes nothing


def test_two_stores_claiming_one_shard_the_second_is_refused(tmp_path: Path) -> None:
    """Before, a second store at the first one's position took the shard too: sharing its
    watermark, its events counted as published and never reached the table."""
    lake = str(tmp_path / "lake")
    first = ev.open_store(tmp_path / "a", lake=ev.LakeTarget(lake, max_lag=None))
    try:
        with pytest.raises(ev.LakeError, match="shard 'main' is written by another store"):
            ev.open_store(tmp_path / "b", lake=ev.LakeTarget(lake, max_lag=None))
        with ev.open_store(tmp_path / "b") as store:  # closed again, its events kept
            fill(store, 3)
        published(first, 3)
    finally:
        first.close()
    with ev.open_store(tmp_path / "a", lake=lake):
        pass  # its own shard: reopened as before


def test_stores_claiming_a_new_shard_at_once_one_wins(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    ev.open_store(tmp_path / "first", lake=lake).close()  # the table exists; shard "new" is unclaimed
    outcomes: list[object] = []

    def claim(name: str) -> None:
        try:
            outcomes.append(ev.open_store(tmp_path / name, lake=ev.LakeTarget(lake, shard="new", max_lag=None)))
        except ev.LakeError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=claim, args=(f"s{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stores = [o for o in outcomes if isinstance(o, ev.EventStore)]
    try:
        assert len(stores) == 1 and len(outcomes) == 3
        assert all("written by another store" in str(o) for o in outcomes if not isinstance(o, ev.EventStore))
    finally:
        for store in stores:
            store.close()


def test_placing_a_file_placed_before_leaves_nothing_beside_it(tmp_path: Path) -> None:
    """A crash after the placing and before the commit: the next publish places the same file
    again. Renaming a link onto another link of the same file does nothing (POSIX), so the
    temporary name would stay behind."""
    source = tmp_path / "data" / "000000000001-000000000007.parquet"
    source.parent.mkdir()
    source.write_bytes(b"PAR1 a data file PAR1")
    target = tmp_path / "lake" / "shard=main" / "000000000001-000000000007-abc.parquet"
    link_file(source, target)
    link_file(source, target)
    assert os.path.samefile(source, target)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_a_commit_beaten_by_another_shards_new_columns_is_made_again_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Shard b adds its type's columns after shard a read the table: a's commit (from the older
    snapshot) conflicts, and is made again from the new one, not left to a later retry."""
    lake = str(tmp_path / "lake")
    a = ev.open_store(tmp_path / "a", lake=ev.LakeTarget(lake, shard="a", max_lag=None))
    try:
        with ev.open_store(tmp_path / "b", lake=ev.LakeTarget(lake, shard="b", max_lag=None)) as b:
            b.append("o-1", [LakeOpened(owner="x")])
            b.flush()
            assert b.lake is not None and b.lake.sync() == 1
        assert a.lake is not None
        fill(a, 5)
        a.flush()
        assert a.lake.sync() == 5
        assert "publishing failed" not in caplog.text
    finally:
        a.close()
    assert ev.open_lake(lake, shard="a").last_position == 5
