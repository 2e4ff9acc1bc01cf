"""A Hypothesis state machine: the on-disk store against a plain model, through appends, flushes and reopens.

The model is a dict of stream -> events and the global log in commit order.
Every rule that reads compares the store with it; invariants check the heads.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import eventador as ev
from tests.support.domain import AccountKind, Deposited, Opened, Withdrawn

STREAMS = st.sampled_from(["acc-1", "acc-2", "acc-3", "ledger"])
amounts = st.decimals(min_value=Decimal("-1000"), max_value=Decimal("1000"), places=2)
events = st.one_of(
    st.builds(Deposited, account_id=st.just("a"), amount=amounts, rate=st.floats(-1, 1), note=st.none() | st.text()),
    st.builds(
        Withdrawn,
        account_id=st.just("a"),
        amount=amounts,
        at=st.datetimes(timezones=st.just(UTC), min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
        reasons=st.lists(st.text(max_size=4), max_size=2),
    ),
    st.builds(
        Opened,
        account_id=st.just("a"),
        owner=st.text(max_size=8),
        kind=st.sampled_from(AccountKind),
        opened_at=st.just(datetime(2026, 1, 1, tzinfo=UTC)),
        tags=st.lists(st.text(max_size=4), max_size=2),
    ),
)
# How an append states its expectation: the right version, a wrong one, or a marker.
EXPECTATIONS = st.sampled_from(["right", "stale", "ahead", "any", "no_stream", "stream_exists"])


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="eventador-stateful-"))
        self.store: ev.EventStore | None = None
        self.streams: dict[str, list[ev.Event]] = {}
        self.log: list[tuple[str, int, ev.Event]] = []  # (stream, version, event) in commit order

    @initialize(durability=st.sampled_from(["fsync", "none"]), flush_every=st.sampled_from([3, 7, 100_000]))
    def open(self, durability: Any, flush_every: int) -> None:
        self.options = {"durability": durability, "flush_every": flush_every}
        self.store = ev.open_store(self.directory / "store", **self.options)

    @property
    def s(self) -> ev.EventStore:
        assert self.store is not None
        return self.store

    def teardown(self) -> None:
        try:
            if self.store is not None:
                self.store.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- writes ---------------------------------------------------------------------------

    @rule(stream=STREAMS, batch=st.lists(events, min_size=1, max_size=4), how=EXPECTATIONS)
    def append(self, stream: str, batch: list[ev.Event], how: str) -> None:
        current = len(self.streams.get(stream, []))
        expected: int | ev.ExpectedVersion = {
            "right": current,
            "stale": max(current - 1, 0) if current else 1,
            "ahead": current + 1,
            "any": ev.ANY,
            "no_stream": ev.NO_STREAM,
            "stream_exists": ev.STREAM_EXISTS,
        }[how]
        ok = {
            "right": True,
            "stale": False,
            "ahead": False,
            "any": True,
            "no_stream": current == 0,
            "stream_exists": current > 0,
        }[how]
        if not ok:
            try:
                self.s.append(stream, batch, expected_version=expected)
            except ev.ConcurrencyError as exc:
                assert (exc.stream_id, exc.expected, exc.actual) == (stream, expected, current)
            else:
                raise AssertionError(f"append with expected_version={expected!r} at version {current} succeeded")
            return
        version = self.s.append(stream, batch, expected_version=expected)
        assert version == current + len(batch)
        for i, event in enumerate(batch, start=1):
            self.log.append((stream, current + i, event))
        self.streams.setdefault(stream, []).extend(batch)
        assert self.s.last_position == len(self.log)

    @rule(stream=STREAMS, good=st.lists(events, max_size=2))
    def append_a_bad_batch(self, stream: str, good: list[ev.Event]) -> None:
        naive = Withdrawn(account_id="a", amount=Decimal(1), at=datetime(2026, 1, 1))
        try:
            self.s.append(stream, [*good, naive])
        except ev.SerializationError as exc:
            assert exc.path == "Withdrawn.at"
        else:
            raise AssertionError("a naive datetime was stored")

    @rule()
    def flush(self) -> None:
        self.s.flush()

    @rule()
    def reopen(self) -> None:
        self.s.close()
        self.store = ev.open_store(self.directory / "store", **self.options)

    @precondition(lambda self: len(self.log) > 0)
    @rule(data=st.data())
    def read_only_opener_agrees(self, data: st.DataObject) -> None:
        with ev.open_store(self.directory / "store", read_only=True) as reader:
            assert [(r.stream_id, r.version, r.event) for r in reader.read_all()] == self.log

    # -- reads --------------------------------------------------------------------------------

    @rule(stream=STREAMS, lo=st.integers(1, 12), span=st.none() | st.integers(0, 12))
    def read_stream(self, stream: str, lo: int, span: int | None) -> None:
        hi = None if span is None else lo + span
        expected = self.streams.get(stream, [])[lo - 1 : hi]
        records = self.s.read_stream(stream, from_version=lo, to_version=hi)
        assert [r.event for r in records] == expected
        assert [r.version for r in records] == list(range(lo, lo + len(expected)))

    @rule(
        lo=st.integers(1, 40),
        span=st.none() | st.integers(0, 40),
        types=st.none() | st.lists(st.sampled_from([Deposited, Withdrawn, Opened.event_type]), max_size=2),
    )
    def read_all(self, lo: int, span: int | None, types: list[Any] | None) -> None:
        hi = None if span is None else lo + span
        names = None if types is None else {t if isinstance(t, str) else t.event_type for t in types}
        expected = [
            (p, s, v, e)
            for p, (s, v, e) in enumerate(self.log, start=1)
            if p >= lo and (hi is None or p <= hi) and (names is None or e.event_type in names)
        ]
        records = self.s.read_all(from_position=lo, to_position=hi, event_types=types)
        assert [(r.position, r.stream_id, r.version, r.event) for r in records] == expected

    @precondition(lambda self: len(self.log) > 0)
    @rule(data=st.data())
    def as_of_a_position(self, data: st.DataObject) -> None:
        at = data.draw(st.integers(0, len(self.log)))
        past = self.s.as_of(at)
        assert [(r.stream_id, r.version, r.event) for r in past.read_all()] == self.log[:at]
        stream = data.draw(STREAMS)
        assert past.stream_version(stream) == sum(1 for s, _, _ in self.log[:at] if s == stream)

    @rule()
    def sql_agrees(self) -> None:
        rows = self.s.sql("SELECT stream_id, count(*), max(version) FROM events GROUP BY 1 ORDER BY 1").fetchall()
        assert rows == [(s, len(e), len(e)) for s, e in sorted(self.streams.items()) if e]
        deposited = self.s.sql('SELECT coalesce(sum(amount), 0) FROM "test.Deposited"').fetchall()[0][0]
        assert deposited == sum((e.amount for _, _, e in self.log if isinstance(e, Deposited)), Decimal(0))

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def heads_match_the_model(self) -> None:
        if self.store is None:
            return
        assert self.s.last_position == len(self.log)
        for stream in ["acc-1", "acc-2", "acc-3", "ledger"]:
            assert self.s.stream_version(stream) == len(self.streams.get(stream, []))


StoreMachine.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestStoreMachine = StoreMachine.TestCase
