"""The writer that tests/lake/test_lake_cold_tier.py and test_lake_publish.py kill: appends
forever to a store with a lake whose data files live in its cold tier (``local_bytes=0``), or
with ``keep`` on the local disk too, printing each acknowledged append.

    python tests/workers/coldtier_child.py DIR LAKE_URI STORAGE_OPTIONS_JSON [keep]

Flushes every few events, so that the lake's publisher is always placing, uploading or
evicting a file when the parent's SIGKILL comes. After each append returns, one JSON line goes to
stdout (flushed): the stream and its new version.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import eventador as ev


class ColdChildDeposited(ev.Event, event_type="lake.cold.child.Deposited"):
    amount: int


def main() -> None:
    directory, uri, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    local_bytes = None if sys.argv[4:] == ["keep"] else 0
    target = ev.LakeTarget(uri, storage_options=options, max_lag=None, local_bytes=local_bytes)
    store = ev.open_store(directory, lake=target, flush_every=7, durability="fsync")
    print("OPEN", flush=True)
    n = store.last_position
    while True:
        stream = f"acc-{n % 3}"
        version = store.append(stream, [ColdChildDeposited(amount=n)])
        print(json.dumps({"stream": stream, "version": version}), flush=True)
        n += 1


if __name__ == "__main__":
    main()
