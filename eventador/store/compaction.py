"""Which data files to merge: compaction's choice, apart from the merging itself.

The store's data files are in position order, oldest first, and a merge always
takes a run of adjacent ones (the merged file covers one range of positions). Both
choices here look at the files' row counts only, and return the next run to merge
as a ``range`` of indices, or None; the store merges it and asks again.

* ``tiered_merge``, after each flush: size-tiered. A file's tier is
  ``floor(log_FANOUT(rows))``; once FANOUT files of one tier sit together they
  merge into one of the next tier. So an event is rewritten about once per tier,
  ``log4(files flushed)`` times, not once every few flushes as when every new file
  joined one growing file (flushes of 1,000 events: 1.8 times on average after 20
  flushes, 2.9 after 200, where the growing file made it 3.5 and 33). A stream is
  read from at most FANOUT - 1 files per tier (flushes of 1,000 events: 2 files
  after 20 flushes, 5 after 200, 11 at most on the way).
* ``full_merge``, for ``EventStore.compact``: every run of small files becomes one
  file, as far as ``max_rows`` lets it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["FANOUT", "full_merge", "tier", "tiered_merge"]

# Files of one tier that merge into one of the next. 3 would read a stream from at most
# 2 files per tier, not 3, for about a quarter more rewriting (3.7 times after 200
# flushes instead of 2.9).
FANOUT = 4


def tier(rows: int, fanout: int = FANOUT) -> int:
    """floor(log_fanout(rows)): files whose row counts are within a factor `fanout` share a tier (or neighbour)."""
    level = 0
    while rows >= fanout:
        rows //= fanout
        level += 1
    return level


def tiered_merge(rows: Sequence[int], *, max_rows: int, fanout: int = FANOUT) -> range | None:
    """The next run of files to merge after a flush, or None when no tier is full.

    `rows`: each file's row count, oldest first. A file of `max_rows` or more is
    never merged. The lowest tier that has `fanout` files in a run of adjacent
    files of that tier or below merges first: the run from its start to its last
    file of that tier (smaller files inside it, such as a short flush at closing,
    are taken along; smaller ones after it are the newest, left to fill their own
    tier). A run that would exceed `max_rows` is cut to the files that fit, and
    merged if that leaves two or more.
    """
    tiers = [tier(n, fanout) if n < max_rows else None for n in rows]
    for level in sorted({t for t in tiers if t is not None}):
        start = 0
        while start < len(rows):
            end = start
            while end < len(rows) and (t := tiers[end]) is not None and t <= level:
                end += 1
            full = [i for i in range(start, end) if tiers[i] == level]
            if len(full) >= fanout:
                run = _fitting(rows, start, full[-1] + 1, max_rows)
                if len(run) >= 2:
                    return run
            start = end + 1
    return None


def full_merge(rows: Sequence[int], *, max_rows: int, min_files: int) -> range | None:
    """The first run of at least `min_files` adjacent files smaller than `max_rows` whose
    rows add up to at most `max_rows` (each run as long as it can be), or None."""
    start = 0
    while start < len(rows):
        end = start
        total = 0
        while end < len(rows) and rows[end] < max_rows and total + rows[end] <= max_rows:
            total += rows[end]
            end += 1
        if end - start >= min_files:
            return range(start, end)
        start = max(end, start + 1)
    return None


def _fitting(rows: Sequence[int], start: int, stop: int, max_rows: int) -> range:
    """The files from `start` (before `stop`) whose rows add up to at most `max_rows`."""
    end, total = start, 0
    while end < stop and total + rows[end] <= max_rows:
        total += rows[end]
        end += 1
    return range(start, end)
