"""ev.fleet: replays of every aggregate and bucket projections on a real Dask LocalCluster.

One cluster (2 worker processes, 1 thread each) serves the whole module. Every answer is
compared with the local run over the same store: flushed Parquet files, snapshots, and an
unflushed tail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import eventador as ev
from eventador import ManualClock, Repository, fleet
from eventador.aggregates import replay
from eventador.aggregates.snapshots import encode_snapshot
from eventador.fleet import FleetProjection
from tests.support.aggregate_domain import (
    BankAccountAggregate,
    CounterIncrementedEvent,
    DepositMoneyCommand,
    Ledger,
    OpenAccountCommand,
    Post,
    Posted,
)

distributed = pytest.importorskip("distributed")

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=True
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ev.EventStore, dict[str, Any]]]:
    """A store with flushed files, snapshots (Ledger takes one every 5 events), other
    stream types, events that occurred before they were recorded, and an unflushed tail."""
    path = tmp_path_factory.mktemp("fleet") / "store"
    clock = ManualClock(T0, tick=timedelta(seconds=1))
    store = ev.open_store(path, clock=clock, durability="none", flush_every=97)
    ledgers = Repository(store, Ledger)
    accounts = Repository(store, BankAccountAggregate)
    points: dict[str, Any] = {}
    for i in range(300):
        ledgers.execute(f"l-{i % 23}", Post(amount=Decimal(i % 7 + 1), memo=f"m{i}"))
        if i % 3 == 0:
            account = f"acc-{i % 11}"
            if accounts.get(account).is_active:
                accounts.execute(account, DepositMoneyCommand(account_id=account, amount=float(i)))
            else:
                accounts.execute(account, OpenAccountCommand(account_id=account, initial_balance=1.0))
        if i == 150:
            points["position"] = store.last_position
            points["recorded"] = clock.now()
    # Occurred a day before they were recorded: only by="occurred_at" puts them in the past.
    earlier = T0 - timedelta(days=1)
    store.append("l-old", [Posted(amount=Decimal(5), memo="")], stream_type="Ledger", occurred_at=earlier)
    store.append("c-1", CounterIncrementedEvent(aggregate_id="c-1", value=1), stream_type="CounterActor")
    points["occurred"] = earlier + timedelta(hours=1)
    store.flush()
    for i in range(20):  # the tail: never flushed
        ledgers.execute(f"l-{i % 3}", Post(amount=Decimal(100), memo="tail"))
    ledgers.execute("l-tail-only", Post(amount=Decimal(9)))
    yield store, points
    store.close()


def test_the_bank_has_files_snapshots_and_a_tail(bank: tuple[ev.EventStore, dict[str, Any]]) -> None:
    store, _ = bank
    snap = store.state()
    flushed = max(s.last_position for s in snap.segments)
    assert len(snap.segments) >= 2 and 0 < store.last_position - flushed < 97
    assert store.snapshots.newest({"l-0": 100})


@pytest.mark.parametrize("buckets", [None, 1, 5])
def test_states_on_the_cluster_equal_the_local_run(
    bank: tuple[ev.EventStore, dict[str, Any]], client: Any, buckets: int | None
) -> None:
    store, _ = bank
    for aggregate in (Ledger, BankAccountAggregate):
        repo = Repository(store, aggregate)
        expected = repo.states()
        assert len(expected) > 10
        pd.testing.assert_frame_equal(ev.fleet.states(repo, client, buckets=buckets), expected)
    assert ev.fleet.states(Repository(store, Ledger), client).loc["l-tail-only", "balance"] == 9  # the tail counts


def test_classes_the_store_does_not_hold_are_not_sent_to_the_workers(
    bank: tuple[ev.EventStore, dict[str, Any]], client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A class of a module the workers cannot import (made here, at run time): pickled by
    # reference, it would fail on every worker, though no stored event is of its type.
    nowhere = types.ModuleType("fleet_test_nowhere")
    monkeypatch.setitem(sys.modules, nowhere.__name__, nowhere)
    exec("import eventador as ev\nclass Elsewhere(ev.Event, event_type='fleet.test.Elsewhere'):\n    x: int\n",
         nowhere.__dict__)
    store, _ = bank
    repo = Repository(store, Ledger)
    pd.testing.assert_frame_equal(ev.fleet.states(repo, client), repo.states())


@pytest.mark.parametrize("point", ["position", "recorded", "occurred"])
def test_states_as_of_a_point_equal_the_local_run(
    bank: tuple[ev.EventStore, dict[str, Any]], client: Any, point: str
) -> None:
    store, points = bank
    repo = Repository(store, Ledger)
    by = "occurred_at" if point == "occurred" else "recorded_at"
    expected = repo.states(as_of=points[point], by=by)
    assert 0 < len(expected) < len(repo.states())
    pd.testing.assert_frame_equal(ev.fleet.states(repo, client, as_of=points[point], by=by, buckets=3), expected)
    if point == "occurred":
        assert list(expected.index) == ["l-old"]


def test_states_start_from_the_snapshots_as_the_local_run_does(tmp_path: Path, client: Any) -> None:
    """A snapshot is trusted, not checked against the events: one saved with another balance
    shows in both answers, so the tasks fold from the snapshots they were given."""
    with ev.open_store(tmp_path / "store", durability="none", flush_every=7) as store:
        repo = Repository(store, Ledger)
        for i in range(80):  # 40 events each: streams of 32 or more look for a snapshot
            repo.execute(f"s-{i % 2}", Post(amount=Decimal(1)))
        state = repo.get("s-0", as_of=store.last_position)
        odd = encode_snapshot("s-0", state.version, state.copy_with(balance=Decimal(1000)), taken_at=T0)
        store.snapshots.save(odd)
        expected = repo.states()
        assert expected.loc["s-0", "balance"] == 1000 and expected.loc["s-1", "balance"] == 40
        pd.testing.assert_frame_equal(ev.fleet.states(repo, client, buckets=2), expected)


def test_states_without_a_cluster_run_the_same_tasks_here(bank: tuple[ev.EventStore, dict[str, Any]]) -> None:
    store, points = bank
    repo = Repository(store, Ledger)
    pd.testing.assert_frame_equal(ev.fleet.states(repo, None, buckets=4), repo.states())
    pd.testing.assert_frame_equal(
        ev.fleet.states(repo, None, as_of=points["position"]), repo.states(as_of=points["position"])
    )


def test_a_store_in_memory_is_sent_whole_as_its_tail(client: Any) -> None:
    store = ev.open_store()
    repo = Repository(store, Ledger)
    for i in range(30):
        repo.execute(f"m-{i % 4}", Post(amount=Decimal(i)))
    pd.testing.assert_frame_equal(ev.fleet.states(repo, client), repo.states())


def test_an_empty_store_and_empty_buckets_give_the_local_answer(client: Any) -> None:
    store = ev.open_store()
    repo = Repository(store, Ledger)
    pd.testing.assert_frame_equal(ev.fleet.states(repo, client, buckets=3), repo.states())
    assert ev.fleet.rebuild(PostedPerStream(), store, client) == {}
    repo.execute("only", Post(amount=Decimal(2)))  # one stream, seven buckets: six are empty
    pd.testing.assert_frame_equal(ev.fleet.states(repo, client, buckets=7), repo.states())


def test_old_events_read_through_the_drivers_upcasters_on_the_workers(tmp_path: Path, client: Any) -> None:
    """Version 1 events flushed before version 2 and its upcaster existed: the workers decode
    them only through the upcaster the driver registered (their imports register none)."""
    name = "fleet.Renamed"

    def version_1() -> Any:
        class Renamed(ev.Event, event_type=name):  # the same module and name: a redefinition
            account_id: str
            amount: int

        return Renamed

    def version_2() -> Any:
        class Renamed(ev.Event, event_type=name, version=2):
            account: str
            amount: int

        return Renamed

    Old = version_1()
    with ev.open_store(tmp_path / "store", durability="none") as store:
        for i in range(40):
            store.append(f"r-{i % 4}", [Old(account_id=f"r-{i % 4}", amount=i)], stream_type="fleet.Summer")
        store.flush()

        New = version_2()

        class Sum(ev.State):
            total: int = 0
            accounts: frozenset[str] = frozenset()

        class Summer(ev.AggregateRoot[Sum]):
            aggregate_type = "fleet.Summer"

            @property
            def initial_state(self) -> Sum:
                return Sum()

            def apply_event(self, state: Sum, event: ev.Event) -> Sum:
                assert isinstance(event, New)
                return state.copy_with(total=state.total + event.amount, accounts=state.accounts | {event.account})

        ev.upcaster(name, 1, ev.Rename("account_id", "account"))
        try:
            repo = Repository(store, Summer)
            expected = repo.states()
            assert expected.loc["r-1", "accounts"] == frozenset({"r-1"})
            pd.testing.assert_frame_equal(ev.fleet.states(repo, client, buckets=2), expected)
        finally:
            ev.upcasters.remove(name)


class PostedPerStream(FleetProjection[dict[str, tuple[int, Decimal]], dict[str, tuple[int, Decimal]]]):
    """Events and posted amounts per stream (positions checked to rise within a stream)."""

    def fold(self, records: Sequence[ev.RecordedEvent]) -> dict[str, tuple[int, Decimal]]:
        out: dict[str, tuple[int, Decimal]] = {}
        last: dict[str, int] = {}
        for r in records:
            assert r.position > last.get(r.stream_id, 0)
            last[r.stream_id] = r.position
            count, total = out.get(r.stream_id, (0, Decimal(0)))
            amount = r.event.amount if isinstance(r.event, Posted) else Decimal(0)
            out[r.stream_id] = (count + 1, total + amount)
        return out

    def merge(self, partials: Sequence[dict[str, tuple[int, Decimal]]]) -> dict[str, tuple[int, Decimal]]:
        merged: dict[str, tuple[int, Decimal]] = {}
        for part in partials:
            assert not merged.keys() & part.keys()  # a stream lives in one bucket
            merged.update(part)
        return merged


def _posted_by_sql(source: Any) -> dict[str, tuple[int, Decimal]]:
    rows = source.sql(
        'SELECT e.stream_id, count(*), coalesce(sum(p.amount), 0) FROM events e '
        'LEFT JOIN "ledger.Posted" p ON p.position = e.position GROUP BY 1'
    ).fetchall()
    return {sid: (n, Decimal(total)) for sid, n, total in rows}


def test_a_projection_rebuilt_on_the_cluster_equals_the_local_run_and_sql(
    bank: tuple[ev.EventStore, dict[str, Any]], client: Any
) -> None:
    store, points = bank
    projection = PostedPerStream()
    result = ev.fleet.rebuild(projection, store, client, buckets=4)
    assert result == ev.fleet.rebuild(projection, store, None) == _posted_by_sql(store)
    assert result["l-tail-only"] == (1, Decimal(9)) and result["c-1"] == (1, Decimal(0))
    past = ev.fleet.rebuild(projection, store, client, as_of=points["recorded"])
    assert past == _posted_by_sql(store.as_of(points["recorded"])) and len(past) < len(result)


def test_records_on_the_workers_are_the_stores_own(bank: tuple[ev.EventStore, dict[str, Any]], client: Any) -> None:
    class Records(FleetProjection[list[ev.RecordedEvent], list[ev.RecordedEvent]]):
        def fold(self, records: Sequence[ev.RecordedEvent]) -> list[ev.RecordedEvent]:
            return list(records)

        def merge(self, partials: Sequence[list[ev.RecordedEvent]]) -> list[ev.RecordedEvent]:
            return sorted((r for part in partials for r in part), key=lambda r: r.position)

    store, _ = bank
    assert ev.fleet.rebuild(Records(), store, client, buckets=3) == list(store.read_all())


def test_buckets_are_runs_of_the_stream_ids_with_about_as_many_events_each() -> None:
    order = [f"s{i:03d}" for i in range(100)]
    events = [1000 if i == 10 else 10 for i in range(100)]
    for n in (1, 2, 3, 4, 7):
        parts = fleet._ranges(order, events, n)
        assert len(parts) == n and [sid for part in parts for sid in part] == order
        sizes = [sum(events[order.index(sid)] for sid in part) for part in parts]
        assert max(sizes) < sum(events) / n + max(events)  # a bucket is at most one stream too big
    assert fleet._ranges(order, [10] * 100, 4) == [order[:25], order[25:50], order[50:75], order[75:]]
    assert fleet._ranges(order[:4], [0] * 4, 2) == [order[:2], order[2:4]]  # a stream costs one event at least
    assert [part for part in fleet._ranges(order[:2], [5, 5], 4) if part] == [order[:1], order[1:2]]  # 2 empty
    assert fleet._ranges([], [], 3) == [[], [], []]


def _row_groups_scanned(con: Any, query: str, out: Path) -> tuple[int, int]:
    """(row groups read, row groups in the file) of `query` on `con`, from DuckDB's profile."""
    con.execute("PRAGMA enable_profiling = 'json'")
    con.execute(f"PRAGMA profiling_output = '{out}'")
    con.sql(query).fetchall()
    con.execute("PRAGMA disable_profiling")
    scans, todo = [], [json.loads(out.read_text())]
    while todo:
        node = todo.pop()
        todo.extend(node.get("operator", []) if "operator" in node else node.get("children", []))
        if node.get("extra_info", {}).get("Function") == "READ_PARQUET":
            scans.append((node["row_groups_scanned"], node["total_row_groups_to_scan"]))
    (scan,) = scans
    return scan


