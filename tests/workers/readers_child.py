"""The processes of tests/store/test_readers.py: one busy writer, and readers that check what they see.

    python tests/workers/readers_child.py writer DIR SECONDS
    python tests/workers/readers_child.py reader DIR STOP_FILE

The writer makes the store, prints ``ready``, waits for a line on stdin (the readers
are ready), then appends for SECONDS with a small ``flush_every``, compacting often and
deleting merged-away files as soon as no reader pins them (its trash time is cut to a
fifth of a second). At the end (after closing) it prints a JSON line with the last
position. Every event's note is ``e<position>``.

A reader refreshes in a loop until STOP_FILE exists, then once more, and checks each
time that it sees positions 1..N without a gap or duplicate, N never smaller than
before, in ``read_all``, ``last_position`` and SQL (also SQL over the view from before
the refresh, whose files the writer may have merged away meanwhile), and that every
event is the one appended there. It prints ``ready`` after its first look, and at the
end a JSON line: loops done and the last N.
"""

from __future__ import annotations

import json
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import eventador as ev
import eventador.store.store
import eventador.store.wal
from tests.support.domain import Deposited


def writer(directory: str, seconds: float) -> None:
    eventador.store.store._TRASH_SECONDS = 0.2  # type: ignore[attr-defined]  # pins alone keep files for readers
    # Log segments of 1 MiB, not doubling up to 64 MiB over the many flushes: readers read whole segments.
    eventador.store.wal._MAX_SEGMENT_BYTES = 1 << 20  # type: ignore[attr-defined]
    rnd = random.Random(7)
    with ev.open_store(directory, durability="batch", flush_every=25) as store:
        fill = [Deposited(account_id="acc-0", amount=Decimal(1), note=f"e{i + 1}") for i in range(10)]
        store.append("acc-0", fill)  # the readers find events at once
        print("ready", flush=True)
        sys.stdin.readline()  # "go": the readers are ready
        deadline = time.monotonic() + seconds
        appended = len(fill)
        while time.monotonic() < deadline:
            stream = f"acc-{rnd.randrange(8)}"
            size = rnd.choice([1, 1, 2, 3])
            store.append(
                stream,
                [Deposited(account_id=stream, amount=Decimal(1), note=f"e{appended + i + 1}") for i in range(size)],
            )
            appended += size
            if rnd.random() < 0.02:
                store.compact(max_rows=400, min_files=2)
            time.sleep(0.0005)  # a busy writer, not one that starves three readers of the CPU
        last = store.last_position
    print(json.dumps({"last": last}), flush=True)


def check(store: ev.EventStore, seen: int, *, full: bool) -> int:
    """What a reader must see; returns N."""
    n = store.last_position
    assert n >= seen, f"went back from {seen} to {n}"
    [(count, distinct, low, high)] = store.sql(
        "SELECT count(*), count(DISTINCT position), min(position), max(position) FROM events"
    ).fetchall()
    assert (count, distinct, high) == (n, n, n or None) and low in (1, None), (count, distinct, low, high, n)
    start = 1 if full else seen + 1
    records = list(store.read_all(from_position=start))
    assert [r.position for r in records] == list(range(start, n + 1)), f"read_all from {start}: not {start}..{n}"
    for r in records:
        assert isinstance(r.event, Deposited) and r.event.note == f"e{r.position}", (r.position, r.event)
    return n


def reader(directory: str, stop_file: str) -> None:
    loops = 0
    with ev.open_store(directory, read_only=True) as store:
        seen = check(store, 0, full=True)
        print("ready", flush=True)
        while True:
            stopping = Path(stop_file).exists()
            [(before,)] = store.sql("SELECT count(*) FROM events").fetchall()  # over the last refresh's files
            assert before == seen, (before, seen)
            store.refresh()
            seen = check(store, seen, full=loops % 10 == 0 or stopping)
            loops += 1
            if stopping:
                break
    print(json.dumps({"loops": loops, "last": seen}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        writer(sys.argv[2], float(sys.argv[3]))
    else:
        reader(sys.argv[2], sys.argv[3])
