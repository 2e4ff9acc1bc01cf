"""The durable queue against a plain Python model, driven by Hypothesis.

Random sequences of enqueue (with delays and dedupe keys), dequeue (with visibility
timeouts), ack, nack, cancel, requeue, purge and clock moves; after every step the
real queue's answers and its stats must equal the model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import eventador as ev
from eventador import Lease, MessageNotFoundError, QueueManager, RetryPolicy

US = 1_000_000
START = datetime(2026, 1, 1, tzinfo=UTC)  # the model's time 0
POLICY = RetryPolicy(max_attempts=2, initial_delay=0.5, max_delay=2.0, jitter=False)
QUEUES = st.sampled_from(["a", "a", "b"])
KEYS = st.sampled_from([None] * 6 + ["k1", "k2", "k3"])


@dataclass
class Row:
    id: int
    queue: str
    payload: int
    key: str | None
    enqueued: int
    visible: int
    attempts: int = 0
    leased: bool = False
    dead: bool = False


class QueueModel(RuleBasedStateMachine):
    """The queue as a dict of rows, and the rules it must follow."""

    @initialize()
    def open(self) -> None:
        self.clock = ev.ManualClock(START)
        self.store = ev.open_store(clock=self.clock)
        self.qm = QueueManager(self.store, retry_policy=POLICY)
        self.now = 0
        self.rows: dict[int, Row] = {}
        self.keys: dict[tuple[str, str], int] = {}
        self.leases: list[Lease] = []
        self.counter = 0

    def teardown(self) -> None:
        if hasattr(self, "qm"):
            self.qm.close()
            self.store.close()

    # -- rules -----------------------------------------------------------------------------------------

    @rule(queue=QUEUES, delay=st.sampled_from([0.0, 0.0, 0.5, 2.0]), key=KEYS)
    def enqueue(self, queue: str, delay: float, key: str | None) -> None:
        self.counter += 1
        mid = self.qm.enqueue(queue, self.counter, delay=delay, dedupe_key=key)
        if key is not None and (queue, key) in self.keys:
            assert mid == self.keys[(queue, key)]
            return
        assert mid not in self.rows
        self.rows[mid] = Row(mid, queue, self.counter, key, self.now, self.now + round(delay * US))
        if key is not None:
            self.keys[(queue, key)] = mid

    @rule(queue=QUEUES, n=st.integers(1, 3), visibility=st.sampled_from([1.0, 5.0]))
    def dequeue(self, queue: str, n: int, visibility: float) -> None:
        leases = self.qm.dequeue_many(queue, n, visibility_timeout=visibility)
        ready = sorted(
            (r for r in self.rows.values() if r.queue == queue and not r.dead and r.visible <= self.now),
            key=lambda r: (r.enqueued, r.id),
        )
        expected: list[Row] = []
        for row in ready:
            if len(expected) == n:
                break
            if row.attempts + 1 > POLICY.max_attempts:  # its leases kept expiring
                row.dead, row.leased = True, False
                continue
            row.attempts += 1
            row.leased = True
            row.visible = self.now + round(visibility * US)
            expected.append(row)
        assert [(lease.id, lease.attempts, lease.message) for lease in leases] == [
            (r.id, r.attempts, r.payload) for r in expected
        ]
        self.leases.extend(leases)

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from(self.leases[-4:]))
        row = self.rows.get(lease.id)
        expected = row is not None and self.current(row, lease)
        assert self.qm.ack(lease) is expected
        if expected:
            del self.rows[lease.id]

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def nack(self, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from(self.leases[-3:]))  # mostly leases still current
        outcome = self.qm.nack(lease, "failed")
        row = self.rows.get(lease.id)
        if row is None or not self.current(row, lease):
            assert outcome == "stale"
            return
        row.leased = False
        if row.attempts >= POLICY.max_attempts:
            row.dead = True
            assert outcome == "dead"
        else:
            row.visible = self.now + round(POLICY.delay(row.attempts) * US)
            assert outcome == "retry"

    @staticmethod
    def current(row: Row, lease: Lease) -> bool:
        """The lease is for the row's latest delivery (not stale): only then may it ack or nack."""
        expiry = (lease.expires_at - START) // timedelta(microseconds=1)
        return not row.dead and row.leased and (row.attempts, row.visible) == (lease.attempts, expiry)

    @rule(queue=QUEUES, key=KEYS.filter(lambda k: k is not None))
    def cancel(self, queue: str, key: str) -> None:
        gone = [r.id for r in self.rows.values() if r.queue == queue and r.key == key and not r.dead]
        assert self.qm.cancel(queue, dedupe_keys=[key]) == len(gone)
        for mid in gone:
            del self.rows[mid]

    @rule(seconds=st.sampled_from([0.25, 1.0, 3.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds=seconds)
        self.now += round(seconds * US)

    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        dead = sorted(r.id for r in self.rows.values() if r.dead)
        pick_dead: bool = data.draw(st.booleans())
        mid = data.draw(st.sampled_from(dead)) if dead and pick_dead else 10**9
        if mid not in self.rows:
            try:
                self.qm.requeue(mid)
            except MessageNotFoundError:
                return
            raise AssertionError("requeue of a message that is not dead succeeded")
        self.qm.requeue(mid)
        row = self.rows[mid]
        row.dead, row.attempts, row.leased, row.visible = False, 0, False, self.now

    @rule(queue=QUEUES)
    def purge(self, queue: str) -> None:
        dead = [r.id for r in self.rows.values() if r.queue == queue and r.dead]
        assert self.qm.purge_dead_letters(queue) == len(dead)
        for mid in dead:
            del self.rows[mid]

    # -- invariants -------------------------------------------------------------------------------------

    @invariant()
    def stats_match(self) -> None:
        if not hasattr(self, "qm"):
            return
        expected: dict[str, list[Any]] = {}
        for r in self.rows.values():
            counts = expected.setdefault(r.queue, [0, 0, 0, 0])
            in_flight = r.leased and r.visible > self.now
            if r.dead:
                counts[3] += 1
            elif in_flight:
                counts[2] += 1
            else:
                counts[0] += 1
                if r.visible > self.now:
                    counts[1] += 1
        stats = self.qm.stats()
        actual = {row.queue: [row.depth, row.delayed, row.in_flight, row.dead] for row in stats.itertuples(index=False)}
        assert actual == expected

    @rule()
    def dead_letters_match(self) -> None:
        dead = self.qm.dead_letters()
        assert sorted(dead["id"].tolist()) == sorted(r.id for r in self.rows.values() if r.dead)


QueueModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_queue_matches_its_model = QueueModel.TestCase
