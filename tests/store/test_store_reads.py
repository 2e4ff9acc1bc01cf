"""Stream reads: the lean replay read, and the cache of decoded row groups."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import eventador as ev
from eventador.store.cache import NotInMemory, column_cache, memory_only, set_cache_size
from eventador.store.segments import python_values
from tests.support.aggregate_domain import CounterActor, CounterIncrementedEvent
from tests.support.aio import run
from tests.support.domain import T0, deposited, opened, withdrawn


def fill(store: ev.EventStore, stream: str, n: int) -> None:
    """`n` events of mixed types in appends of one to three, other streams in between."""
    store.append(stream, opened(stream), occurred_at=T0)
    k = 1
    while k < n:
        batch = [deposited(str(k), stream), withdrawn("1", stream), deposited("2", stream, note="x")][: min(3, n - k)]
        store.append(stream, batch, occurred_at=T0 + timedelta(seconds=k))
        store.append(f"other-{k}", deposited(str(k), f"other-{k}"))
        k += len(batch)


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_replay_gives_the_events_read_stream_gives_from_any_version(tmp_path: Path, where: str) -> None:
    path = None if where == "memory" else tmp_path / "store"
    with ev.open_store(path, flush_every=7) as store:  # the stream spans many files and the hot tier
        fill(store, "acc-1", 40)
        store.append("acc-1", deposited("5", "acc-1"))  # no occurred_at: its recorded time stands in
        for start in (1, 2, 17, 41, 42):
            records = store.read_stream("acc-1", from_version=start)
            replay = store.replay("acc-1", from_version=start)
            assert replay.events == [r.event for r in records]
            assert replay.last_version == (records[-1].version if records else 0)
            if records:
                assert replay.first_version == start
                assert ev.store.records.micros_to_datetime(replay.last_occurred_us) == records[-1].occurred_at


def test_replay_of_a_past_view_keeps_to_its_point(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "store", flush_every=5) as store:
        fill(store, "acc-1", 12)
        past = store.as_of(T0 + timedelta(seconds=4), by="occurred_at")
        replay = past.replay("acc-1")
        assert replay.events == [r.event for r in past.read_stream("acc-1")]
        assert replay.last_version == 7  # appends at T0, T0+1s (3 events), T0+4s (3 events)


def test_a_second_read_of_a_stream_decodes_nothing_and_a_compacted_store_reads_right(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "store") as store:
        fill(store, "acc-1", 20)
        store.flush()
        store.append("acc-1", deposited("3", "acc-1"))
        store.flush()
        assert store.info()["files"] == 2
        expected = store.read_stream("acc-1")
        misses = column_cache.misses
        assert store.read_stream("acc-1") == expected
        assert column_cache.misses == misses  # every column chunk came from the cache
        assert store.compact(min_files=2) == 1
        assert store.read_stream("acc-1") == expected
        assert column_cache.misses > misses  # the merged file is new: its chunks were decoded


def test_the_cache_size_can_be_bounded_and_turned_off(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "store", flush_every=10) as store:
        fill(store, "acc-1", 30)
        store.flush()
        store.read_stream("acc-1")
        try:
            set_cache_size(0)
            assert column_cache.nbytes == 0
            misses = column_cache.misses
            store.read_stream("acc-1")
            store.read_stream("acc-1")
            assert column_cache.nbytes == 0 and column_cache.misses > misses
        finally:
            set_cache_size(64 * 1024 * 1024)
    for bad in (-1, 1.5, True, "64MB"):
        with pytest.raises(ev.InvalidInputError, match="max_bytes"):
            set_cache_size(bad)  # type: ignore[arg-type]


def test_memory_only_reads_serve_what_the_cache_holds_and_refuse_the_rest(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "store") as store:
        fill(store, "acc-1", 20)
        store.flush()
    with ev.open_store(tmp_path / "store") as store:  # new files: nothing of them cached
        with pytest.raises(NotInMemory), memory_only():
            store.replay("acc-1")
        expected = store.replay("acc-1")
        with memory_only():
            assert store.replay("acc-1") == expected
        # A file another thread is reading: memory_only() gives up rather than wait for it.
        segment = store.state().segments[0]
        with segment._lock, pytest.raises(NotInMemory), memory_only():  # type: ignore[attr-defined]
            store.replay("acc-1")
        assert store.replay("acc-1") == expected


def test_an_actor_recovers_inline_when_memory_holds_its_stream_and_in_a_thread_when_not(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "store") as store:
        store.append("c-1", [CounterIncrementedEvent(aggregate_id="c-1", value=2)] * 40)
        store.flush()
    with ev.open_store(tmp_path / "store") as store:
        threads: list[str] = []
        replay = store.replay

        def watched(stream_id: str, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return replay(stream_id, **kwargs)

        store.replay = watched  # type: ignore[method-assign]

        async def recover() -> int:
            counter = CounterActor(persistence_id="c-1", event_store=store)
            await counter.start()
            return counter.value

        assert run(recover()) == 80  # the files' chunks were not in memory: a worker thread read them
        assert run(recover()) == 80  # now they are: read right on the loop
        main = threading.current_thread().name
        assert threads[0] != main and threads[-1] == main


def test_stream_reads_of_files_give_what_a_full_scan_gives_whatever_each_row_group_holds(tmp_path: Path) -> None:
    """Stream reads skip columns that a row group's statistics say are all null; the
    records must not change for it."""
    with ev.open_store(tmp_path / "store") as store:
        streams = [f"acc-{i:03d}" for i in range(40)]
        for rnd in range(120):
            for k, sid in enumerate(streams):
                batch = [deposited(str(rnd), sid), withdrawn("1", sid), deposited("2", sid, note=None)][: 1 + k % 3]
                # Files are sorted by stream: only the first row group holds metadata and own times.
                store.append(
                    sid,
                    batch,
                    metadata={"by": sid} if k < 6 and k % 2 else None,
                    occurred_at=T0 + timedelta(seconds=rnd) if k < 6 and rnd < 50 else None,
                )
        store.flush()
        (file,) = (tmp_path / "store" / "data").glob("*.parquet")
        meta = pq.ParquetFile(file).metadata
        column = meta.schema.names.index("metadata")
        nulls = [meta.row_group(g).column(column).statistics.null_count for g in range(meta.num_row_groups)]
        rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        assert nulls[0] < rows[0] and nulls[-1] == rows[-1]  # groups with and without metadata
        by_stream: dict[str, list[ev.RecordedEvent]] = {}
        for record in store.read_all():
            by_stream.setdefault(record.stream_id, []).append(record)
        for sid in streams:
            records = store.read_stream(sid)
            assert records == by_stream[sid]
            assert [r.metadata for r in records] == [r.metadata for r in by_stream[sid]]
            assert store.read_stream(sid, from_version=5, to_version=9) == by_stream[sid][4:9]
            assert store.replay(sid).events == [r.event for r in by_stream[sid]]


class Noted(ev.Event, event_type="test.reads.Noted"):
    account_id: str
    currency: str
    text: str


def test_files_compress_only_the_columns_compression_shrinks(tmp_path: Path) -> None:
    """Few short values (ids, types, currencies) and random event ids are stored
    uncompressed, versions and positions delta-packed; free text stays compressed."""
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "the", "store", "flushes"]
    with ev.open_store(tmp_path / "store") as store:
        for i in range(6000):
            text = " ".join(words[(i * k) % len(words)] for k in range(1, 40)) + f" #{i}"
            store.append(f"acc-{i % 30:02d}", [Noted(account_id=f"acc-{i % 30:02d}", currency="EUR", text=text)])
        store.flush()
        (file,) = (tmp_path / "store" / "data").glob("*.parquet")
        group = pq.ParquetFile(file).metadata.row_group(0)
        layout = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
        for name in ("stream_id", "event_type", "event_id", "test.reads.Noted.currency", "test.reads.Noted.account_id"):
            assert layout[name].compression == "UNCOMPRESSED", name
        for name in ("position", "version"):
            assert "DELTA_BINARY_PACKED" in layout[name].encodings, name
        text = layout["test.reads.Noted.text"]
        assert text.compression == "ZSTD"
        assert text.total_compressed_size * 4 < text.total_uncompressed_size
        records = store.read_stream("acc-07")
        assert [r.event for r in records] == [r.event for r in store.read_all() if r.stream_id == "acc-07"]
        assert records[-1].event.text.endswith("#5977") and len(records) == 200
        got = store.sql('SELECT count(*), max(version) FROM "test.reads.Noted" WHERE currency = ?', ["EUR"]).fetchall()
        assert got == [(6000, 200)]


def test_text_read_as_dictionaries_gives_the_values_of_plain_columns() -> None:
    """Stream reads take text columns as dictionaries; converted back they are the
    plain column's values, nulls and chunks with different dictionaries included."""
    chunks = [pa.array(["a", None, "b", "a"]), pa.array(["c", "c"]), pa.array([None, None], pa.string())]
    plain = pa.chunked_array(chunks)
    encoded = pa.chunked_array([chunk.dictionary_encode() for chunk in plain.chunks])
    assert python_values(encoded) == plain.to_pylist() == ["a", None, "b", "a", "c", "c", None, None]
    assert python_values(plain) == plain.to_pylist()


def test_a_stream_across_row_groups_with_and_without_a_text_value_reads_back(tmp_path: Path) -> None:
    """A row group where a text field is null throughout is not decoded (its statistics
    say so); next to one read as a dictionary, the stream still reads whole."""
    with ev.open_store(tmp_path / "store") as store:
        notes = [None] * 4200 + ["late"] * 800
        store.append("acc-1", [deposited("1", "acc-1", note=n) for n in notes], stream_type="account")
        store.append("acc-2", [deposited("2", "acc-2")] * 10)
        store.flush()
        (file,) = (tmp_path / "store" / "data").glob("*.parquet")
        assert pq.ParquetFile(file).metadata.num_row_groups == 2
        records = store.read_stream("acc-1")
        assert [r.event.note for r in records] == notes
        assert [r.event for r in store.read_stream("acc-2")] == [deposited("2", "acc-2")] * 10
        assert store.replay("acc-1").events == [r.event for r in records]
        assert store.read_stream("acc-1", from_version=4190, to_version=4210) == records[4189:4210]
