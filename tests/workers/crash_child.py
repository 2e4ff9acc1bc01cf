"""The writer that tests/store/test_crash.py kills: appends forever, printing each acknowledged append.

    python tests/workers/crash_child.py DIR SEED [STALL_POINT:N]

Every event is a ``Deposited`` whose ``note`` is ``"<tag>/<index>/<size>"``: the
append it belongs to, its place in it and the append's size, so the parent can
tell a partial append from a whole one. After each append returns, one JSON line
goes to stdout (flushed): the append's tag, stream, new version, size and the
position of its last event.

With STALL_POINT:N the child stops at the N-th time it reaches that point of a
flush, prints ``STALL <point>`` and waits there to be killed, so that kills land
mid-flush deterministically. The points wrap the OS calls the store makes:

    parquet-before-rename   before one of a Parquet file's two renames: from its temporary name
                            in pending/, or (once the catalog names it) from pending/ into data/
    parquet-after-rename    ... after it: complete in pending/ but not named, or in data/ with
                            the manifest not rewritten yet
    manifest-after-rename   the catalog and manifest list it; its WAL is not yet retired
    wal-after-unlink        a retired WAL segment was just deleted
    wal-before-fdatasync    an append's frame is written but not yet fsynced (not acknowledged)
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import eventador as ev
from tests.support.domain import Deposited

FLUSH_EVERY = 3
STREAMS = 6


class Staller:
    """Counts the times the store reaches a point; stops the process at the chosen one."""

    def __init__(self, spec: str | None) -> None:
        self.point, self.at = (spec.split(":")[0], int(spec.split(":")[1])) if spec else (None, 0)
        self.seen: dict[str, int] = {}

    def reached(self, point: str) -> None:
        self.seen[point] = self.seen.get(point, 0) + 1
        if point == self.point and self.seen[point] == self.at:
            print(f"STALL {point}", flush=True)
            while True:  # wait here to be killed
                signal.pause()


def install(staller: Staller) -> None:
    real_replace, real_unlink, real_fdatasync = os.replace, os.unlink, os.fdatasync

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        name = str(dst)
        if name.endswith(".parquet"):
            staller.reached("parquet-before-rename")
        real_replace(src, dst, *args, **kwargs)
        if name.endswith(".parquet"):
            staller.reached("parquet-after-rename")
        elif name.endswith("manifest.json"):
            staller.reached("manifest-after-rename")

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        real_unlink(path, *args, **kwargs)
        if str(path).endswith(".wal"):
            staller.reached("wal-after-unlink")

    def fdatasync(fd: int) -> None:
        staller.reached("wal-before-fdatasync")
        real_fdatasync(fd)

    os.replace, os.unlink, os.fdatasync = replace, unlink, fdatasync  # type: ignore[assignment]


def main() -> None:
    directory, seed = sys.argv[1], int(sys.argv[2])
    staller = Staller(sys.argv[3] if len(sys.argv) > 3 else None)
    rnd = random.Random(seed)
    store = ev.open_store(directory, durability="fsync", flush_every=FLUSH_EVERY)
    install(staller)  # after opening: the points are those of appends and flushes
    print(json.dumps({"ready": store.last_position}), flush=True)
    for seq in range(1_000_000):
        stream = f"acc-{rnd.randrange(STREAMS)}"
        size = rnd.choice([1, 1, 1, 2, 3, 5])
        tag = f"{seed}-{seq}"
        events = [
            Deposited(account_id=stream, amount=Decimal(rnd.randrange(1, 10_000)) / 100, note=f"{tag}/{i}/{size}")
            for i in range(size)
        ]
        expected = store.stream_version(stream) if rnd.random() < 0.5 else ev.ANY
        version = store.append(stream, events, expected_version=expected)
        line = {"tag": tag, "stream": stream, "version": version, "size": size, "last": store.last_position}
        print(json.dumps(line), flush=True)
        if rnd.random() < 0.05:
            store.flush()


if __name__ == "__main__":
    main()
