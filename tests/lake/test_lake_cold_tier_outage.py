"""The cold tier (``LakeTarget(local_bytes=...)``) while the object store goes away: a real
SeaweedFS server of the test's own, killed with SIGKILL and started again on the same data."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import eventador as ev
from eventador.store.catalog import read_manifest
from eventador.testing.seaweed import WeedServer
from tests.lake.test_lake_cold_tier import files, fill, local


def test_the_object_store_away_before_an_upload_and_at_a_fetch(tmp_path: Path, own_weed: WeedServer) -> None:
    uri, options = f"s3://{own_weed.bucket()}/events", own_weed.storage_options
    target = ev.LakeTarget(uri, storage_options=options, max_lag=None, local_bytes=0)
    with ev.open_store(tmp_path / "s", lake=target, flush_every=10**6, durability="none") as store:
        assert store.lake is not None
        fill(store, 30)
        store.flush()
        store.lake.sync()
        (first,) = files(store)
        assert not first.path.exists()
        own_weed.kill()
        fill(store, 30, 30)  # appends go on locally
        store.flush()
        with pytest.raises(ev.LakeError, match=uri):
            store.lake.sync()
        second = files(store)[1]
        assert second.path.exists()  # not uploaded: never evicted
        assert second.path.name not in read_manifest(tmp_path / "s").uploaded
        with pytest.raises(ev.LakeError, match=f"lake {uri}: cannot fetch data file {first.path.name}"):
            store.read_stream("acc-1")  # its first events are only in the object store
        own_weed.start()
        deadline = time.monotonic() + 30
        while True:  # the upload resumes (the server may take a moment to serve writes again)
            try:
                store.lake.sync()
                break
            except ev.LakeError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert local(store) == []
        assert [e.event.amount for e in store.read_stream("acc-1")] == list(range(1, 60, 5))
