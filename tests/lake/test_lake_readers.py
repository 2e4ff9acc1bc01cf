"""Reading the lake without the store's writer: ``ev.open_lake`` and other engines (polars,
DuckDB over the table's Arrow dataset, Dask over its file list, and in a slow test Spark over
its file list) agree with ``store.sql``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from shutil import which

import dask.dataframe as dd
import duckdb
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

import eventador as ev


class ReaderDeposit(ev.Command):
    amount: int


class ReaderCredited(ev.Event, event_type="lake.reader.Credited"):
    amount: int
    fee: Decimal


class ReaderOpened(ev.Event, event_type="lake.reader.Opened"):
    owner: str


class ReaderClosed(ev.Event, event_type="lake.reader.Closed"):
    reason: str


class ReaderBalance(ev.State):
    balance: int = 0


class ReaderAccount(ev.AggregateRoot[ReaderBalance]):
    @property
    def initial_state(self) -> ReaderBalance:
        return ReaderBalance()

    def handle_command(self, state: ReaderBalance, command: ev.Command) -> list[ev.Event]:
        assert isinstance(command, ReaderDeposit)
        return [ReaderCredited(amount=command.amount, fee=Decimal("0.125"))]

    def apply_event(self, state: ReaderBalance, event: ev.Event) -> ReaderBalance:
        if isinstance(event, ReaderCredited):
            return state.copy_with(balance=state.balance + event.amount)
        return state


START = datetime(2024, 1, 1, tzinfo=UTC)
# the typed columns engines read (decimals as DOUBLE)
AMOUNT, FEE, REASON = "lake_reader_Credited__amount", "lake_reader_Credited__fee", "lake_reader_Closed__reason"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """A store with a published lake; and what store.sql says of it."""
    root = tmp_path_factory.mktemp("readers")
    with ev.open_store(root / "s", lake=str(root / "lake"), flush_every=97) as store:
        for i in range(400):
            account = f"acc-{i % 13}"
            if i < 13:
                store.append(account, [ReaderOpened(owner=f"o{i}")], occurred_at=START - timedelta(days=1))
            when = START + timedelta(hours=i)
            store.append(account, [ReaderCredited(amount=i, fee=Decimal("0.125"))], occurred_at=when)
        store.append("acc-0", [ReaderClosed(reason="moved")])  # a type the last file alone has a column for
        truth = {
            "count": store.sql("SELECT count(*) FROM events").fetchall()[0][0],
            "latest": dict(store.sql("SELECT stream_id, max(version) FROM events GROUP BY 1").fetchall()),
            "sums": store.sql('SELECT sum(amount), sum(fee) FROM "lake.reader.Credited"').fetchall()[0],
            "closed": store.sql('SELECT count(reason) FROM "lake.reader.Closed"').fetchall()[0][0],
            "acc-3": store.read_stream("acc-3"),
            "all": list(store.read_all()),
            "at-100": store.as_of(100).read_stream("acc-5"),
            "recorded": store.as_of(store.read_all(from_position=200, limit=1).__next__().recorded_at),
            "occurred": store.as_of(START + timedelta(hours=50), by="occurred_at").read_stream("acc-2"),
            "state": ev.Repository(store, ReaderAccount).get("acc-4"),
            "state-at": ev.Repository(store, ReaderAccount).get("acc-4", as_of=150),
        }
        truth["recorded"] = truth["recorded"].read_stream("acc-7")  # type: ignore[attr-defined]
    assert truth["closed"] == 1
    return root / "lake", truth


def test_open_lake_reads_as_the_store_does(published: tuple[Path, dict[str, object]]) -> None:
    uri, truth = published
    lake = ev.open_lake(uri)
    assert lake.read_stream("acc-3") == truth["acc-3"]
    assert list(lake.read_all()) == truth["all"]
    assert lake.as_of(100).read_stream("acc-5") == truth["at-100"]
    recorded_200 = next(iter(lake.read_all(from_position=200, limit=1))).recorded_at
    assert lake.as_of(recorded_200).read_stream("acc-7") == truth["recorded"]
    assert lake.as_of(START + timedelta(hours=50), by="occurred_at").read_stream("acc-2") == truth["occurred"]
    assert lake.stream_version("acc-3") == truth["latest"]["acc-3"]  # type: ignore[index]
    repository = ev.Repository(lake.events, ReaderAccount)
    assert repository.get("acc-4") == truth["state"]
    assert repository.get("acc-4", as_of=150) == truth["state-at"]
    with pytest.raises(ev.ReadOnlyError):
        lake.events.append("acc-1", [ReaderOpened(owner="x")])


# Dask's groupby calls a pandas method pandas deprecates (not ours to change).
@pytest.mark.filterwarnings("ignore:The inplace keyword")
def test_engines_agree_with_store_sql(published: tuple[Path, dict[str, object]]) -> None:
    uri, truth = published
    expected_sums = tuple(float(x) for x in truth["sums"])  # type: ignore[attr-defined]

    lake = ev.open_lake(uri)
    assert lake.sql("SELECT count(*) FROM events").fetchall()[0] == (truth["count"],)
    assert dict(lake.sql("SELECT stream_id, max(version) FROM events GROUP BY 1").fetchall()) == truth["latest"]
    assert lake.sql(f"SELECT sum({AMOUNT}), sum({FEE}) FROM events").fetchall()[0] == expected_sums
    assert lake.sql(f"SELECT count({REASON}) FROM events").fetchall()[0] == (truth["closed"],)

    # polars: pl.scan_delta(uri)
    frame = pl.scan_delta(str(uri))
    assert frame.select(pl.len()).collect().item() == truth["count"]
    latest = frame.group_by("stream_id").agg(pl.col("version").max()).collect()
    assert dict(zip(latest["stream_id"], latest["version"], strict=True)) == truth["latest"]
    sums = frame.select(pl.col(AMOUNT).sum(), pl.col(FEE).sum()).collect().row(0)
    assert tuple(float(x) for x in sums) == expected_sums
    assert frame.select(pl.col(REASON).count()).collect().item() == truth["closed"]

    # DuckDB over the table's Arrow dataset (its delta extension needs a download)
    con = duckdb.connect()
    con.register("events", DeltaTable(str(uri)).to_pyarrow_dataset())
    assert con.sql("SELECT count(*) FROM events").fetchall()[0] == (truth["count"],)
    assert dict(con.sql("SELECT stream_id, max(version) FROM events GROUP BY 1").fetchall()) == truth["latest"]
    assert con.sql(f"SELECT sum({AMOUNT}), sum({FEE}) FROM events").fetchall()[0] == expected_sums
    assert con.sql(f"SELECT count({REASON}) FROM events").fetchall()[0] == (truth["closed"],)

    # Dask over the file list, as README.md shows it: the files' columns differ (the first lacks the
    # Closed column), so it needs the table's schema, and `shard` from the paths as a Hive partition
    frame_dd = dd.read_parquet(
        lake.files(),
        dataset={
            "schema": lake.dataset().schema,
            "partitioning": {"flavor": "hive", "schema": pa.schema({"shard": pa.string()})},
        },
    )
    assert len(frame_dd) == truth["count"]
    assert frame_dd.groupby("stream_id")["version"].max().compute().to_dict() == truth["latest"]
    assert (frame_dd[AMOUNT].sum().compute(), frame_dd[FEE].sum().compute()) == expected_sums
    assert frame_dd[REASON].count().compute() == truth["closed"]
    assert frame_dd["shard"].value_counts().compute().to_dict() == {"main": truth["count"]}


# pyspark warns of the pandas version at import (not ours to change).
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")
def test_spark_agrees_with_store_sql(
    published: tuple[Path, dict[str, object]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spark without Delta's jars (they come from Maven): the table's Parquet files from the
    file list, as docs/scaling.md and README.md show it."""
    pytest.importorskip("pyspark", reason="the Spark reader test needs pyspark (the eventador[spark] extra)")
    if which("java") is None:
        pytest.skip("the Spark reader test needs Java 17 or later on the PATH")
    from pyspark.sql import SparkSession

    uri, truth = published
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")  # no network: bind and resolve on loopback only
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("eventador-lake-test")
        .config("spark.driver.memory", "512m")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.local.dir", str(tmp_path / "spark-local"))
        .config("spark.sql.warehouse.dir", str(tmp_path / "spark-warehouse"))
        .getOrCreate()
    )
    try:
        lake = ev.open_lake(uri)
        # the documented one-liner: every file's columns merged, `shard` from the paths under basePath,
        # the table's columns only (the files the table took as they are also hold the store's own)
        columns = lake.dataset().schema.names
        frame = spark.read.options(mergeSchema="true", basePath=lake.uri).parquet(*lake.files()).select(*columns)
        assert sorted(frame.columns) == sorted(columns)
        frame.createOrReplaceTempView("events")
        assert spark.sql("SELECT count(*) FROM events").collect()[0][0] == truth["count"]
        latest = spark.sql("SELECT stream_id, max(version) FROM events GROUP BY 1").collect()
        assert {row[0]: row[1] for row in latest} == truth["latest"]
        sums = spark.sql(f"SELECT sum({AMOUNT}), sum({FEE}) FROM events").collect()[0]
        assert (sums[0], sums[1]) == tuple(float(x) for x in truth["sums"])  # type: ignore[attr-defined]
        # only the last file has the Closed column: without mergeSchema Spark takes one file's columns
        assert spark.sql(f"SELECT count({REASON}) FROM events").collect()[0][0] == truth["closed"]
        shards = spark.sql("SELECT shard, count(*) FROM events GROUP BY 1").collect()
        assert [(row[0], row[1]) for row in shards] == [("main", truth["count"])]
    finally:
        spark.stop()


