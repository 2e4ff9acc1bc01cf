"""A process of a sharded store, for tests/store/test_shards.py.

    python tests/workers/shard_child.py route ROOT STREAM...   prints {"stream": shard, ...} (one JSON line)
    python tests/workers/shard_child.py write ROOT SHARD       writes shard SHARD alone, forever

``write`` opens the shard with ``open_shard`` (durability "fsync", a flush every few
events), prints ``OPEN``, then appends one or two ``Deposited`` to streams of its shard,
printing after each acknowledged append one JSON line: stream, its new version, size.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import eventador as ev
from tests.support.domain import deposited


def main() -> None:
    mode, root = sys.argv[1], sys.argv[2]
    if mode == "route":
        with ev.open_sharded(root, read_only=True) as store:
            print(json.dumps({s: store.shard_of(s) for s in sys.argv[3:]}), flush=True)
        return
    shard = int(sys.argv[3])
    store = ev.open_shard(root, shard, durability="fsync", flush_every=7)
    print("OPEN", flush=True)
    streams = [s for s in (f"acc-{i}" for i in range(200)) if store.shard_of(s) == shard][:5]
    n = 0
    while True:
        stream = streams[n % len(streams)]
        size = 1 + n % 2
        version = store.append(stream, [deposited(str(Decimal(n) + 1), stream) for _ in range(size)])
        print(json.dumps({"stream": stream, "version": version, "size": size}), flush=True)
        n += 1


if __name__ == "__main__":
    main()