def test_a_bucket_reads_only_the_row_groups_of_its_range(tmp_path: Path, client: Any) -> None:
    """Files are sorted by stream id: a bucket, a run of stream ids, lies in few row groups,
    and the rows a task reads (its view ``src``) skip the others by their statistics. (The
    join with the bucket's ids alone lets DuckDB skip them only for small buckets: 50 ids.)"""
    with ev.open_store(tmp_path / "store", durability="none", flush_every=100_000) as store:
        for i in range(2000):
            store.append(f"l-{i:04d}", [Posted(amount=Decimal(i), memo="") for _ in range(10)], stream_type="Ledger")
        store.flush()  # one file of 20,000 rows: 5 row groups of 4,096
        repo = Repository(store, Ledger)
        found = replay.plan(store, Ledger, None)
        order = [sid for sid, _ in found.heads]
        classes = fleet._stored_classes(found.source, store)
        with fleet._pinned(found.source) as (files, tail):
            assert len(files) == 1 and tail is None
            for ids in fleet._ranges(order, [10] * len(order), 4):  # 5,000 rows each: 2 row groups at most
                reads = fleet._reads(found.source, files, tail, classes, ids, [0] * len(ids))
                with fleet._connection(reads) as con:
                    assert _row_groups_scanned(con, "SELECT * FROM src", tmp_path / "profile.json") == (2, 5)
                    assert con.execute("SELECT count(*) FROM src").fetchall() == [(10 * len(ids),)]
        pd.testing.assert_frame_equal(ev.fleet.states(repo, client, buckets=4), repo.states())


