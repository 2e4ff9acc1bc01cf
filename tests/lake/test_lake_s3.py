"""The lake on S3-compatible object storage: a real SeaweedFS server (tests/lake/conftest.py)."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

import eventador as ev
from eventador.testing.seaweed import WeedServer


class S3Deposited(ev.Event, event_type="lake.s3.Deposited"):
    amount: int


def fill(store: ev.EventStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.append(f"acc-{i % 5}", [S3Deposited(amount=i)])


def positions(uri: str, options: dict[str, str]) -> list[int]:
    dataset = DeltaTable(uri, storage_options=options).to_pyarrow_dataset()
    return sorted(pa.table(dataset.to_table(columns=["position"])).column("position").to_pylist())


def test_publish_to_s3_and_read_it_back(tmp_path: Path, s3_lake: tuple[str, dict[str, str]]) -> None:
    uri, options = s3_lake
    target = ev.LakeTarget(uri, storage_options=options, max_lag=None)
    with ev.open_store(tmp_path / "s", lake=target, flush_every=40) as store:
        fill(store, 100)
        expected = store.read_stream("acc-2")
        total = store.sql('SELECT sum(amount) FROM "lake.s3.Deposited"').fetchall()[0][0]
    assert positions(uri, options) == list(range(1, 101))
    lake = ev.open_lake(uri, storage_options=options)
    assert lake.read_stream("acc-2") == expected
    assert lake.sql("SELECT count(*), sum(lake_s3_Deposited__amount) FROM events").fetchall() == [(100, total)]
    frame = pl.scan_delta(uri, storage_options=options)
    assert frame.select(pl.col("lake_s3_Deposited__amount").sum()).collect().item() == total


@pytest.mark.parametrize("problem", ["bucket", "credentials", "endpoint"])
def test_an_unusable_s3_lake_is_refused_at_open(tmp_path: Path, weed: WeedServer, problem: str) -> None:
    options = dict(weed.storage_options)
    uri = f"s3://{weed.bucket()}/events"
    if problem == "bucket":
        uri, cause = "s3://no-such-bucket/events", "the bucket does not exist"
    elif problem == "credentials":
        options["AWS_SECRET_ACCESS_KEY"] = "wrong"
        cause = "the credentials were refused"
    else:
        options["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # nothing listens there
        cause = "it cannot be reached"
    with ev.open_store(tmp_path / "s") as store:
        fill(store, 3)
    started = time.monotonic()
    with pytest.raises(ev.LakeError, match=f"lake {uri}: .*{cause}"):
        ev.open_store(tmp_path / "s", lake=ev.LakeTarget(uri, storage_options=options))
    assert time.monotonic() - started < 15
    with ev.open_store(tmp_path / "s") as store:  # closed again, every event kept
        assert store.last_position == 3
