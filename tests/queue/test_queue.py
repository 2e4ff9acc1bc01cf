"""The durable queue: delivery, leases, retries with backoff, dead letters, dedupe, batches.

Time is a ManualClock throughout: lease expiry and backoff are tested by moving the
clock, never by sleeping.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import eventador as ev
from eventador import Lease, MessageNotFoundError, QueueClosedError, QueueManager, RetryPolicy
from eventador.queue.manager import UnknownMessage, decode_message, encode_message

ROOT = Path(__file__).resolve().parents[2]


class SendEmail(ev.Command):
    to: str
    subject: str
    due: datetime | None = None
    price: Decimal = Decimal("0")


class EmailSent(ev.Event, event_type="test.queue.EmailSent"):
    to: str


@pytest.fixture
def clock() -> ev.ManualClock:
    return ev.ManualClock(datetime(2026, 1, 1, tzinfo=UTC))


@pytest.fixture
def store(clock: ev.ManualClock) -> Iterator[ev.EventStore]:
    s = ev.open_store(clock=clock)
    yield s
    s.close()


@pytest.fixture
def qm(store: ev.EventStore) -> Iterator[QueueManager]:
    manager = QueueManager(store, retry_policy=RetryPolicy(jitter=False))
    yield manager
    manager.close()


# -- enqueue and dequeue ------------------------------------------------------------------------------


def test_messages_come_back_typed_in_enqueue_order(qm: QueueManager) -> None:
    due = datetime(2026, 2, 1, tzinfo=UTC)
    first = qm.enqueue("mail", SendEmail(to="ada@example.com", subject="hi", due=due, price=Decimal("9.99")))
    second = qm.enqueue("mail", EmailSent(to="bob@example.com"))
    third = qm.enqueue("mail", {"plain": [1, 2, 3]})
    leases = [qm.dequeue("mail") for _ in range(3)]
    assert [lease.id for lease in leases if lease] == [first, second, third]
    assert leases[0] and leases[0].message == SendEmail(
        to="ada@example.com", subject="hi", due=due, price=Decimal("9.99")
    )
    assert leases[1] and leases[1].message == EmailSent(to="bob@example.com")
    assert leases[2] and leases[2].message == {"plain": [1, 2, 3]}
    assert all(lease and lease.attempts == 1 for lease in leases)
    assert qm.dequeue("mail") is None


def test_queues_are_separate(qm: QueueManager) -> None:
    qm.enqueue("a", 1)
    qm.enqueue("b", 2)
    lease = qm.dequeue("b")
    assert lease is not None and lease.message == 2 and lease.queue == "b"
    assert qm.dequeue("b") is None


def test_unencodable_message_raises_and_enqueues_nothing(qm: QueueManager) -> None:
    with pytest.raises(ev.SerializationError) as info:
        qm.enqueue("mail", {"ok": 1, "bad": object()})
    assert "bad" in info.value.path
    with pytest.raises(ev.SerializationError):
        qm.enqueue_many("mail", [{"fine": 1}, SendEmail(to=3, subject="x")])  # type: ignore[arg-type]
    assert qm.dequeue("mail") is None
    assert qm.stats().empty


def test_naive_datetime_is_refused(qm: QueueManager) -> None:
    with pytest.raises(ev.SerializationError, match="naive"):
        qm.enqueue("mail", {"when": datetime(2026, 1, 1)})


def test_delay_keeps_a_message_back_until_due(qm: QueueManager, clock: ev.ManualClock) -> None:
    qm.enqueue("later", "x", delay=timedelta(seconds=10))
    qm.enqueue("later", "y", delay=5)
    assert qm.dequeue("later") is None
    clock.advance(seconds=5)
    lease = qm.dequeue("later")
    assert lease is not None and lease.message == "y"
    assert qm.dequeue("later") is None
    clock.advance(seconds=5)
    lease = qm.dequeue("later")
    assert lease is not None and lease.message == "x"


def test_fifo_among_ready_messages_regardless_of_delay(qm: QueueManager, clock: ev.ManualClock) -> None:
    delayed = qm.enqueue("q", "first, delayed", delay=1)
    plain = qm.enqueue("q", "second")
    clock.advance(seconds=1)
    assert [lease.id for lease in qm.dequeue_many("q", 5)] == [delayed, plain]


def test_bad_arguments_are_refused(qm: QueueManager) -> None:
    with pytest.raises(ev.InvalidInputError):
        qm.enqueue("", 1)
    with pytest.raises(ev.InvalidInputError):
        qm.enqueue("q", 1, delay=-1)
    with pytest.raises(ev.InvalidInputError):
        qm.enqueue("q", 1, dedupe_key="")
    with pytest.raises(ev.InvalidInputError):
        qm.dequeue("q", visibility_timeout=0)
    with pytest.raises(ev.InvalidInputError):
        qm.dequeue_many("q", 0)
    with pytest.raises(ev.InvalidInputError):
        qm.enqueue_many("q", [1, 2], dedupe_keys=["a"])
    with pytest.raises(ev.InvalidInputError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ev.InvalidInputError):
        RetryPolicy(initial_delay=10, max_delay=1)


# -- dedupe keys -----------------------------------------------------------------------------------------


def test_dedupe_key_returns_the_existing_id_and_adds_nothing(qm: QueueManager) -> None:
    first = qm.enqueue("q", "one", dedupe_key="k")
    again = qm.enqueue("q", "two", dedupe_key="k")
    assert again == first
    lease = qm.dequeue("q")
    assert lease is not None and lease.message == "one" and lease.dedupe_key == "k"
    assert qm.dequeue("q") is None


def test_dedupe_key_is_remembered_after_ack(qm: QueueManager) -> None:
    first = qm.enqueue("q", "once", dedupe_key="charge-order-1")
    lease = qm.dequeue("q")
    assert lease is not None and qm.ack(lease)
    assert qm.enqueue("q", "once", dedupe_key="charge-order-1") == first
    assert qm.dequeue("q") is None


def test_dedupe_keys_are_per_queue(qm: QueueManager) -> None:
    assert qm.enqueue("a", 1, dedupe_key="k") != qm.enqueue("b", 1, dedupe_key="k")


def test_dedupe_within_one_batch(qm: QueueManager) -> None:
    ids = qm.enqueue_many("q", ["a", "b", "c"], dedupe_keys=["x", None, "x"])
    assert ids[0] == ids[2] != ids[1]
    assert [lease.message for lease in qm.dequeue_many("q", 10)] == ["a", "b"]


def test_forgotten_dedupe_keys_admit_a_new_message(qm: QueueManager, clock: ev.ManualClock) -> None:
    first = qm.enqueue("q", 1, dedupe_key="k")
    pending = qm.enqueue("q", 2, dedupe_key="still-queued")
    lease = qm.dequeue("q")
    assert lease is not None
    qm.ack(lease)
    clock.advance(seconds=3600)
    assert qm.forget_dedupe_keys("q", older_than=timedelta(minutes=30)) == 1  # not the one still queued
    assert qm.enqueue("q", 1, dedupe_key="k") != first
    assert qm.enqueue("q", 2, dedupe_key="still-queued") == pending


# -- leases, acks and redelivery -------------------------------------------------------------------------


def test_unacked_lease_is_delivered_again_after_its_visibility_timeout(qm: QueueManager, clock: ev.ManualClock) -> None:
    mid = qm.enqueue("q", "work")
    lease = qm.dequeue("q", visibility_timeout=10)
    assert lease is not None and lease.expires_at == clock.now() + timedelta(seconds=10)
    clock.advance(seconds=9.999)
    assert qm.dequeue("q") is None
    clock.advance(seconds=0.001)
    again = qm.dequeue("q", visibility_timeout=10)
    assert again is not None and again.id == mid and again.attempts == 2


def test_ack_removes_the_message_for_good(qm: QueueManager, clock: ev.ManualClock) -> None:
    qm.enqueue("q", "work")
    lease = qm.dequeue("q", visibility_timeout=1)
    assert lease is not None
    assert qm.ack(lease) is True
    assert qm.ack(lease) is False
    clock.advance(seconds=5)
    assert qm.dequeue("q") is None


def test_nack_of_a_superseded_lease_is_stale(qm: QueueManager, clock: ev.ManualClock) -> None:
    qm.enqueue("q", "work")
    old = qm.dequeue("q", visibility_timeout=1)
    clock.advance(seconds=1)
    new = qm.dequeue("q", visibility_timeout=30)
    assert old is not None and new is not None
    assert qm.nack(old, "late") == "stale"
    assert qm.nack(new, "now") == "retry"
    assert qm.nack(new, "twice") == "stale"


def test_release_orphaned_leases_redelivers_at_once(qm: QueueManager, store: ev.EventStore) -> None:
    qm.enqueue("q", "work")
    lease = qm.dequeue("q", visibility_timeout=3600)
    assert lease is not None
    # A lease this process holds is no orphan.
    assert qm.release_orphaned_leases() == 0
    # Pretend another (now dead) process took it.
    con = store.connect()
    con.execute("UPDATE queue_messages SET lease_owner = 'someone-else'")
    con.close()
    assert qm.release_orphaned_leases() == 1
    again = qm.dequeue("q")
    assert again is not None and again.attempts == 2


# -- stale leases: a lease stands for one delivery ---------------------------------------------------------


def test_an_ack_whose_lease_ran_out_leaves_the_message_to_its_new_consumer(
    qm: QueueManager, clock: ev.ManualClock
) -> None:
    mid = qm.enqueue("q", "work")
    slow = qm.dequeue("q", visibility_timeout=1)
    clock.advance(seconds=1)
    fresh = qm.dequeue("q", visibility_timeout=30)
    assert slow is not None and fresh is not None and fresh.id == slow.id == mid
    assert qm.ack(slow) is False  # stale: the message is someone else's now
    assert qm.messages("q")["state"].tolist() == ["in_flight"]
    assert qm.nack(slow, "late") == "stale"
    assert qm.ack(fresh) is True
    assert qm.messages("q").empty


def test_ack_many_counts_only_the_leases_still_current(qm: QueueManager, clock: ev.ManualClock) -> None:
    qm.enqueue_many("q", ["a", "b"])
    stale = qm.dequeue_many("q", 2, visibility_timeout=1)
    clock.advance(seconds=1)
    current = qm.dequeue("q", visibility_timeout=30)  # "a" again; "b" waits, its lease run out
    assert current is not None and current.message == "a"
    assert qm.ack_many(stale) == 1  # "b": nobody holds it since, so its lease still acks
    assert qm.messages("q")["message"].tolist() == ["a"]
    assert qm.ack_many([current, *stale]) == 1


def test_a_lease_from_before_a_requeue_can_neither_ack_nor_nack(qm: QueueManager, clock: ev.ManualClock) -> None:
    # The same id and the same attempt number: only the lease's expiry tells the deliveries apart.
    qm.retry_policy = RetryPolicy(max_attempts=1, jitter=False)
    mid = qm.enqueue("q", "work")
    before = qm.dequeue("q", visibility_timeout=10)
    assert before is not None and qm.nack(before, "boom") == "dead"
    qm.requeue(mid)
    clock.advance(seconds=1)
    after = qm.dequeue("q", visibility_timeout=10)
    assert after is not None and (after.id, after.attempts) == (before.id, before.attempts)
    assert qm.nack(before, "late") == "stale"
    assert qm.ack(before) is False
    assert qm.messages("q")["state"].tolist() == ["in_flight"]
    assert qm.ack(after) is True


def test_a_stale_ack_in_real_time_leaves_the_new_lease_working(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "s") as store, QueueManager(store) as qm:
        qm.enqueue("q", "work")
        slow = qm.dequeue("q", visibility_timeout=0.05)
        deadline = time.monotonic() + 5
        fresh = None
        while fresh is None and time.monotonic() < deadline:
            time.sleep(0.02)
            fresh = qm.dequeue("q", visibility_timeout=30)
        assert slow is not None and fresh is not None and fresh.attempts == 2
        assert qm.ack(slow) is False
        assert qm.ack(fresh) is True


CRASHING_CONSUMER = """
import os, sys
import eventador as ev
store = ev.open_store(sys.argv[1])
qm = ev.QueueManager(store)
leases = qm.dequeue_many("jobs", 3, visibility_timeout=3600)
print(len(leases), flush=True)
sys.stdin.read()  # killed here, holding the batch
"""


def test_a_crashed_consumer_spends_one_attempt_of_each_message_in_its_batch(tmp_path: Path) -> None:
    """SIGKILLed holding three leases (having started none): each of the three has one
    delivery counted toward max_attempts; a second crash sends them to the dead letters."""
    path = tmp_path / "s"
    policy = RetryPolicy(max_attempts=2, jitter=False)
    with ev.open_store(path) as store, QueueManager(store) as qm:
        ids = qm.enqueue_many("jobs", ["a", "b", "c", "d"])
    for crash in (1, 2):
        child = subprocess.Popen(
            [sys.executable, "-c", CRASHING_CONSUMER, str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "3"
        child.kill()
        assert child.wait(timeout=60) == -signal.SIGKILL
        child.stdin.close()  # type: ignore[union-attr]
        child.stdout.close()
        with ev.open_store(path) as store, QueueManager(store, retry_policy=policy) as qm:
            messages = qm.messages("jobs").set_index("id")
            assert messages.loc[ids[:3], "attempts"].tolist() == [crash] * 3
            assert messages.loc[ids[3], "attempts"] == 0
            assert qm.release_orphaned_leases() == 3
            if crash == 2:
                # A third delivery would exceed max_attempts=2: dead letters, and "d" comes out.
                lease = qm.dequeue("jobs")
                assert lease is not None and lease.message == "d"
                dead = qm.dead_letters("jobs")
                assert dead["id"].tolist() == ids[:3]
                assert dead["error"].str.startswith("lease expired after 2 deliveries").all()


# -- retries, backoff and dead letters ---------------------------------------------------------------------


def test_nack_retries_after_exponential_backoff(store: ev.EventStore, clock: ev.ManualClock) -> None:
    policy = RetryPolicy(max_attempts=10, initial_delay=0.5, max_delay=3.0, jitter=False)
    with QueueManager(store, retry_policy=policy) as qm:
        qm.enqueue("q", "flaky")
        expected = [0.5, 1.0, 2.0, 3.0, 3.0]
        for attempt, delay in enumerate(expected, start=1):
            lease = qm.dequeue("q")
            assert lease is not None and lease.attempts == attempt
            assert qm.nack(lease, ValueError(f"try {attempt}")) == "retry"
            clock.advance(seconds=delay - 0.001)
            assert qm.dequeue("q") is None, f"redelivered before the backoff of {delay} s"
            clock.advance(seconds=0.001)
        lease = qm.dequeue("q")
        assert lease is not None and lease.last_error == "ValueError: try 5"


def test_backoff_jitter_stays_between_half_and_all_of_the_delay(store: ev.EventStore) -> None:
    policy = RetryPolicy(initial_delay=1.0, max_delay=100.0, jitter=True)
    rng = random.Random(7)
    for failed in range(1, 8):
        base = min(100.0, 2.0 ** (failed - 1))
        draws = [policy.delay(failed, rng) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in draws)
        assert max(draws) - min(draws) > base / 4  # it really jitters
    with QueueManager(store, retry_policy=policy, rng=random.Random(1)) as qm:
        qm.enqueue("q", 1)
        lease = qm.dequeue("q")
        assert lease is not None
        now = store.clock.now()
        qm.nack(lease)
        visible = qm.messages("q")["visible_at"][0].to_pydatetime()
        assert now + timedelta(seconds=0.5) <= visible <= now + timedelta(seconds=1.0)


def test_nack_with_an_explicit_delay(qm: QueueManager, clock: ev.ManualClock) -> None:
    qm.enqueue("q", 1)
    lease = qm.dequeue("q")
    assert lease is not None
    qm.nack(lease, delay=0)
    again = qm.dequeue("q")
    assert again is not None and again.attempts == 2


def test_after_max_attempts_a_message_is_dead_with_its_reason(qm: QueueManager, clock: ev.ManualClock) -> None:
    mid = qm.enqueue("q", {"poison": True})
    qm.enqueue("q", {"fine": True})
    outcomes = []
    for _ in range(5):
        lease = qm.dequeue("q")
        assert lease is not None and lease.id == mid
        outcomes.append(qm.nack(lease, RuntimeError("handler blew up")))
        clock.advance(seconds=60)
    assert outcomes == ["retry"] * 4 + ["dead"]
    lease = qm.dequeue("q")
    assert lease is not None and lease.message == {"fine": True}  # the rest keeps flowing
    dead = qm.dead_letters("q")
    assert list(dead.columns) == [
        "id",
        "queue",
        "message_type",
        "message",
        "attempts",
        "error",
        "enqueued_at",
        "died_at",
    ]
    assert dead["id"].tolist() == [mid]
    assert dead["attempts"].tolist() == [5]
    assert "RuntimeError: handler blew up" in dead["error"][0]
    assert dead["message"][0] == {"poison": True}


def test_leases_that_keep_expiring_end_in_the_dead_letters(qm: QueueManager, clock: ev.ManualClock) -> None:
    mid = qm.enqueue("q", "crashes its consumer")
    for attempt in range(1, 6):
        lease = qm.dequeue("q", visibility_timeout=1)
        assert lease is not None and lease.attempts == attempt
        clock.advance(seconds=1)
    assert qm.dequeue("q") is None
    dead = qm.dead_letters()
    assert dead["id"].tolist() == [mid]
    assert dead["error"][0].startswith("lease expired after 5 deliveries")


def test_requeue_and_purge_dead_letters(qm: QueueManager, clock: ev.ManualClock) -> None:
    policy_dead = []
    for text in ("a", "b"):
        qm.enqueue("q", text)
    for _ in range(5):
        for lease in qm.dequeue_many("q", 10):
            policy_dead.append(qm.nack(lease, "no"))
        clock.advance(seconds=120)
    assert qm.stats()["dead"].tolist() == [2]
    first, _ = qm.dead_letters("q")["id"].tolist()
    qm.requeue(first)
    again = qm.dequeue("q")
    assert again is not None and again.id == first and again.attempts == 1
    with pytest.raises(MessageNotFoundError):
        qm.requeue(first)  # no longer dead
    with pytest.raises(MessageNotFoundError):
        qm.requeue(123456)
    assert qm.purge_dead_letters("q") == 1
    assert qm.dead_letters("q").empty


def test_requeue_all_dead_letters(qm: QueueManager, clock: ev.ManualClock) -> None:
    qm.enqueue_many("q", [1, 2, 3])
    for _ in range(5):
        for lease in qm.dequeue_many("q", 10):
            qm.nack(lease)
        clock.advance(seconds=120)
    assert qm.requeue_dead_letters("q") == 3
    assert sorted(lease.message for lease in qm.dequeue_many("q", 10)) == [1, 2, 3]


def test_a_dead_letter_hook_enqueues_in_the_same_transaction(qm: QueueManager, clock: ev.ManualClock) -> None:
    seen: list[tuple[Any, str]] = []

    def hook(lease: Lease, reason: str) -> list[tuple[str, Any]]:
        seen.append((lease.message, reason))
        return [("alerts", {"dead": lease.id, "why": reason})]

    qm.on_dead_letter("q", hook)
    mid = qm.enqueue("q", "doomed")
    for _ in range(5):
        lease = qm.dequeue("q")
        assert lease is not None
        qm.nack(lease, "nope")
        clock.advance(seconds=120)
    alert = qm.dequeue("alerts")
    assert alert is not None and alert.message["dead"] == mid
    assert seen == [("doomed", alert.message["why"])]


# -- batches, cancel, stats ------------------------------------------------------------------------------------


def test_batches(qm: QueueManager) -> None:
    ids = qm.enqueue_many("q", range(250))
    assert ids == sorted(ids) and len(set(ids)) == 250
    leases = qm.dequeue_many("q", 100)
    assert [lease.message for lease in leases] == list(range(100))
    assert qm.ack_many(leases) == 100
    rest = qm.dequeue_many("q", 1000)
    assert [lease.message for lease in rest] == list(range(100, 250))
    assert qm.ack_many(rest + leases) == 150
    assert qm.ack_many([]) == 0


def test_cancel_by_id_and_by_dedupe_key(qm: QueueManager) -> None:
    a = qm.enqueue("q", "a")
    qm.enqueue("q", "b", dedupe_key="bee")
    qm.enqueue("q", "c")
    assert qm.cancel("q", ids=[a], dedupe_keys=["bee", "nothing"]) == 2
    assert [lease.message for lease in qm.dequeue_many("q", 10)] == ["c"]


def test_stats_count_depth_delay_flight_and_dead(qm: QueueManager, clock: ev.ManualClock) -> None:
    qm.enqueue_many("q", ["ready", "leased", "dead"])
    qm.enqueue("q", "later", delay=100)
    qm.enqueue("other", 1)
    leases = qm.dequeue_many("q", 2)
    for _ in range(5):
        lease = qm.dequeue("q")
        if lease is None:
            clock.advance(seconds=60)
            continue
        qm.nack(lease)
    clock.advance(seconds=10)
    stats = qm.stats().set_index("queue")
    assert list(stats.columns) == ["depth", "delayed", "in_flight", "dead", "oldest_age_seconds"]
    del leases
    row = stats.loc["q"]
    assert row["dead"] + row["depth"] + row["in_flight"] == 4
    assert row["delayed"] >= 0 and row["oldest_age_seconds"] > 0
    assert stats.loc["other"]["depth"] == 1


def test_stats_exact_values(qm: QueueManager, clock: ev.ManualClock) -> None:
    qm.enqueue_many("q", [1, 2, 3])
    clock.advance(seconds=4)
    qm.enqueue("q", 4, delay=10)
    leased = qm.dequeue("q", visibility_timeout=100)
    assert leased is not None
    row = qm.stats().iloc[0]
    assert (row["queue"], row["depth"], row["delayed"], row["in_flight"], row["dead"]) == ("q", 3, 1, 1, 0)
    assert row["oldest_age_seconds"] == 4.0


def test_messages_lists_what_is_waiting(qm: QueueManager) -> None:
    qm.enqueue("q", "a")
    qm.enqueue("q", "b", delay=10, dedupe_key="bee")
    qm.dequeue("q")
    frame = qm.messages("q")
    assert frame["message"].tolist() == ["a", "b"]
    assert frame["state"].tolist() == ["in_flight", "delayed"]
    assert frame["dedupe_key"].tolist() == [None, "bee"]


# -- messages whose class is gone, threads, managers, async ---------------------------------------------------


def test_a_message_whose_class_cannot_be_found_decodes_as_unknown(store: ev.EventStore) -> None:
    message_type, body = encode_message(SendEmail(to="a", subject="b"))
    assert message_type == f"class:{__name__}:SendEmail"
    gone = decode_message(message_type.replace("SendEmail", "Vanished"), body, store.registry)
    assert isinstance(gone, UnknownMessage) and gone.data["to"] == "a"


def test_commands_queued_before_a_restart_decode_by_their_class_label(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "s") as store, QueueManager(store) as qm:
        qm.enqueue("mail", SendEmail(to="a", subject="b"))
    # A new process: nothing cached, the class is found by the label the queue stored.
    with ev.open_store(tmp_path / "s") as store, QueueManager(store) as qm:
        lease = qm.dequeue("mail")
        assert lease is not None and lease.message == SendEmail(to="a", subject="b")
        assert lease.message_type == f"{__name__}:SendEmail"


def test_local_classes_decode_in_the_process_that_enqueued_them(qm: QueueManager) -> None:
    class Local(ev.Command):
        n: int

    qm.enqueue("q", Local(n=3))
    lease = qm.dequeue("q")
    assert lease is not None and lease.message == Local(n=3)


def test_concurrent_enqueues_from_threads_share_commits(qm: QueueManager) -> None:
    ids: list[int] = []
    lock = threading.Lock()

    def producer(k: int) -> None:
        for i in range(50):
            mid = qm.enqueue("q", {"producer": k, "i": i})
            with lock:
                ids.append(mid)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 400
    got = qm.dequeue_many("q", 1000)
    assert len(got) == 400
    for k in range(8):
        assert [lease.message["i"] for lease in got if lease.message["producer"] == k] == list(range(50))


def test_two_managers_never_hand_out_one_message_twice(store: ev.EventStore) -> None:
    a, b = QueueManager(store), QueueManager(store)
    try:
        a.enqueue_many("q", range(600))
        got: dict[str, list[int]] = {"a": [], "b": []}

        def consume(name: str, qm: QueueManager) -> None:
            while leases := qm.dequeue_many("q", 7):
                got[name].extend(lease.message for lease in leases)
                qm.ack_many(leases)

        threads = [threading.Thread(target=consume, args=item) for item in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(got["a"] + got["b"]) == list(range(600))
    finally:
        a.close()
        b.close()


def test_async_methods(qm: QueueManager) -> None:
    async def main() -> list[Any]:
        await qm.enqueue_many_async("q", ["x", "y"])
        leases = await qm.dequeue_many_async("q", 5)
        assert await qm.nack_async(leases[1], "later", delay=0) == "retry"
        assert await qm.ack_many_async(leases[:1]) == 1
        woke = asyncio.create_task(qm.wait_for_messages(["z"], timeout=5))
        await asyncio.sleep(0)
        await qm.enqueue_many_async("z", [1])
        assert await woke is True
        assert await qm.next_ready_in_async(["q"]) == 0
        assert await qm.next_ready_in_async(["empty"]) is None
        return [lease.message for lease in await qm.dequeue_many_async("q", 5)]

    assert asyncio.run(main()) == ["y"]


def test_closed_manager_refuses_work(store: ev.EventStore) -> None:
    qm = QueueManager(store)
    qm.close()
    qm.close()
    assert qm.closed
    with pytest.raises(QueueClosedError):
        qm.enqueue("q", 1)


def test_read_only_store_has_no_queues(tmp_path: Path) -> None:
    ev.open_store(tmp_path / "s").close()
    with ev.open_store(tmp_path / "s", read_only=True) as ro, pytest.raises(ev.QueueError, match="read-only"):
        QueueManager(ro)


def test_messages_survive_closing_and_reopening_the_store(tmp_path: Path) -> None:
    clock = ev.ManualClock()
    with ev.open_store(tmp_path / "s", clock=clock) as store, QueueManager(store) as qm:
        kept = qm.enqueue("q", SendEmail(to="a", subject="kept"), dedupe_key="k")
        gone = qm.enqueue("q", "acked")
        qm.enqueue("q", "later", delay=60)
        lease = qm.dequeue_many("q", 2)[1]
        assert lease.id == gone
        qm.ack(lease)
    with ev.open_store(tmp_path / "s", clock=clock) as store, QueueManager(store) as qm:
        assert qm.enqueue("q", "dup", dedupe_key="k") == kept
        assert qm.dequeue("q") is None  # still leased
        clock.advance(seconds=30)
        lease2 = qm.dequeue("q")
        assert lease2 is not None and lease2.id == kept and lease2.message.subject == "kept"
        assert lease2.attempts == 2  # its first lease was held when the store closed
        assert qm.enqueue("q", "new") > kept


def test_html_and_repr(qm: QueueManager) -> None:
    qm.enqueue("q", 1)
    assert "QueueManager(memory" in repr(qm)
    assert "<table>" in qm._repr_html_()
    lease = qm.dequeue("q")
    assert lease is not None and "attempts=1" in repr(lease)
