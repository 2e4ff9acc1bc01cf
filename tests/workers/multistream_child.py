"""The writer that tests/store/test_multistream.py kills: appends several streams and a checkpoint
as one frame, forever, printing each acknowledged frame.

    python tests/workers/multistream_child.py DIR SEED [TEAR]

Frame k (k = 1, 2, ...) is one ``append_streams`` call with checkpoint ``("upstream", k)``:
one to three streams, one to three events each, or (now and then) no events at all. Every
event is a ``Deposited`` whose ``note`` is ``"<k>/<index>/<events in the frame>"``, so the
parent can tell a partial frame from a whole one. The child starts at the store's checkpoint
plus one. After each call returns, one JSON line goes to stdout (flushed): k, its events,
and the last position.

With TEAR = N, the N-th write to the log that spans a sector boundary writes only its whole
sectors before the last boundary (as a power cut in mid-write leaves it), then the child
prints ``TORN`` and waits to be killed: a frame cut at every place a disk can cut it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import eventador as ev
from tests.support.domain import Deposited

FLUSH_EVERY = 7  # flushes retire log segments often: checkpoints must outlive them
STREAMS = 5
CHECKPOINT = "upstream"
SECTOR = 512


def tear_at(n: int) -> None:
    """Make the `n`-th log write that spans a sector boundary stop at its last one, and wait there."""
    real_pwrite = os.pwrite
    seen = 0

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        nonlocal seen
        cut = (offset + len(data)) // SECTOR * SECTOR - offset  # the bytes before the last sector boundary
        if 0 < cut < len(data):
            seen += 1
            if seen == n:
                real_pwrite(fd, data[:cut], offset)
                print("TORN", flush=True)
                while True:
                    signal.pause()
        return real_pwrite(fd, data, offset)

    os.pwrite = pwrite


def main() -> None:
    directory, seed = sys.argv[1], int(sys.argv[2])
    rnd = random.Random(seed)
    store = ev.open_store(directory, durability="fsync", flush_every=FLUSH_EVERY)
    if len(sys.argv) > 3:
        tear_at(int(sys.argv[3]))  # after opening: the writes are those of appends
    print(json.dumps({"ready": store.last_position, "checkpoint": store.checkpoint(CHECKPOINT)}), flush=True)
    k = store.checkpoint(CHECKPOINT)
    while True:
        k += 1
        streams = [] if rnd.random() < 0.1 else rnd.sample(range(STREAMS), rnd.randint(1, 3))
        sizes = [rnd.randint(1, 3) for _ in streams]
        total = sum(sizes)
        index = 0
        parts = []
        for s, size in zip(streams, sizes, strict=True):
            stream = f"acc-{s}"
            events = []
            for _ in range(size):
                events.append(Deposited(account_id=stream, amount=Decimal(index + 1), note=f"{k}/{index}/{total}"))
                index += 1
            parts.append((stream, events, store.stream_version(stream)))
        store.append_streams(parts, checkpoint=(CHECKPOINT, k))
        print(json.dumps({"k": k, "events": total, "last": store.last_position}), flush=True)


if __name__ == "__main__":
    main()