def test_shards_are_read_one_at_a_time(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    for shard in ("a", "b"):
        with ev.open_store(tmp_path / shard, lake=ev.LakeTarget(lake, shard=shard)) as store:
            store.append(f"{shard}-1", [ReaderOpened(owner=shard)])
    both = ev.open_lake(lake)
    assert both.sql("SELECT shard, count(*) FROM events GROUP BY 1 ORDER BY 1").fetchall() == [("a", 1), ("b", 1)]
    with pytest.raises(ev.InvalidInputError, match=r"holds shards \['a', 'b'\]"):
        both.read_stream("a-1")
    assert [r.event for r in ev.open_lake(lake, shard="b").read_stream("b-1")] == [ReaderOpened(owner="b")]


def test_a_missing_lake_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ev.LakeError, match=str(tmp_path / "nothing")):
        ev.open_lake(tmp_path / "nothing")


def test_refresh_sees_what_was_published_since(tmp_path: Path) -> None:
    lake_uri = str(tmp_path / "lake")
    with ev.open_store(tmp_path / "s", lake=lake_uri) as store:
        store.append("x", [ReaderOpened(owner="a")])
        store.flush()
        assert store.lake is not None
        store.lake.sync()
        lake = ev.open_lake(lake_uri)
        assert lake.last_position == 1
        store.append("x", [ReaderOpened(owner="b")])
    lake.refresh()
    assert lake.last_position == 2 and lake.sql("SELECT count(*) FROM events").fetchall()[0] == (2,)
    assert pa.table(lake.dataset().to_table()).num_rows == 2
    with lake:
        assert [r.event.owner for r in lake.read_stream("x")] == ["a", "b"]  # type: ignore[attr-defined]
    assert lake.stream_version("x") == 2  # closing let go of what was loaded; reads load it again