def test_the_answer_does_not_depend_on_how_stream_ids_sort_into_buckets(tmp_path: Path, client: Any) -> None:
    """Ids whose SQL order differs from a naive one (case, quotes, prefixes, non-ASCII), in
    files and in the tail: every split gives the local answer."""
    ids = ["a", "a'b", "a-1", "a0", "B", "b", "Zed", "ünï", "名前", "z" * 200, "o'brien", "a b", "~"]
    with ev.open_store(tmp_path / "store", durability="none", flush_every=1000) as store:
        for round_ in range(3):
            for n, sid in enumerate(ids):
                store.append(sid, [Posted(amount=Decimal(n + round_), memo=sid)], stream_type="Ledger")
            if round_ < 2:
                store.flush()  # the third round stays in the tail
        repo = Repository(store, Ledger)
        expected = repo.states()
        assert len(expected) == len(ids)
        for buckets in range(1, 8):
            pd.testing.assert_frame_equal(ev.fleet.states(repo, client, buckets=buckets), expected)
        assert ev.fleet.rebuild(PostedPerStream(), store, client, buckets=5) == _posted_by_sql(store)


def test_bad_input_gets_clear_errors(bank: tuple[ev.EventStore, dict[str, Any]], client: Any) -> None:
    store, _ = bank
    repo = Repository(store, Ledger)
    for buckets in (0, -1, True, 2.0):
        with pytest.raises(ev.InvalidInputError, match="buckets must be an int of 1 or more"):
            ev.fleet.states(repo, client, buckets=buckets)  # type: ignore[arg-type]
    with pytest.raises(ev.InvalidInputError, match=r"client must be a distributed\.Client"):
        ev.fleet.states(repo, "tcp://127.0.0.1:8786")
    with pytest.raises(ev.InvalidInputError, match="FleetProjection"):
        ev.fleet.rebuild(lambda records: 0, store, client)  # type: ignore[arg-type]
    with pytest.raises(ev.InvalidInputError, match="naive"):
        ev.fleet.states(repo, client, as_of=datetime(2026, 1, 1))


