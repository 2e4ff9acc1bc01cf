"""Compaction: which files merge (store/compaction.py), and what a real store does with it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

import eventador as ev
from eventador.store.compaction import FANOUT, full_merge, tier, tiered_merge
from tests.support.domain import deposited

Choose = Callable[[list[int]], range | None]


def simulate(choose: Choose, flushes: int, rows: int = 1000) -> tuple[list[int], list[int]]:
    """Flush `flushes` files of `rows` rows, merging what `choose` picks after each flush.

    Returns the files' row counts at the end, and how often each flushed row was rewritten.
    """
    files: list[tuple[int, int]] = []  # (first flush, flushes) per file
    rewrites = [0] * flushes
    for f in range(flushes):
        files.append((f, 1))
        while (run := choose([n * rows for _, n in files])) is not None:
            merged = files[run.start : run.stop]
            for first, n in merged:
                for i in range(first, first + n):
                    rewrites[i] += 1
            files[run.start : run.stop] = [(merged[0][0], sum(n for _, n in merged))]
    return [n * rows for _, n in files], rewrites


def tiered(rows: list[int]) -> range | None:
    return tiered_merge(rows, max_rows=2_000_000)


def test_a_tier_spans_a_factor_of_the_fanout() -> None:
    assert FANOUT == 4
    assert [tier(n) for n in (1, 3, 4, 15, 16, 1000, 1024)] == [0, 0, 1, 1, 2, 4, 5]
    assert tier(8, 3) == 1 and tier(9, 3) == 2


def test_files_merge_once_a_tier_has_fanout_of_them_side_by_side() -> None:
    assert tiered([10, 10, 10]) is None
    assert tiered([10, 10, 10, 10]) == range(0, 4)
    # The lowest full tier first; its merged file may fill the next tier.
    assert tiered([160, 40, 40, 40, 10, 10, 10, 10]) == range(4, 8)
    assert tiered([160, 40, 40, 40, 40]) == range(1, 5)
    assert tiered([160, 160]) is None


def test_smaller_files_inside_a_run_merge_along_and_newer_ones_wait() -> None:
    # A short flush (at closing) between two of a tier is taken along; the newest file,
    # smaller than the tier, is left to fill its own.
    assert tiered([40, 2, 40, 40, 40, 10]) == range(0, 5)


def test_files_of_max_rows_never_merge_and_a_run_is_cut_to_what_fits() -> None:
    assert tiered_merge([100, 10, 10, 100, 10], max_rows=100) is None
    assert tiered_merge([40, 40, 40, 40], max_rows=100) == range(0, 2)
    assert tiered_merge([60, 60, 60, 60], max_rows=100) is None  # only one fits: nothing to merge


@pytest.mark.parametrize(
    ("flushes", "layout", "mean_rewrites"),
    [
        (20, [16_000, 4000], 1.8),  # 20 = 110 in base 4
        (200, [64_000, 64_000, 64_000, 4000, 4000], 2.92),  # 200 = 3020 in base 4
    ],
)
def test_each_row_is_rewritten_about_log4_times_and_a_stream_lives_in_few_files(
    flushes: int, layout: list[int], mean_rewrites: float
) -> None:
    files, rewrites = simulate(tiered, flushes)
    assert files == layout  # at most FANOUT - 1 files per tier
    assert max(rewrites) <= math.ceil(math.log(flushes, FANOUT))
    assert sum(rewrites) / flushes == pytest.approx(mean_rewrites, abs=0.01)


def test_merging_every_small_file_into_one_rewrites_rows_over_and_over() -> None:
    """What the tiered choice replaces: each flush's file, merged into one growing file
    whenever four small ones sat together, was rewritten 33 times in 200 flushes."""

    def growing(rows: list[int]) -> range | None:
        return full_merge(rows, max_rows=2_000_000, min_files=4) if len(rows) >= 4 else None

    _, rewrites = simulate(growing, 200)
    assert sum(rewrites) / 200 > 30
    _, rewrites = simulate(tiered, 200)
    assert sum(rewrites) / 200 < 4


def test_full_merge_takes_each_run_of_small_files_as_far_as_max_rows_lets_it() -> None:
    assert full_merge([5, 5, 5], max_rows=10, min_files=2) == range(0, 2)
    assert full_merge([10, 5], max_rows=10, min_files=2) is None  # 10 rows is not small
    # A run too short for min_files is skipped; a big file ends a run.
    assert full_merge([3, 3, 50, 3, 3, 3], max_rows=10, min_files=3) == range(3, 6)
    assert full_merge([3, 3, 50, 3, 3, 3], max_rows=10, min_files=4) is None


# -- a real store ------------------------------------------------------------------------


def listed(directory: Path) -> list[tuple[int, int]]:
    """(first, last) position of each data file the manifest lists, in order."""
    manifest = json.loads((directory / "manifest.json").read_text())
    return sorted((f["first_position"], f["last_position"]) for f in manifest["files"])


def written_files(directory: Path) -> list[tuple[int, int]]:
    """(first, last) position of every data file written, merged-away ones included (they
    stay a while for readers: with a clock that stands still, until the test ends)."""
    return sorted(tuple(int(n) for n in p.stem.split("-")) for p in (directory / "data").glob("*.parquet"))  # type: ignore[misc]


def test_flushes_merge_size_tiered_so_each_event_is_rewritten_about_log4_times(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    with ev.open_store(directory, flush_every=10, durability="none", clock=ev.ManualClock()) as store:
        for f in range(20):
            store.append("acc-1", [deposited(str(f * 10 + i + 1), "acc-1") for i in range(10)])
        assert listed(directory) == [(1, 160), (161, 200)]
        rewritten = sum(last - first + 1 for first, last in written_files(directory) if last - first + 1 > 10)
        assert rewritten == 360  # 1.8 times per event; one growing file made it 690 (3.45 times)
        events = store.read_stream("acc-1")
        assert [e.version for e in events] == list(range(1, 201))
        # compact() still merges every run of small files into one.
        assert store.compact() == 1
        assert listed(directory) == [(1, 200)]
        assert store.read_stream("acc-1") == events
    with ev.open_store(directory, read_only=True) as reader:
        assert [e.event for e in reader.read_stream("acc-1")] == [e.event for e in events]
