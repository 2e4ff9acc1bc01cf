"""The object store going away while a store publishes its lake: a real SeaweedFS server of the
test's own, killed with SIGKILL and started again on the same data and ports."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

import eventador as ev
from eventador.testing.seaweed import WeedServer


class OutageDeposited(ev.Event, event_type="lake.outage.Deposited"):
    amount: int


def fill(store: ev.EventStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.append(f"acc-{i % 5}", [OutageDeposited(amount=i)])


def positions(uri: str, options: dict[str, str]) -> list[int]:
    dataset = DeltaTable(uri, storage_options=options).to_pyarrow_dataset()
    return sorted(pa.table(dataset.to_table(columns=["position"])).column("position").to_pylist())


def test_the_object_store_going_away_mid_publish(tmp_path: Path, own_weed: WeedServer) -> None:
    uri, options = f"s3://{own_weed.bucket()}/events", own_weed.storage_options
    target = ev.LakeTarget(uri, storage_options=options, max_lag=None)
    with ev.open_store(tmp_path / "s", lake=target, flush_every=25, durability="none") as store:
        assert store.lake is not None
        fill(store, 50)
        store.lake.sync()
        # Killed while flushes keep the publisher's thread committing.
        killer = threading.Timer(0.15, own_weed.kill)
        killer.start()
        for round_ in range(8):
            fill(store, 25, 50 + round_ * 25)
            time.sleep(0.04)
        killer.join()
        fill(store, 30, 250)  # appends go on locally while the lake is away
        store.flush()
        with pytest.raises(ev.LakeError, match=uri):
            store.lake.sync()
        assert store.lake.error is not None and store.last_position == 280
        own_weed.start()
        deadline = time.monotonic() + 30
        while True:  # the object store may take a moment to serve writes again
            try:
                assert store.lake.sync() == 280
                break
            except ev.LakeError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert store.lake.error is None
    assert positions(uri, options) == list(range(1, 281))  # none lost, none twice
    files = DeltaTable(uri, storage_options=options).file_uris()
    assert len(files) == len(set(files))
