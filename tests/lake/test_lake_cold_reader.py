"""Read-only openers of a store whose data files are evicted to the cold tier: given the
writer's `lake=`, they fetch the evicted files into a folder of their own, never into the
writer's ``data/``, while the writer goes on flushing, uploading and evicting (a real writer in
the same process, a local lake, and a real SeaweedFS server)."""

from __future__ import annotations

from pathlib import Path

import pytest

import eventador as ev
from eventador.store.catalog import read_manifest
from eventador.store.segments import FileSegment
from tests.support.coldtier import hidden


class ReaderDeposited(ev.Event, event_type="lake.coldreader.Deposited"):
    amount: int


def fill(store: ev.EventStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.append(f"acc-{i % 5}", [ReaderDeposited(amount=i)])


def data_files(path: Path) -> list[str]:
    """Everything in the store's data/ folder (the writer's alone)."""
    return sorted(p.name for p in (path / "data").iterdir())


def fetched_into(store: ev.EventStore) -> set[Path]:
    return {s.path.parent for s in store.state().segments if isinstance(s, FileSegment)}


def answers(store: ev.EventStore) -> dict[str, object]:
    return {
        "stream": store.read_stream("acc-3"),
        "all": [r.position for r in store.read_all()],
        "sql": store.sql('SELECT count(*), sum(amount) FROM "lake.coldreader.Deposited"').fetchall(),
        "versions": [store.stream_version(f"acc-{i}") for i in range(5)],
        "past": store.as_of(60).read_stream("acc-1"),
    }


@pytest.mark.parametrize("local_bytes", [None, 0])
def test_a_reader_with_the_lake_fetches_evicted_files_into_its_own_folder(
    tmp_path: Path, local_bytes: int | None
) -> None:
    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)
    reading = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=local_bytes)
    with ev.open_store(tmp_path / "s", lake=target, flush_every=10**6, durability="none") as writer:
        for round_ in range(3):
            fill(writer, 60, round_ * 60)
            writer.flush()
        truth = answers(writer)
    with ev.open_store(tmp_path / "s", lake=target, flush_every=10**6, durability="none") as writer:
        assert writer.lake is not None
        writer.lake.sync()
        assert data_files(tmp_path / "s") == []  # every file evicted
        with ev.open_store(tmp_path / "s", read_only=True, lake=reading) as reader:
            (cache,) = fetched_into(reader)
            assert cache != tmp_path / "s" / "data"
            assert answers(reader) == truth
            assert data_files(tmp_path / "s") == []  # nothing fetched into the writer's folder
            fill(writer, 5, 180)  # the writer goes on: a new file (too small to merge), uploaded and evicted
            writer.flush()
            writer.lake.sync()
            reader.refresh()
            assert reader.last_position == 185
            assert [r.event.amount for r in reader.read_stream("acc-0")][-3:] == [170, 175, 180]
            newest = cache / "000000000181-000000000185.parquet"
            assert newest.exists()  # fetched by the read
            reader.refresh()
            # A bounded reader keeps no more than that of its copies (but those a SQL relation may still read).
            assert newest.exists() == (local_bytes is None)
            assert data_files(tmp_path / "s") == []
        assert not cache.exists()  # its copies go with it


def test_a_reader_pins_the_local_files_and_fetches_the_evicted_ones(tmp_path: Path) -> None:
    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)
    with ev.open_store(tmp_path / "s", lake=target, flush_every=10**6, durability="none") as writer:
        assert writer.lake is not None
        fill(writer, 50)
        writer.flush()
        writer.lake.sync()  # the first file uploaded and evicted
        fill(writer, 50, 50)
        writer.flush()  # the second one not yet published: local
        (local,) = data_files(tmp_path / "s")
        with ev.open_store(tmp_path / "s", read_only=True, lake=target) as reader:
            writer.lake.sync()  # uploaded, but the reader pins it: it stays
            assert data_files(tmp_path / "s") == [local]
            assert len(list(reader.read_all())) == 100
            folders = fetched_into(reader)  # the pinned local file, and the fetched one in the reader's folder
            assert tmp_path / "s" / "data" in folders and len(folders) == 2
        writer.lake.sync()
        assert data_files(tmp_path / "s") == []


def test_a_reader_without_the_lake_says_how_to_read_evicted_files(tmp_path: Path) -> None:
    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)
    with ev.open_store(tmp_path / "s", lake=target, flush_every=10**6, durability="none") as writer:
        fill(writer, 50)
    with pytest.raises(ev.CorruptionError, match="read-only with its writer's lake="):
        ev.open_store(tmp_path / "s", read_only=True)


def test_a_reader_fetches_from_s3(tmp_path: Path, s3_lake: tuple[str, dict[str, str]]) -> None:
    uri, options = s3_lake
    target = ev.LakeTarget(uri, storage_options=options, max_lag=None, local_bytes=0)
    with ev.open_store(tmp_path / "s", lake=target, flush_every=10**6, durability="none") as writer:
        fill(writer, 100)
        truth = answers(writer)
    with ev.open_store(tmp_path / "s", lake=target) as writer:
        assert writer.lake is not None
        writer.lake.sync()
        assert data_files(tmp_path / "s") == []
        with ev.open_store(tmp_path / "s", read_only=True, lake=target) as reader:
            assert answers(reader) == truth
            assert data_files(tmp_path / "s") == []


def test_a_reader_opens_without_downloading_evicted_files(tmp_path: Path) -> None:
    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)
    with ev.open_store(tmp_path / "s", lake=target, flush_every=10**6, durability="none") as writer:
        for round_ in range(3):
            fill(writer, 60, round_ * 60)
            writer.flush()
        truth = answers(writer)
    summaries = tmp_path / "s" / "summaries"
    with ev.open_store(tmp_path / "s", lake=target) as writer:
        assert writer.lake is not None
        writer.lake.sync()
        assert sorted(p.name for p in summaries.iterdir()) == sorted(read_manifest(tmp_path / "s").uploaded)
        with hidden(target), ev.open_store(tmp_path / "s", read_only=True, lake=target) as reader:
            # Opened from the writer's summaries: nothing fetched (the copies are not even there).
            assert [reader.stream_version(f"acc-{i}") for i in range(5)] == truth["versions"]
            assert reader.last_position == 180
            with pytest.raises(ev.LakeError, match="cannot fetch"):
                reader.read_stream("acc-3")
        with ev.open_store(tmp_path / "s", read_only=True, lake=target) as reader:
            assert answers(reader) == truth  # the copies are back: reads fetch them
        (summaries / sorted(read_manifest(tmp_path / "s").uploaded)[0]).write_bytes(b"damaged")
        with ev.open_store(tmp_path / "s", read_only=True, lake=target) as reader:
            assert answers(reader) == truth  # a damaged summary costs a fetch, nothing more