def test_a_closed_client_is_refused_by_name(bank: tuple[ev.EventStore, dict[str, Any]], client: Any) -> None:
    store, _ = bank
    closed = distributed.Client(client.cluster, set_as_default=False)
    closed.close()
    with pytest.raises(ev.InvalidInputError, match="client is closed"):
        ev.fleet.states(Repository(store, Ledger), closed)
    with pytest.raises(ev.InvalidInputError, match="client is closed"):
        ev.fleet.rebuild(PostedPerStream(), store, closed)


NOTEBOOK = textwrap.dedent('''
    import sys
    import pandas as pd
    import eventador as ev
    from distributed import Client, LocalCluster

    class Added(ev.Event, event_type="nb.Added"):
        n: int

    class Total(ev.State):
        total: int = 0

    class Adder(ev.AggregateRoot[Total]):
        @property
        def initial_state(self):
            return Total()

        def handle_command(self, state, command):
            return [Added(n=command.n)]

        def apply_event(self, state, event):
            return state.copy_with(total=state.total + event.n)

    class Add(ev.Command):
        n: int

    def check(client):
        pd.testing.assert_frame_equal(ev.fleet.states(repo, client), repo.states())

    if __name__ == "__main__":
        store = ev.open_store(sys.argv[1], flush_every=10)
        repo = ev.Repository(store, Adder)
        for i in range(45):
            repo.execute(f"a-{i % 6}", Add(n=i))
        if len(sys.argv) > 2:  # a running cluster's scheduler
            with Client(sys.argv[2], set_as_default=False) as client:
                check(client)
        else:
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
                with Client(cluster) as client:
                    check(client)
        print("same", repo.states()["total"].sum())
        store.close()
''')


