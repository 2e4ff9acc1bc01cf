"""Threads appending to one store at once: optimistic concurrency, group commit, visibility order."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

import eventador as ev
from eventador.testing import StoreFactory
from tests.support.domain import Deposited

THREADS = 8


def run_threads(target: Callable[[int], None], count: int = THREADS) -> None:
    """Run target(0..count-1) in threads; re-raise the first failure here."""
    failures: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a thread is stuck"
    if failures:
        raise failures[0]


def event(thread: int, seq: int) -> Deposited:
    return Deposited(account_id="shared", amount=Decimal(seq), note=f"{thread}/{seq}")


def test_racing_writers_with_expected_versions_get_one_winner_per_version(store: ev.EventStore) -> None:
    rounds = 12
    barrier = threading.Barrier(THREADS, timeout=60)
    winners: list[tuple[int, int]] = []  # (round, thread)
    conflicts: list[ev.ConcurrencyError] = []
    lock = threading.Lock()

    def race(thread: int) -> None:
        for r in range(rounds):
            seen = store.stream_version("shared")
            barrier.wait()  # everyone has read the same version before anyone appends
            try:
                version = store.append("shared", [event(thread, r)], expected_version=seen)
            except ev.ConcurrencyError as exc:
                with lock:
                    conflicts.append(exc)
            else:
                assert version == seen + 1
                with lock:
                    winners.append((r, thread))
            barrier.wait()

    run_threads(race)
    assert sorted(r for r, _ in winners) == list(range(rounds)), "not exactly one winner per round"
    assert len(conflicts) == rounds * (THREADS - 1)
    assert all(c.stream_id == "shared" and c.actual == c.expected + 1 for c in conflicts)  # type: ignore[operator]
    records = store.read_stream("shared")
    assert [r.version for r in records] == list(range(1, rounds + 1))
    assert [r.event.note for r in records] == [f"{t}/{r}" for r, t in sorted(winners)]  # type: ignore[attr-defined]


def test_writers_retrying_on_conflict_all_get_in_without_duplicates(store: ev.EventStore) -> None:
    per_thread = 15
    won: list[tuple[int, int, int]] = []  # (version, thread, seq)
    lock = threading.Lock()

    def append_with_retries(thread: int) -> None:
        for seq in range(per_thread):
            while True:
                seen = store.stream_version("shared")
                try:
                    version = store.append("shared", [event(thread, seq)], expected_version=seen)
                except ev.ConcurrencyError:
                    continue
                with lock:
                    won.append((version, thread, seq))
                break

    run_threads(append_with_retries)
    total = THREADS * per_thread
    assert sorted(v for v, _, _ in won) == list(range(1, total + 1)), "a version has two winners, or none"
    records = store.read_stream("shared")
    assert [r.version for r in records] == list(range(1, total + 1))
    notes = [r.event.note for r in records]  # type: ignore[attr-defined]
    assert Counter(notes) == Counter(f"{t}/{s}" for t in range(THREADS) for s in range(per_thread))
    assert notes == [f"{t}/{s}" for _, t, s in sorted(won)]
    # Each thread's appends keep its own order.
    for t in range(THREADS):
        mine = [int(n.split("/")[1]) for n in notes if n.startswith(f"{t}/")]
        assert mine == list(range(per_thread))


@pytest.mark.parametrize("durability", ["fsync", "batch"])
def test_writers_on_their_own_streams_lose_nothing_and_leave_no_gaps(tmp_path: Path, durability: str) -> None:
    appends_per_thread = 25
    with ev.open_store(tmp_path / "store", durability=durability, flush_every=40) as store:  # type: ignore[arg-type]
        returned: dict[int, list[int]] = {}

        def write(thread: int) -> None:
            stream = f"acc-{thread}"
            versions = []
            for seq in range(appends_per_thread):
                size = 1 + (seq + thread) % 3
                events = [
                    Deposited(account_id=stream, amount=Decimal(seq), note=f"{thread}/{seq}/{i}") for i in range(size)
                ]
                versions.append(store.append(stream, events))
            returned[thread] = versions

        run_threads(write)
        check_threads_streams(store, returned, appends_per_thread)
        store.close()
        with ev.open_store(tmp_path / "store") as reopened:
            check_threads_streams(reopened, returned, appends_per_thread)


def check_threads_streams(store: ev.EventStore, returned: dict[int, list[int]], appends: int) -> None:
    records = list(store.read_all())
    assert [r.position for r in records] == list(range(1, len(records) + 1))
    assert len(records) == sum(1 + (s + t) % 3 for t in range(THREADS) for s in range(appends))
    for t in range(THREADS):
        mine = store.read_stream(f"acc-{t}")
        assert [r.version for r in mine] == list(range(1, len(mine) + 1))
        assert (
            [r.version for r in mine if r.event.note.endswith("/0")][1:]
            == [  # type: ignore[attr-defined]
                v + 1 for v in returned[t][:-1]
            ]
        )
        assert mine[-1].version == returned[t][-1]
        # The events of one append are adjacent in the log.
        by_append: dict[str, list[int]] = {}
        for r in mine:
            key = r.event.note.rsplit("/", 1)[0]  # type: ignore[attr-defined]
            by_append.setdefault(key, []).append(r.position)
        for positions in by_append.values():
            assert positions == list(range(positions[0], positions[0] + len(positions)))
    assert store.sql("SELECT count(*), count(DISTINCT position), max(position) FROM events").fetchall() == [
        (len(records), len(records), len(records))
    ]


def test_readers_never_see_a_gap_while_writers_append(store_factory: StoreFactory) -> None:
    store = store_factory.open()
    appends_per_thread = 10
    done = threading.Event()
    observed: list[int] = []

    def read_while_writing() -> None:
        while not done.is_set():
            positions = [r.position for r in store.read_all()]
            assert positions == list(range(1, len(positions) + 1)), "a reader saw position N+1 before N"
            observed.append(len(positions))
            for t in range(THREADS):
                versions = [r.version for r in store.read_stream(f"acc-{t}")]
                assert versions == list(range(1, len(versions) + 1))

    def write(thread: int) -> None:
        for seq in range(appends_per_thread):
            store.append(f"acc-{thread}", [Deposited(account_id="x", amount=Decimal(seq)) for _ in range(1 + seq % 2)])

    reader_failures: list[BaseException] = []

    def reader() -> None:
        try:
            read_while_writing()
        except BaseException as exc:
            reader_failures.append(exc)

    reading = threading.Thread(target=reader)
    reading.start()
    try:
        run_threads(write)
    finally:
        done.set()
        reading.join(timeout=120)
    assert not reader_failures, reader_failures[0]
    total = THREADS * sum(1 + s % 2 for s in range(appends_per_thread))
    assert [r.position for r in store.read_all()] == list(range(1, total + 1))
    assert observed, "the reader never ran"


def test_threads_waiting_for_a_position_wake_when_another_thread_appends_it(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "store") as store:
        results: list[bool] = []
        waiting = [threading.Thread(target=lambda: results.append(store.wait_for_position(3, 60))) for _ in range(4)]
        for thread in waiting:
            thread.start()
        for i in range(3):
            store.append("acc-1", Deposited(account_id="acc-1", amount=Decimal(i)))
        for thread in waiting:
            thread.join(10)
            assert not thread.is_alive(), "a waiter was never woken (it would wait its 60 s)"
        assert results == [True] * 4
        assert store.wait_for_position(4, timeout=0.05) is False
        assert store._thread_waiters == 0
