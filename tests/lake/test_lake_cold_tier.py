"""The Parquet tier in object storage (``LakeTarget(local_bytes=...)``): data files uploaded beside
the lake table, evicted locally, fetched again on a read. A real SeaweedFS server (its own where a
test kills it), real files, and a real writer process killed with SIGKILL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

import eventador as ev
from eventador.store.catalog import read_manifest
from eventador.store.coldtier import ColdTier
from eventador.store.pins import Pins
from eventador.store.segments import FileSegment
from tests.support.coldtier import kill_writer_after


class ColdDeposited(ev.Event, event_type="lake.cold.Deposited"):
    amount: int


class ColdDeposit(ev.Command):
    amount: int


class ColdBalance(ev.State):
    balance: int = 0


class ColdAccount(ev.AggregateRoot[ColdBalance]):
    @property
    def initial_state(self) -> ColdBalance:
        return ColdBalance()

    def handle_command(self, state: ColdBalance, command: ev.Command) -> list[ev.Event]:
        assert isinstance(command, ColdDeposit)
        return [ColdDeposited(amount=command.amount)]

    def apply_event(self, state: ColdBalance, event: ev.Event) -> ColdBalance:
        assert isinstance(event, ColdDeposited)
        return state.copy_with(balance=state.balance + event.amount)


def fill(store: ev.EventStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.append(f"acc-{i % 5}", [ColdDeposited(amount=i)])


def files(store: ev.EventStore) -> list[FileSegment]:
    return [s for s in store.state().segments if isinstance(s, FileSegment)]


def local(store: ev.EventStore) -> list[str]:
    """The data files the catalog names that are on the local disk."""
    return [s.path.name for s in files(store) if s.path.exists()]


def answers(store: ev.EventStore) -> dict[str, Any]:
    """What every read path says of the store."""
    past = store.as_of(150)
    return {
        "stream": store.read_stream("acc-3"),
        "all": list(store.read_all()),
        "sql": store.sql(
            'SELECT stream_id, count(*), sum(amount) FROM "lake.cold.Deposited" GROUP BY 1 ORDER BY 1'
        ).fetchall(),
        "state": ev.Repository(store, ColdAccount).get("acc-4"),
        "state-at": ev.Repository(store, ColdAccount).get("acc-4", as_of=150),
        "past": past.read_stream("acc-2"),
        "past-sql": past.sql("SELECT count(*), max(position) FROM events").fetchall(),
    }


def test_a_store_without_local_files_answers_as_one_that_kept_them(
    tmp_path: Path, s3_lake: tuple[str, dict[str, str]]
) -> None:
    uri, options = s3_lake
    kept = ev.LakeTarget(uri, storage_options=options, max_lag=None)
    with ev.open_store(tmp_path / "s", lake=kept, flush_every=60) as store:
        fill(store, 400)
        store.flush()
        truth = answers(store)
        names = [s.path.name for s in files(store)]
    cold = ev.LakeTarget(uri, storage_options=options, max_lag=None, local_bytes=0)
    with ev.open_store(tmp_path / "s", lake=cold) as store:
        assert store.lake is not None
        store.lake.sync()
        assert local(store) == []  # every file uploaded, then evicted
        assert set(read_manifest(tmp_path / "s").uploaded) == set(names)
        assert answers(store) == truth  # each read path fetched what it needed
    with ev.open_store(tmp_path / "s", lake=cold) as store:  # opening fetches, checks and drops each file
        assert store.lake is not None
        store.lake.sync()
        assert local(store) == []
        assert answers(store) == truth
        fill(store, 10, 400)  # and the store goes on
    with ev.open_store(tmp_path / "s", lake=cold) as store:
        assert store.last_position == 410


def test_evicted_files_need_the_lake_to_open(tmp_path: Path) -> None:
    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)
    with ev.open_store(tmp_path / "s", lake=target, flush_every=40) as store:
        fill(store, 100)
    assert not list((tmp_path / "s" / "data").glob("*.parquet"))
    copies = sorted(p.name for p in (tmp_path / "lake" / "_eventador" / "main").glob("*.parquet"))
    assert copies and set(copies) <= set(read_manifest(tmp_path / "s").uploaded)
    with pytest.raises(ev.CorruptionError, match="evicted: its copy is in the cold tier"):
        ev.open_store(tmp_path / "s")
    with pytest.raises(ev.CorruptionError, match="evicted to the cold tier"):
        ev.repair_store(tmp_path / "s")
    with ev.open_store(tmp_path / "s", lake=str(tmp_path / "lake")) as store:  # no local_bytes: fetched, kept
        assert [r.event.amount for r in store.read_stream("acc-1")] == list(range(1, 100, 5))
    assert len(list((tmp_path / "s" / "data").glob("*.parquet"))) == len(copies)


def test_a_file_a_reader_pins_or_a_sql_relation_reads_is_not_evicted(tmp_path: Path) -> None:
    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)
    with ev.open_store(tmp_path / "s", lake=target, flush_every=10**6) as store:
        assert store.lake is not None
        fill(store, 50)
        store.flush()
        (segment,) = files(store)
        pins = Pins()  # as a fleet run and a read-only opener hold the files they read
        pin(segment, pins)
        store.lake.sync()
        assert segment.path.name in read_manifest(tmp_path / "s").uploaded  # uploaded, but kept
        assert segment.path.exists()
        with ev.open_store(tmp_path / "s", read_only=True) as reader:  # pins every file it reads
            pins.release()
            store.lake.sync()
            assert segment.path.exists()
            assert len(list(reader.read_all())) == 50
        store.lake.sync()
        assert not segment.path.exists()
        relation = store.sql('SELECT sum(amount) FROM "lake.cold.Deposited"')  # fetched, and held while it may run
        store.lake.sync()
        assert segment.path.exists()
        assert relation.fetchall() == [(sum(range(50)),)]


def pin(segment: FileSegment, pins: Pins) -> None:
    """Pin the segment's file as a fleet run does: fetched first, again if the publisher's thread
    evicted it before the pin took hold."""
    for _ in range(50):
        segment.ensure_local()
        try:
            pins.pin(segment.path)
            return
        except FileNotFoundError:
            continue
    raise AssertionError("the file kept vanishing")


@pytest.mark.parametrize("rounds", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_a_writer_killed_mid_upload_or_eviction_loses_nothing_acknowledged(
    tmp_path: Path, s3_lake: tuple[str, dict[str, str]], rounds: int
) -> None:
    uri, options = s3_lake
    acknowledged: dict[str, int] = {}
    cold = ColdTier(uri, options, "main")

    def uploaded() -> bool:
        copies = cold.fs.get_file_info(pafs.FileSelector(cold.base, allow_not_found=True))
        return any(c.base_name.endswith(".parquet") for c in copies)

    for round_ in range(rounds):  # killed once the child has uploaded, while it goes on uploading
        kill_writer_after(1.0 + round_ * 0.7, str(tmp_path / "s"), uri, json.dumps(options), acknowledged=acknowledged,
                          until=uploaded)
    target = ev.LakeTarget(uri, storage_options=options, max_lag=None, local_bytes=0)
    with ev.open_store(tmp_path / "s", lake=target) as store:
        assert store.lake is not None
        for stream, version in acknowledged.items():
            assert store.stream_version(stream) >= version
            assert [r.version for r in store.read_stream(stream)] == list(range(1, store.stream_version(stream) + 1))
        assert len(list(store.read_all())) == store.last_position
        store.lake.sync()
        assert local(store) == []
        assert store.verify().ok  # evicted files are not missing ones


def test_a_missing_file_never_uploaded_is_still_corruption(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "s", flush_every=10**6) as store:
        fill(store, 50)
        store.flush()
        (segment,) = files(store)
    segment.path.unlink()
    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)
    with pytest.raises(ev.CorruptionError, match="listed in the catalog but missing"):
        ev.open_store(tmp_path / "s", lake=target)


def test_a_read_begun_before_a_merge_of_evicted_files_reads_on(tmp_path: Path) -> None:
    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)
    with ev.open_store(tmp_path / "s", lake=target, flush_every=10**6, durability="none") as store:
        assert store.lake is not None
        for round_ in range(3):
            fill(store, 300, round_ * 300)
            store.flush()
        store.lake.sync()
        assert local(store) == []
        reading = store.read_all()  # its files are the three evicted ones
        first = [next(reading) for _ in range(10)]
        assert store.compact() == 1  # fetches the three, merges them into one
        store.lake.sync()
        assert local(store) == []  # the merged file uploaded and evicted in turn
        rest = list(reading)  # the merged-away files, fetched again from their copies
        assert [r.position for r in first + rest] == list(range(1, 901))


def test_a_fetched_copy_that_is_not_the_file_is_refused(tmp_path: Path) -> None:
    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)
    copies = tmp_path / "lake" / "_eventador" / "main"
    with ev.open_store(tmp_path / "s", lake=target, flush_every=10**6) as store:
        assert store.lake is not None
        fill(store, 100)
        store.flush()
        fill(store, 50, 100)
        store.flush()
        store.lake.sync()
        first, second = files(store)
        original = (copies / first.path.name).read_bytes()
        damaged = bytearray(original)
        damaged[len(damaged) // 3] ^= 0x40
        (copies / first.path.name).write_bytes(damaged)
        with pytest.raises(ev.CorruptionError, match="checksum"):
            store.read_stream("acc-1")
        assert not first.path.exists()  # a damaged copy is not kept
        (copies / first.path.name).write_bytes((copies / second.path.name).read_bytes())  # another file, sound
        with pytest.raises(ev.CorruptionError, match="is another file"):
            store.read_stream("acc-1")
        (copies / first.path.name).write_bytes(original)
        assert len(store.read_stream("acc-1")) == 30


def test_a_fleet_run_fetches_and_pins_evicted_files(tmp_path: Path) -> None:
    from eventador import fleet

    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)
    with ev.open_store(tmp_path / "s", lake=target, flush_every=10**6, durability="none") as store:
        assert store.lake is not None
        for round_ in range(2):
            fill(store, 100, round_ * 100)
            store.flush()
        expected = ev.Repository(store, ColdAccount).states()
    with ev.open_store(tmp_path / "s", lake=target, flush_every=10**6, durability="none") as store:
        assert store.lake is not None
        store.lake.sync()  # (the SQL above kept its files a while)
        assert local(store) == []
        assert fleet.states(ev.Repository(store, ColdAccount), None, buckets=3).equals(expected)


def test_a_bounded_local_tier_keeps_the_most_recently_read_files(tmp_path: Path) -> None:
    kept = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None)
    with ev.open_store(tmp_path / "s", lake=kept, flush_every=10**6, durability="none") as store:
        for round_ in range(3):
            fill(store, 200, round_ * 200)
            store.flush()
        sizes = {s.path.name: s.bytes for s in files(store)}
    first, second, third = sizes
    bound = sum(sizes.values()) - min(sizes.values())  # room for any two of them, not for three
    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=bound)
    with ev.open_store(tmp_path / "s", lake=target) as store:
        assert store.lake is not None
        segments = {s.path.name: s for s in files(store)}
        for name in (third, first, second):  # read in this order: the third is the least recently read
            segments[name].read_table()
        store.lake.sync()
        assert sorted(local(store)) == sorted([first, second])
        segments[third].read_table()  # fetched: now the first is the least recently read
        store.lake.sync()
        assert sorted(local(store)) == sorted([second, third])


def test_a_cold_tier_where_it_cannot_live_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ev.LakeError, match=r"lake gs://bucket/events: a cold tier .* not gs://"):
        ev.open_store(tmp_path / "s", lake=ev.LakeTarget("gs://bucket/events", local_bytes=0))
    with pytest.raises(ev.InvalidInputError, match="local_bytes must be"):
        ev.LakeTarget(str(tmp_path / "lake"), local_bytes=-1)


def test_the_object_store_copies_the_tables_file_itself(tmp_path: Path, s3_lake: tuple[str, dict[str, str]]) -> None:
    uri, options = s3_lake
    cold = ColdTier(uri, options, "main")
    local = tmp_path / "000000000001-000000000002.parquet"
    local.write_bytes(b"local bytes!")
    twin = "shard=main/twin.parquet"
    with cold.fs.open_output_stream(f"{cold.root}/{twin}") as out:
        out.write(b"table bytes!")  # the same size, other bytes: which one the copy holds tells who made it
    cold.upload(local, twin)
    with cold.fs.open_input_stream(f"{cold.base}/{local.name}") as copy:
        assert copy.read() == b"table bytes!"  # copied by the object store, no bytes sent
    # A twin that is gone (a vacuum of the table): the file is uploaded as any other.
    other = tmp_path / "000000000003-000000000004.parquet"
    other.write_bytes(b"uploaded")
    cold.upload(other, "shard=main/gone.parquet")
    with cold.fs.open_input_stream(f"{cold.base}/{other.name}") as copy:
        assert copy.read() == b"uploaded"


def test_on_s3_the_cold_copy_is_the_tables_file(tmp_path: Path, s3_lake: tuple[str, dict[str, str]]) -> None:
    uri, options = s3_lake
    target = ev.LakeTarget(uri, storage_options=options, max_lag=None, local_bytes=0)
    with ev.open_store(tmp_path / "s", lake=target, flush_every=10**6) as store:
        assert store.lake is not None
        for flush in range(2):  # the second flush's file is the table's as it is
            fill(store, 30, flush * 30)
            store.flush()
            store.lake.sync()
        assert set(store.lake.last_parts) == {"stats", "upload", "commit"}
        segment = files(store)[-1]
        assert not segment.path.exists()  # evicted: its copy is in the cold tier
        cold = ColdTier(uri, options, "main")
        (placed,) = [f for f in ev.open_lake(uri, storage_options=options).files() if segment.path.stem in f]
        with cold.fs.open_input_stream(f"{cold.base}/{segment.path.name}") as copy, \
                cold.fs.open_input_stream(placed.removeprefix("s3://")) as table_file:
            assert copy.read() == table_file.read()
        assert [r.event.amount for r in store.read_stream("acc-1")] == list(range(1, 60, 5))  # fetched back
