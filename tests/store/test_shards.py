"""Sharded stores: routing, one writer per shard, and answers equal to one store's."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest

import eventador as ev
from eventador.shards import bucket_of
from tests.support.aggregate_domain import BankAccountAggregate, DepositMoneyCommand, OpenAccountCommand
from tests.support.domain import deposited, opened, withdrawn

CHILD = Path(__file__).resolve().parents[1] / "workers" / "shard_child.py"
REPO = CHILD.parents[2]
STREAMS = [f"acc-{i}" for i in range(40)] + ["ünïcode-1", "名前-2", "x" * 300]


def _two_shards_streams(store: ev.ShardedStore) -> tuple[str, str]:
    """A stream of shard 0 and one of shard 1."""
    by_shard = {store.shard_of(s): s for s in STREAMS}
    return by_shard[0], by_shard[1]


def test_a_child_process_routes_every_stream_to_the_same_shard(tmp_path: Path) -> None:
    with ev.open_sharded(tmp_path / "s", shards=4) as store:
        here = {s: store.shard_of(s) for s in STREAMS}
    assert set(here.values()) == {0, 1, 2, 3}
    done = subprocess.run(
        [sys.executable, str(CHILD), "route", str(tmp_path / "s"), *STREAMS],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},  # a different str hash: routing must not use it
    )
    assert json.loads(done.stdout) == here


def test_buckets_are_a_stable_hash_of_the_stream_id() -> None:
    assert [bucket_of(f"acc-{i}", 4) for i in range(6)] == [3, 1, 3, 1, 2, 0]  # crc32, pinned: routing never changes
    assert {bucket_of(f"s{i}", 3) for i in range(100)} == {0, 1, 2}


def test_the_layout_is_fixed_when_the_store_is_made(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with pytest.raises(ev.InvalidInputError, match="give shards=N"):
        ev.open_sharded(root)
    ev.open_sharded(root, shards=2, buckets=64).close()
    layout = json.loads((root / "shards.json").read_text())
    assert layout["buckets"] == 64 and layout["shards"] == ["shard-0", "shard-1"]
    assert layout["bucket_to_shard"] == [b % 2 for b in range(64)]
    with pytest.raises(ev.ShardLayoutError, match="2 shards, not 3"):
        ev.open_sharded(root, shards=3)
    with pytest.raises(ev.ShardLayoutError, match="64 buckets, not 256"):
        ev.open_sharded(root, buckets=256)
    with ev.open_sharded(root) as store:
        assert (store.shards, store.layout.buckets) == (2, 64)


def test_shards_may_live_in_directories_of_their_own(tmp_path: Path) -> None:
    disks = [tmp_path / "disk-a" / "bank", tmp_path / "disk-b" / "bank"]
    with ev.open_sharded(tmp_path / "root", shards=2, directories=disks) as store:
        a, b = _two_shards_streams(store)
        store.append(a, [opened(a)])
        store.append(b, [opened(b)])
    assert all((d / "LOCK").exists() for d in disks)
    with ev.open_sharded(tmp_path / "root", read_only=True) as store:
        assert store.sql("SELECT count(*) FROM events").fetchall() == [(2,)]


def _fill(store: ev.EventStore | ev.ShardedStore) -> None:
    """The same events, in the same order, into either kind of store: some flushed, some hot."""
    for round_ in range(3):
        for i, stream in enumerate(STREAMS):
            if round_ == 0:
                store.append(stream, [opened(stream)])
            store.append(stream, [deposited(str(10 + i + round_), stream), withdrawn(str(1 + round_), stream)])
        if round_ == 1:
            store.flush()


def test_a_sharded_store_answers_as_one_store_with_the_same_events(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "one", durability="none") as one, ev.open_sharded(
        tmp_path / "many", shards=3, durability="none"
    ) as many:
        _fill(one)
        _fill(many)
        for stream in STREAMS:
            assert many.stream_version(stream) == one.stream_version(stream) == 7
            assert [r.event for r in many.read_stream(stream)] == [r.event for r in one.read_stream(stream)]
            assert many.replay(stream).events == one.replay(stream).events
        for query in (
            "SELECT count(*), count(DISTINCT stream_id) FROM events",
            'SELECT sum(amount), count(*) FROM "test.Deposited"',
            'SELECT account_id, sum(amount) FROM "test.Withdrawn" GROUP BY 1 ORDER BY 1',
            "SELECT stream_id, max(version), count(*) FROM events GROUP BY 1 ORDER BY 1",
        ):
            assert many.sql(query).fetchall() == one.sql(query).fetchall(), query
        assert many.sql("SELECT count(DISTINCT position) FROM events").fetchall()[0][0] < len(STREAMS) * 7
        merged = list(many.read_all())
        assert sorted((r.stream_id, r.version) for r in merged) == sorted(
            (r.stream_id, r.version) for r in one.read_all()
        )
        times = [r.recorded_at for r in merged]
        assert times == sorted(times)
        for stream in STREAMS:  # each stream in version order
            versions = [r.version for r in merged if r.stream_id == stream]
            assert versions == sorted(versions)
        assert len(list(many.read_all(limit=7))) == 7
        assert {r.event_type for r in many.read_all(event_types=["test.Opened"])} == {"test.Opened"}


def test_a_repository_over_shards_equals_one_over_one_store(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "one", durability="none") as one, ev.open_sharded(
        tmp_path / "many", shards=2, durability="none"
    ) as many:
        plain = ev.Repository(one, BankAccountAggregate)
        sharded = many.repository(BankAccountAggregate)
        for i, account in enumerate(STREAMS[:12]):
            for repo in (plain, sharded):
                repo.execute(account, OpenAccountCommand(account_id=account, initial_balance=float(i)))
                repo.execute(account, DepositMoneyCommand(account_id=account, amount=2.5))
        assert {many.shard_of(a) for a in STREAMS[:12]} == {0, 1}
        # Equal but for last_modified: each store stamps its own clock's time.
        assert sharded.get("acc-3").copy_with(last_modified=None) == plain.get("acc-3").copy_with(last_modified=None)
        assert sharded.states().drop(columns="last_modified").equals(plain.states().drop(columns="last_modified"))
        now = datetime.now(UTC)
        assert sharded.states(as_of=now)["balance"].sum() == plain.states()["balance"].sum()
        assert list(sharded.history("acc-3")["balance"]) == list(plain.history("acc-3")["balance"])
        with pytest.raises(ev.InvalidInputError, match="no global position"):
            sharded.get("acc-3", as_of=3)  # type: ignore[arg-type]


def test_an_atomic_append_across_shards_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    with ev.open_sharded(tmp_path / "s", shards=2) as store:
        a, b = _two_shards_streams(store)
        with pytest.raises(ev.CrossShardError) as refused:
            store.append_many([(a, [opened(a)]), (b, [opened(b)])])
        assert f"shard 0: {a!r}" in str(refused.value) and f"shard 1: {b!r}" in str(refused.value)
        assert refused.value.shards == {0: [a], 1: [b]}
        with pytest.raises(ev.CrossShardError):
            store.append_streams([(a, [opened(a)], 0), (b, [opened(b)], 0)], checkpoint=("upstream", 1))
        assert store.stream_version(a) == store.stream_version(b) == 0
        assert store.sql("SELECT count(*) FROM events").fetchall() == [(0,)]
        assert store.shard(0).checkpoint("upstream") == store.shard(1).checkpoint("upstream") == 0
        # Streams of one shard are one atomic append, as in a store.
        same = [s for s in STREAMS if store.shard_of(s) == 1][:2]
        assert store.append_streams([(s, [opened(s)], 0) for s in same], checkpoint=("upstream", 1)) == [1, 2]
        assert store.shard(1).checkpoint("upstream") == 1


def test_a_process_appends_only_to_the_shards_it_writes(tmp_path: Path) -> None:
    ev.open_sharded(tmp_path / "s", shards=2).close()
    with ev.open_shard(tmp_path / "s", 0) as mine:
        a, b = _two_shards_streams(mine)
        assert mine.append(a, [opened(a)]) == 1
        with pytest.raises(ev.ShardNotWritableError, match=f"{b!r} lives in shard 1") as refused:
            mine.append(b, [opened(b)])
        assert refused.value.shard == 1
        with pytest.raises(ev.ShardNotWritableError):
            mine.repository(BankAccountAggregate).execute(b, OpenAccountCommand(account_id=b, initial_balance=1.0))
        with ev.open_shard(tmp_path / "s", 1) as theirs:  # the other shard's writer, beside it
            theirs.append(b, [opened(b)])
        mine.refresh()
        assert mine.stream_version(b) == 1
        assert mine.sql("SELECT count(*) FROM events").fetchall() == [(2,)]


def _lines(stream: IO[str]) -> queue.Queue[str | None]:
    found: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            found.put(line.strip())
        found.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return found


class _Writer:
    """A child process writing one shard alone (tests/workers/shard_child.py); `acked`: each
    stream's version after its last acknowledged append."""

    def __init__(self, root: Path, shard: int) -> None:
        self.child = subprocess.Popen(
            [sys.executable, str(CHILD), "write", str(root), str(shard)], stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        self.lines = _lines(self.child.stdout)  # type: ignore[arg-type]
        self.acked: dict[str, int] = {}
        assert self.lines.get(timeout=60) == "OPEN"

    def read_acks(self, at_least: int) -> None:
        """Wait until `at_least` more appends are acknowledged."""
        deadline = time.monotonic() + 60
        for _ in range(at_least):
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "the writer stopped"
            ack = json.loads(line)
            self.acked[ack["stream"]] = ack["version"]

    def kill(self) -> None:
        os.kill(self.child.pid, signal.SIGKILL)
        self.child.wait()
        self.child.stdout.close()  # type: ignore[union-attr]


def _holds_every_acknowledged_append(root: Path, acked: dict[str, int]) -> None:
    with ev.open_sharded(root, read_only=True) as store:
        for stream, version in acked.items():
            assert store.stream_version(stream) >= version, stream
            assert [r.version for r in store.read_stream(stream)] == list(range(1, store.stream_version(stream) + 1))


def test_a_second_writer_of_a_shard_is_refused_and_a_killed_writer_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    root = tmp_path / "s"
    ev.open_sharded(root, shards=2).close()
    writer = _Writer(root, 0)
    try:
        with pytest.raises(ev.ShardLockedError, match=r"shard 0 \(.*shard-0\) is open for writing by pid") as held:
            ev.open_shard(root, 0)
        assert held.value.shard == 0 and isinstance(held.value, ev.StoreLockedError)
        with ev.open_shard(root, 1) as other:  # the other shard is free: written here meanwhile
            b = next(s for s in STREAMS if other.shard_of(s) == 1)
            other.append(b, [opened(b)])
        writer.read_acks(30)
    finally:
        writer.kill()
    _holds_every_acknowledged_append(root, writer.acked)
    with ev.open_sharded(root) as store:
        assert {store.shard_of(s) for s in writer.acked} == {0}
        assert store.stream_version(b) == 1
        assert store.sql('SELECT sum(amount) > 0 FROM "test.Deposited"').fetchall() == [(True,)]
        store.append(next(iter(writer.acked)), [deposited("1.00")])  # writing goes on where it stopped


@pytest.mark.slow
def test_both_shards_writers_killed_again_and_again_lose_nothing_acknowledged(tmp_path: Path) -> None:
    root = tmp_path / "s"
    ev.open_sharded(root, shards=2).close()
    acked: dict[str, int] = {}
    rng = random.Random(19)
    for _ in range(10):
        writers = [_Writer(root, 0), _Writer(root, 1)]
        try:
            for w in writers:
                w.read_acks(rng.randrange(1, 60))
        finally:
            for w in writers:
                w.kill()
                acked.update(w.acked)
        _holds_every_acknowledged_append(root, acked)


def test_errors_name_what_is_wrong(tmp_path: Path) -> None:
    with ev.open_sharded(tmp_path / "s", shards=2) as store:
        with pytest.raises(ev.InvalidInputError, match="shards 0 to 1, not 5"):
            store.shard(5)
        with pytest.raises(ev.InvalidInputError, match="names no shard"):
            store.append_streams([], checkpoint=("upstream", 1))
        assert "2 shards, 256 buckets, writes 0, 1" in repr(store)
        store.append("acc-1", [opened("acc-1")])
        info = store.info()
        assert (info["events"], info["streams"], info["shards"][store.shard_of("acc-1")]["events"]) == (1, 1, 1)
        assert "<b>ShardedStore</b>" in store._repr_html_() and "1 events in 1 streams" in store._repr_html_()
    with pytest.raises(ev.InvalidInputError, match="writable names shards"):
        ev.open_sharded(tmp_path / "s", writable=[2])
    with pytest.raises(ev.StoreClosedError):
        store.read_stream("acc-1")


def test_sql_of_a_read_only_sharded_store_reads_only_the_shards(tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    with ev.open_sharded(tmp_path / "s", shards=2) as store:
        for stream in STREAMS[:6]:
            store.append(stream, [opened(stream)])
        store.flush()
    with ev.open_sharded(tmp_path / "s", read_only=True) as reader:
        assert reader.sql("SELECT count(*) FROM events").fetchall() == [(6,)]  # files of both shards
        with pytest.raises(ev.SqlError):
            reader.sql(f"SELECT * FROM read_csv('{outside}')").fetchall()
        with pytest.raises(ev.SqlError):
            reader.sql(f"COPY (SELECT 1) TO '{tmp_path / 'copy.csv'}'")
        with pytest.raises(ev.ShardNotWritableError):
            reader.append("acc-1", [opened("acc-1")])
    assert not (tmp_path / "copy.csv").exists()


def test_threads_of_one_process_append_to_every_shard_at_once(tmp_path: Path) -> None:
    with ev.open_sharded(tmp_path / "s", shards=2, durability="fsync") as store:
        streams = STREAMS[:6]
        assert {store.shard_of(s) for s in streams} == {0, 1}
        failures: list[BaseException] = []

        def write(stream: str) -> None:
            try:
                for version in range(25):
                    store.append(stream, [deposited("1.00", stream)], expected_version=version)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=write, args=(s,)) for s in streams]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        assert [store.stream_version(s) for s in streams] == [25] * 6
        assert store.sql('SELECT count(*), sum(amount) FROM "test.Deposited"').fetchall() == [(150, 150)]


def test_a_plain_repository_over_a_sharded_store_is_refused_naming_the_way(tmp_path: Path) -> None:
    with (
        ev.open_sharded(tmp_path / "bank", shards=2) as bank,
        pytest.raises(ev.InvalidInputError, match=r"store.repository\(BankAccountAggregate\)"),
    ):
        ev.Repository(bank, BankAccountAggregate)  # type: ignore[arg-type]
