"""The Repository: aggregates without actors. Commands and reads, its cache, time travel,
history and states as DataFrames, and no lost update when threads or several
Repositories (or actors) share one aggregate."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import eventador as ev
from eventador import ManualClock, Repository
from tests.support.aggregate_domain import (
    BankAccountAggregate,
    CounterActor,
    CounterIncrementedEvent,
    DepositMoneyCommand,
    Ledger,
    LedgerState,
    OpenAccountCommand,
    Post,
    Posted,
    Status,
    WithdrawMoneyCommand,
)
from tests.support.spy import ReadSpy

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def post(amount: int | str, memo: str = "") -> Post:
    return Post(amount=Decimal(amount), memo=memo)


def test_execute_returns_the_new_state_and_get_reads_it_back() -> None:
    store = ev.open_store()
    repo = Repository(store, BankAccountAggregate)
    assert repo.get("acc-1").is_active is False  # a stream that does not exist: the initial state
    repo.execute("acc-1", OpenAccountCommand(account_id="acc-1", initial_balance=10.0))
    state = repo.execute("acc-1", DepositMoneyCommand(account_id="acc-1", amount=5.0))
    assert (state.balance, state.version, state.is_active) == (15.0, 2, True)
    assert repo.get("acc-1") == state == Repository(store, BankAccountAggregate).get("acc-1")


def test_a_rejected_command_raises_and_stores_nothing() -> None:
    store = ev.open_store()
    repo = Repository(store, BankAccountAggregate)
    repo.execute("acc-1", OpenAccountCommand(account_id="acc-1", initial_balance=10.0))
    with pytest.raises(ev.CommandRejected, match="insufficient funds"):
        repo.execute("acc-1", WithdrawMoneyCommand(account_id="acc-1", amount=11.0))
    assert store.stream_version("acc-1") == 1 and repo.get("acc-1").balance == 10.0


def test_a_command_without_events_appends_nothing() -> None:
    store = ev.open_store()
    repo = Repository(store, BankAccountAggregate)
    state = repo.execute("acc-1", DepositMoneyCommand(account_id="acc-1", amount=5.0))  # not open: ignored
    assert state.version == 0 and store.stream_version("acc-1") == 0


def test_a_hot_aggregate_is_not_replayed_for_each_command() -> None:
    store = ev.open_store()
    repo = Repository(store, Ledger)
    repo.execute("l-1", post(1))
    spy = ReadSpy(store)
    for _ in range(10):
        repo.execute("l-1", post(1))
    assert repo.get("l-1").balance == 11
    assert spy.calls == []


def test_a_cached_aggregate_catches_up_with_events_others_appended() -> None:
    store = ev.open_store()
    repo = Repository(store, Ledger)
    other = Repository(store, Ledger)
    repo.execute("l-1", post(1))
    other.execute("l-1", post(10))
    other.execute("l-1", post(100))
    spy = ReadSpy(store)
    assert repo.get("l-1").balance == 111
    assert spy.calls == [("l-1", 2)]
    assert repo.execute("l-1", post(1000)).balance == 1111  # no conflict: the cache caught up first


def test_the_cache_keeps_only_the_most_recently_used_aggregates() -> None:
    store = ev.open_store()
    repo = Repository(store, Ledger, cache_size=2)
    for name in ("a", "b", "c"):
        repo.execute(name, post(1))
    spy = ReadSpy(store)
    repo.get("b")
    repo.get("c")
    assert spy.calls == []
    repo.get("a")  # evicted: recovered from the store
    assert spy.calls == [("a", 1)]
    repo.evict()
    repo.get("c")
    assert spy.calls[-1] == ("c", 1)


def test_get_as_of_a_position_or_a_time_returns_the_past_state() -> None:
    clock = ManualClock(T0)
    store = ev.open_store(clock=clock)
    repo = Repository(store, Ledger)
    for i in range(1, 41):
        repo.execute("l-1", post(i, memo=f"m{i}"))
        store.append("noise", CounterIncrementedEvent(aggregate_id="noise", value=i))
        clock.advance(seconds=10)
    history = repo.history("l-1")
    row = history[history["version"] == 33].iloc[0]
    past = repo.get("l-1", as_of=int(row["position"]))
    assert (past.version, past.balance, past.posts) == (33, sum(range(1, 34)), 33)
    assert past.recent == ("m31", "m32", "m33")
    assert repo.get("l-1", as_of=T0 + timedelta(seconds=325)) == past
    assert repo.get("l-1", as_of=T0 - timedelta(days=1)) == LedgerState()
    assert repo.get("l-1", as_of=10**9) == repo.get("l-1")
    with pytest.raises(ev.InvalidInputError):
        repo.get("l-1", as_of=datetime(2026, 1, 1))


def test_history_is_a_dataframe_of_the_state_after_each_event() -> None:
    clock = ManualClock(T0)
    store = ev.open_store(clock=clock)
    repo = Repository(store, Ledger)
    repo.execute("l-1", post(5, "rent"))
    clock.advance(seconds=60)
    repo.execute("l-1", post(7, "food"))
    repo.execute("l-1", post(-2, "refund"))
    frame = repo.history("l-1")
    assert list(frame.columns) == [
        "position", "version", "recorded_at", "event_type",
        "last_modified", "balance", "status", "recent", "tags", "limits", "posts",
    ]
    assert frame["balance"].tolist() == [Decimal(5), Decimal(12), Decimal(10)]
    assert frame["event_type"].tolist() == ["ledger.Posted"] * 3
    assert frame["version"].tolist() == [1, 2, 3]
    assert frame["last_modified"].tolist() == [T0, T0 + timedelta(seconds=60), T0 + timedelta(seconds=60)]
    last = frame.iloc[-1]
    assert last["status"] is Status.OPEN and last["recent"] == ("rent", "food", "refund")
    assert repo.history("nobody").empty


def test_states_has_one_row_per_aggregate_of_the_type_and_matches_get(tmp_path: Path) -> None:
    clock = ManualClock(T0, tick=timedelta(seconds=1))
    with ev.open_store(tmp_path / "store", clock=clock, durability="none") as store:
        repo = Repository(store, Ledger)  # snapshots every 5 events, so long streams start from one
        for i in range(160):
            repo.execute(f"l-{i % 4}", post(i + 1, memo=f"m{i}"))
        repo.execute("l-9", post(3))
        # A stream begun with plain appends and carried on by the repository is one of its
        # aggregates, and all of its events count (they did not: its balance was 3, not 10).
        store.append("l-mixed", [Posted(amount=Decimal(4), memo=""), Posted(amount=Decimal(3), memo="")])
        repo.execute("l-mixed", post(3))
        store.append("c-1", CounterIncrementedEvent(aggregate_id="c-1", value=1), stream_type="CounterActor")
        store.append("untyped", CounterIncrementedEvent(aggregate_id="x", value=1))
        middle = store.last_position
        repo.execute("l-0", post(1000))
        repo.execute("l-new", post(1))
        frame = repo.states()
        assert list(frame.index) == ["l-0", "l-1", "l-2", "l-3", "l-9", "l-mixed", "l-new"]
        assert frame.loc["l-mixed", "balance"] == 10
        assert frame.index.name == "aggregate_id"
        fresh = Repository(store, Ledger)
        for aggregate_id in frame.index:
            expected = fresh.get(aggregate_id)
            row = frame.loc[aggregate_id]
            assert row["balance"] == expected.balance and row["version"] == expected.version
            assert row["last_modified"] == expected.last_modified and row["recent"] == expected.recent
        past = repo.states(as_of=middle)
        assert list(past.index) == ["l-0", "l-1", "l-2", "l-3", "l-9", "l-mixed"]
        assert past.loc["l-0", "balance"] == frame.loc["l-0", "balance"] - 1000
        assert past.loc["l-0", "balance"] == fresh.get("l-0", as_of=middle).balance
        assert Repository(store, BankAccountAggregate).states().empty


def test_states_after_a_reopen_reads_flushed_events_and_catalog_snapshots(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "store", durability="none") as store:
        repo = Repository(store, Ledger)
        for i in range(80):
            repo.execute(f"l-{i % 2}", post(1))
    with ev.open_store(tmp_path / "store", read_only=True) as store:
        frame = Repository(store, Ledger).states()
        assert frame["balance"].tolist() == [40, 40] and frame["posts"].tolist() == [40, 40]


def test_n_threads_sharing_one_repository_lose_no_update(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "store", durability="fsync") as store:
        repo = Repository(store, Ledger)
        _hammer([repo], threads=8, commands=25)
        assert repo.get("l-1").posts == 200
        assert Repository(store, Ledger).get("l-1").balance == 200
        assert store.stream_version("l-1") == 200


@pytest.mark.parametrize("durability", ["fsync", "none"])
def test_threads_on_two_repositories_lose_no_update(tmp_path: Path, durability: str) -> None:
    with ev.open_store(tmp_path / "store", durability=durability) as store:  # type: ignore[arg-type]
        repos = [Repository(store, Ledger, max_retries=20), Repository(store, Ledger, max_retries=20)]
        _hammer(repos, threads=8, commands=25)
        fresh = Repository(store, Ledger).get("l-1")
        assert (fresh.posts, fresh.balance, fresh.version) == (200, 200, 200)
        assert all(r.get("l-1") == fresh for r in repos)


def _hammer(repos: list[Repository[LedgerState]], *, threads: int, commands: int) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        repo = repos[n % len(repos)]
        try:
            start.wait()
            for _ in range(commands):
                repo.execute("l-1", post(1))
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not any(w.is_alive() for w in workers), "a worker hung"
    assert errors == []


def test_an_actor_and_a_repository_share_an_aggregate_without_losing_updates() -> None:
    store = ev.open_store()
    repo = Repository(store, Ledger)

    async def main() -> None:
        async with ev.ActorSystem() as system:
            ref = await system.spawn(
                "l-1", lambda: Ledger(persistence_id="l-1", event_store=store), supervisor=ev.Supervisor.resume()
            )
            await ref.ask(post(1))
            repo.execute("l-1", post(10))
            with pytest.raises(ev.ConcurrencyError):
                await ref.ask(post(100))  # the actor's version is stale: refused, then it catches up
            assert (await ref.ask(post(100))).balance == 111
        assert repo.execute("l-1", post(1000)).balance == 1111

    asyncio.run(main())


def test_execute_gives_up_after_max_retries_lost_races() -> None:
    store = ev.open_store()
    attempts: list[int] = []

    def always_conflicting(stream_id: str, events: Any, **kwargs: Any) -> int:
        attempts.append(kwargs["expected_version"])
        raise ev.ConcurrencyError(stream_id, kwargs["expected_version"], 99)

    store.append = always_conflicting  # type: ignore[method-assign]
    repo = Repository(store, Ledger, max_retries=3)
    with pytest.raises(ev.ConcurrencyError):
        repo.execute("l-1", post(1))
    assert len(attempts) == 4


def test_a_repository_needs_an_aggregate_class() -> None:
    with pytest.raises(ev.InvalidInputError, match="AggregateRoot subclass"):
        Repository(ev.open_store(), CounterActor)  # type: ignore[type-var]
    with pytest.raises(ev.InvalidInputError):
        Repository(ev.open_store(), Ledger, cache_size=-1)


def test_repr_is_one_line() -> None:
    repo = Repository(ev.open_store(), Ledger)
    repo.execute("l-1", post(1))
    assert repr(repo) == "Repository(Ledger, 1 cached, store=EventStore(memory: 1 events in 1 streams))"


def test_history_and_states_are_pandas_dataframes() -> None:
    repo = Repository(ev.open_store(), Ledger)
    repo.execute("l-1", post(1))
    assert isinstance(repo.history("l-1"), pd.DataFrame) and isinstance(repo.states(), pd.DataFrame)
