"""Copies in the cold tier of data files that compaction merged away are deleted after a grace
period (reads begun before the merge may still fetch them), from a record the catalog keeps in
the transaction that forgets the files, and never while a listed file has that name. A local
lake and a real SeaweedFS server; the store's clock is moved past the grace period."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.fs as pafs
import pytest

import eventador as ev
from eventador.store.catalog import Catalog, ColdSummary, FileEntry
from eventador.store.coldtier import ColdTier
from eventador.store.flushing import COPY_GRACE_SECONDS


class MergedDeposited(ev.Event, event_type="lake.coldmerge.Deposited"):
    amount: int


def fill(store: ev.EventStore, n: int, start: int = 0) -> None:
    store.append_many([(f"acc-{i % 5}", [MergedDeposited(amount=i)]) for i in range(start, start + n)])


def copies(target: ev.LakeTarget) -> list[str]:
    cold = ColdTier(target.uri, target.storage_options, target.shard)
    found = cold.fs.get_file_info(pafs.FileSelector(cold.base, allow_not_found=True))
    return sorted(c.base_name for c in found if c.base_name.endswith(".parquet"))


def lake_target(tmp_path: Path, request: pytest.FixtureRequest, where: str) -> ev.LakeTarget:
    if where == "s3":
        uri, options = request.getfixturevalue("s3_lake")
        return ev.LakeTarget(uri, storage_options=options, max_lag=None, local_bytes=0)
    return ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)


def merged_store(path: Path, target: ev.LakeTarget, clock: ev.ManualClock) -> ev.EventStore:
    """A store whose three evicted files are merged into one (its copy uploaded); returns it open."""
    store = ev.open_store(path, lake=target, flush_every=10**6, durability="none", clock=clock)
    assert store.lake is not None
    for round_ in range(3):
        fill(store, 300, round_ * 300)
        store.flush()
    store.lake.sync()
    return store


@pytest.mark.parametrize("where", ["local", "s3"])
def test_copies_of_merged_away_files_go_after_the_grace_period(
    tmp_path: Path, request: pytest.FixtureRequest, where: str
) -> None:
    target = lake_target(tmp_path, request, where)
    clock = ev.ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
    with merged_store(tmp_path / "s", target, clock) as store:
        assert store.lake is not None
        old = copies(target)
        assert len(old) == 3
        reading = store.read_all()
        first = [next(reading) for _ in range(10)]  # a read begun before the merge
        assert store.compact() == 1
        store.lake.sync()
        (merged,) = set(copies(target)) - set(old)
        assert copies(target) == sorted([*old, merged])  # kept for the reads begun before
        clock.advance(seconds=COPY_GRACE_SECONDS - 1)
        store.lake.sync()
        assert copies(target) == sorted([*old, merged])
        rest = list(reading)  # fetches the merged-away files from their copies
        assert [r.position for r in first + rest] == list(range(1, 901))
        clock.advance(seconds=2)
        store.lake.sync()
        assert copies(target) == [merged]
    with ev.open_store(tmp_path / "s", lake=target) as store:
        assert [r.position for r in store.read_all()] == list(range(1, 901))


def test_the_record_outlives_a_restart_and_a_deletion_cut_short(tmp_path: Path) -> None:
    target = ev.LakeTarget(str(tmp_path / "lake"), max_lag=None, local_bytes=0)
    with merged_store(tmp_path / "s", target, ev.ManualClock(datetime(2026, 3, 1, tzinfo=UTC))) as store:
        old = copies(target)
        assert store.compact() == 1
    # Closed before the grace period ended (as by a crash); one copy already deleted, its record
    # not yet forgotten (as by a crash between the two).
    (Path(target.uri) / "_eventador" / "main" / old[0]).unlink()
    later = ev.ManualClock(datetime(2026, 3, 1, 1, 0, 1, tzinfo=UTC))
    keeping = ev.LakeTarget(target.uri, max_lag=None)  # (and opened without local_bytes this time)
    with ev.open_store(tmp_path / "s", lake=keeping, clock=later) as store:
        assert store.lake is not None
        store.lake.sync()
        assert len(copies(target)) == 1
        assert store.sql("SELECT count(*) FROM events").fetchall() == [(900,)]


def test_a_copy_of_a_listed_file_is_never_deleted(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    try:
        a, b = FileEntry("a.parquet", 1, 5, 5, 100), FileEntry("b.parquet", 6, 9, 4, 90)
        catalog.replace([a, b], [])
        for entry in (a, b):
            assert catalog.mark_uploaded(entry.name, ColdSummary({"s": entry.last_position}, 1))
        catalog.replace([FileEntry("ab.parquet", 1, 9, 9, 150)], [a.name, b.name], now=1000.0)
        assert catalog.discarded(before=999.0) == []  # within the grace period
        assert catalog.discarded(before=1000.0) == [a.name, b.name]
        catalog.replace([a, b], ["ab.parquet"], now=2000.0)  # listed again (a merge undone)
        assert catalog.discarded(before=10**12) == []
        assert catalog.uploaded() == set()  # to be uploaded again: the same bytes
    finally:
        catalog.close()