def _run_notebook(tmp_path: Path, *scheduler: str) -> None:
    script = tmp_path / "notebook.py"
    script.write_text(NOTEBOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store"), *scheduler],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["same", str(sum(range(45)))]


def test_classes_defined_in_a_notebooks_main_module_reach_the_workers(tmp_path: Path, client: Any) -> None:
    """Classes of ``__main__`` (a notebook's, here a script's) are not importable by the
    workers: cloudpickle sends them by value, and the answer is the local one."""
    _run_notebook(tmp_path, client.scheduler.address)


@pytest.mark.slow
def test_a_local_cluster_started_in_a_jupyter_kernel_replays_its_classes(tmp_path: Path) -> None:
    """The same cell in a real Jupyter kernel, which starts its own LocalCluster (2 worker processes)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cell = NOTEBOOK.replace('if __name__ == "__main__":', "if True:").replace("len(sys.argv) > 2", "False")
    cell = cell.replace("sys.argv[1]", repr(str(tmp_path / "store")))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    resources = {"metadata": {"path": str(REPO)}}  # the kernel's directory: eventador imports from there
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3", resources=resources).execute()
    printed = "".join(o.get("text", "") for o in notebook.cells[0].outputs if o.get("name") == "stdout")
    assert printed.split()[-2:] == ["same", str(sum(range(45)))]


def test_importing_eventador_and_its_fleet_module_imports_no_dask() -> None:
    probe = (
        "import eventador, eventador.fleet, sys\n"
        "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split()[-1] == "[]"
