"""Issue 6's proof for time travel, by Hypothesis.

1. Fleet time travel agrees with single-aggregate time travel: for random commands run
   through Repositories (several aggregate types, snapshot policies that snapshot
   every 2 or 3 events, multi-event commands, rejected commands, a wall clock that jumps
   back) and random points p (positions and aware datetimes, event boundaries
   included), ``repo.states(as_of=p)`` has exactly one row per aggregate of the type
   that had an event at or before p, and each row equals ``repo.get(id, as_of=p)``
   field by field, which in turn equals the ``history`` row of the last event at or
   before p.
2. ``repo.history(id)`` equals a fold of ``store.read_stream(id)`` with the
   aggregate's ``apply_event`` from its initial state, stamped the documented way
   (version = the stream version; last_modified = the event's occurred_at unless
   ``apply_event`` set it).

Every store kind: in memory, on disk, and on disk with a tiny ``flush_every`` (events
span Parquet files and the hot tier); the on-disk stores are checked again after a
reopen. Half of the examples lower the stream length from which snapshots are looked
up (32 by default), so short streams also start from snapshots.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import accumulate, cycle, islice
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import eventador as ev
from eventador import AggregateRoot, Repository, SnapshotConfig
from eventador.aggregates import recovery
from eventador.testing import ScriptedClock
from tests.support.aggregate_domain import (
    BankAccountAggregate,
    CounterIncrementedEvent,
    DepositMoneyCommand,
    Freeze,
    Ledger,
    OpenAccountCommand,
    Post,
    WithdrawMoneyCommand,
)

# -- the domain: the shared test aggregates with snapshot policies that snapshot often ----------


class OftenLedger(Ledger):
    """The ledger (Decimal, enum, tuple, frozenset and nested state) with a snapshot every 2 events."""

    snapshot_config = SnapshotConfig(event_count_threshold=2, max_snapshots_to_keep=3)


class OftenBank(BankAccountAggregate):
    """The seed's bank account (float balance, refused withdrawals) with a snapshot every 3 events, 1 kept."""

    snapshot_config = SnapshotConfig(event_count_threshold=3, max_snapshots_to_keep=1)


class Burst(ev.Command):
    sizes: tuple[int, ...]


class Ticked(ev.Event, event_type="ttprop.Ticked"):
    size: int


class TallyState(ev.State):
    total: int = 0
    count: int = 0
    last_sizes: tuple[int, ...] = ()


class Tally(AggregateRoot[TallyState]):
    """One command, 0 to 3 events in one append: snapshots land on versions a command skips over."""

    snapshot_config = SnapshotConfig(event_count_threshold=2, max_snapshots_to_keep=2)

    @property
    def initial_state(self) -> TallyState:
        return TallyState()

    def handle_command(self, state: TallyState, command: ev.Command) -> list[ev.Event]:
        if isinstance(command, Burst):
            if any(size < 0 for size in command.sizes):
                raise ev.CommandRejected("sizes must not be negative")
            return [Ticked(size=size) for size in command.sizes]
        return []

    def apply_event(self, state: TallyState, event: ev.Event) -> TallyState:
        if isinstance(event, Ticked):
            return state.copy_with(
                total=state.total + event.size, count=state.count + 1, last_sizes=(*state.last_sizes[-2:], event.size)
            )
        return state


AGGREGATES: dict[str, type[AggregateRoot[Any]]] = {
    "often_ledger": OftenLedger,
    "bank": OftenBank,
    "tally": Tally,
}
KINDS = [*AGGREGATES, "noise"]
T0 = datetime(2026, 2, 1, 8, tzinfo=UTC)
US = timedelta(microseconds=1)


def command_for(kind: str, amount: int) -> ev.Command:
    if kind == "often_ledger":
        if amount == -3:
            return Freeze(reason="audit")  # every later command on it is rejected
        return Post(amount=Decimal(amount) / 4, memo=f"m{amount}")  # below zero: rejected
    if kind == "bank":
        if amount in (0, 1, 2):
            return OpenAccountCommand(account_id="x", initial_balance=10.0 * amount)  # again: no event
        if amount > 0:
            return DepositMoneyCommand(account_id="x", amount=amount * 1.1)  # not open: no event
        return WithdrawMoneyCommand(account_id="x", amount=-amount * 2.3)  # may be refused
    assert kind == "tally"
    if amount <= 0:
        return Burst(sizes=(amount,) * -amount)  # below zero: rejected; zero: no event
    return Burst(sizes=tuple(amount + i for i in range(1 + amount % 3)))


# -- scenarios -------------------------------------------------------------------------------------

# (kind, which of 3 aggregates of that kind, amount, how many times in a row, round robin
# over the 3 aggregates from `which` on or all on one)
op_strategy = st.tuples(
    st.sampled_from(KINDS), st.integers(0, 2), st.integers(-3, 9), st.sampled_from([1, 2, 3, 5, 8, 13]), st.booleans()
)
ops_strategy = st.lists(op_strategy, min_size=2, max_size=8)
Op = tuple[str, int, int, int, bool]
# Wall-clock steps between readings, cycled; negative ones are NTP-like jumps back.
clock_steps = st.lists(st.integers(-90_000, 600_000), min_size=1, max_size=5)  # milliseconds
# Store kinds, each with its number of Hypothesis examples (stores on disk are slower).
EXAMPLES = [("memory", 12), ("disk", 5), ("disk-tiny-flush", 8)]
HISTORY_EXAMPLES = [("memory", 12), ("disk", 4), ("disk-tiny-flush", 8)]
SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large]


def readings_for(ops: list[Op]) -> int:
    """Enough clock readings for the commands (the clock keeps its last time after them)."""
    return 4 * 3 * sum(times for _, _, _, times, _ in ops) + 20


def scripted_clock(steps_ms: list[int], readings: int) -> ScriptedClock:
    deltas = islice(cycle(steps_ms), readings)
    return ScriptedClock(T0, *(T0 + timedelta(milliseconds=ms) for ms in accumulate(deltas)))


@contextmanager
def opened(kind: str, directory: Path, clock: Any, *, read_only: bool = False) -> Iterator[ev.EventStore]:
    if kind == "memory":
        store = ev.open_store(None, clock=clock)
    else:
        flush_every = 3 if kind == "disk-tiny-flush" else 100_000
        store = ev.open_store(directory, durability="none", clock=clock, flush_every=flush_every, read_only=read_only)
    try:
        yield store
    finally:
        store.close()


def run_ops(store: ev.EventStore, ops: list[Op]) -> None:
    repos = {kind: Repository(store, cls) for kind, cls in AGGREGATES.items()}
    noise = 0
    for kind, first, amount, times, spread in ops:
        for i in range(times):
            which = (first + i) % 3 if spread else first
            if kind == "noise":  # streams of no aggregate type, with and without a stream type
                noise += 1
                event = CounterIncrementedEvent(aggregate_id="n", value=noise)
                store.append(f"noise-{which}", event, stream_type="CounterActor" if amount % 2 else None)
                continue
            with suppress(ev.CommandRejected):
                repos[kind].execute(f"{kind}-{which}", command_for(kind, amount))


@contextmanager
def snapshot_lookup_from(min_version: int) -> Iterator[None]:
    """Look for snapshots from this stream length on (the library says 32)."""
    with mock.patch.object(recovery, "SNAPSHOT_LOOKUP_MIN", min_version):
        yield


# -- comparing values across pandas --------------------------------------------------------------


def plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def assert_same(got: Any, expected: Any, where: str) -> None:
    got = plain(got)
    assert type(got) is type(expected) and got == expected, f"{where}: {got!r} != {expected!r}"


def state_fields(cls: type[AggregateRoot[Any]], store: ev.EventStore) -> list[str]:
    probe = cls(persistence_id="_probe", event_store=store)
    return [f.name for f in dataclasses.fields(probe.initial_state)]


# -- property 1: states(as_of=p) == get(id, as_of=p) for every aggregate ------------------------


def kind_of(record: ev.RecordedEvent) -> str:
    """Which Repository wrote the stream: run_ops names them "<kind>-<n>"."""
    return record.stream_id.rsplit("-", 1)[0]


def position_at(records: list[ev.RecordedEvent], point: int | datetime) -> int:
    """The position a point stands for, from the raw log: events at or below it / recorded at or before it."""
    if isinstance(point, int):
        return min(point, records[-1].position if records else 0)
    return max((r.position for r in records if r.recorded_at <= point), default=0)


def check_point(
    store: ev.EventStore, records: list[ev.RecordedEvent], point: int | datetime, histories: dict[str, pd.DataFrame]
) -> None:
    upto = position_at(records, point)
    for kind, cls in AGGREGATES.items():
        repo = Repository(store, cls)
        frame = repo.states(as_of=point)
        names = state_fields(cls, store)
        seen = [r for r in records if r.position <= upto and kind_of(r) == kind]
        expected_ids = sorted({r.stream_id for r in seen})
        assert list(frame.index) == expected_ids, f"{kind} as of {point!r} (position {upto})"
        assert list(frame.columns) == names
        for aggregate_id in expected_ids:
            state = repo.get(aggregate_id, as_of=point)
            # get() itself, against the raw log and the history
            mine = [r for r in seen if r.stream_id == aggregate_id]
            assert state.version == len(mine) == mine[-1].version
            if aggregate_id not in histories:
                histories[aggregate_id] = repo.history(aggregate_id)
            history = histories[aggregate_id]
            row = history[history["position"] == mine[-1].position]
            assert len(row) == 1
            for name in names:
                expected = getattr(state, name)
                where = f"{kind} {aggregate_id} as of {point!r} (position {upto}), field {name}"
                assert_same(frame.loc[aggregate_id, name], expected, f"states(): {where}")
                assert_same(row.iloc[0][name], expected, f"history: {where}")
        # an aggregate with no event yet at p is its initial state
        for aggregate_id in sorted({r.stream_id for r in records if kind_of(r) == kind} - set(expected_ids)):
            initial = cls(persistence_id=aggregate_id, event_store=store).initial_state
            assert repo.get(aggregate_id, as_of=point) == initial


Picks = tuple[int, int, timedelta]
# Where to look: a position and an event (each taken modulo what there is), and an offset
# from that event's recorded time.
picks_strategy = st.tuples(
    st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from([-US, timedelta(0), US, timedelta(seconds=-40)])
)


def points_for(records: list[ev.RecordedEvent], picks: Picks) -> list[int | datetime]:
    """Before the first event (a datetime), a position, a time at or next to an event's, the end."""
    position, event, offset = picks
    last = records[-1].position if records else 0
    points: list[int | datetime] = [(records[0].recorded_at if records else T0) - US, position % (last + 3)]
    if records:
        points.append(records[event % len(records)].recorded_at + offset)
    points.append(last)
    return points


# A scenario Hypothesis may take a while to reach: every aggregate of a type present, streams
# past the default snapshot lookup length (32), a clock that jumps back by more than it moves on.
RICH: list[Op] = [
    ("often_ledger", 0, 5, 13, True),
    ("bank", 0, 0, 3, True),
    ("bank", 0, 4, 13, True),
    ("tally", 0, 5, 13, True),
    ("noise", 0, 1, 3, True),
    ("often_ledger", 1, 7, 13, False),
    ("often_ledger", 1, -1, 13, False),
    ("bank", 2, -2, 8, False),
    ("often_ledger", 1, 3, 13, False),
    ("tally", 2, 7, 13, False),
    ("often_ledger", 2, -3, 2, False),
]


@pytest.mark.parametrize(("store_kind", "examples"), EXAMPLES)
def test_states_as_of_equals_get_as_of_for_every_aggregate(tmp_path: Path, store_kind: str, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, suppress_health_check=SUPPRESSED)
    @given(ops=ops_strategy, steps=clock_steps, lookup_min=st.sampled_from([32, 1]), picks=picks_strategy)
    @example(ops=RICH, steps=[1_500, -2_000, 700], lookup_min=32, picks=(57, 101, timedelta(0)))
    def states_equal_get(ops: list[Op], steps: list[int], lookup_min: int, picks: Picks) -> None:
        directory = tmp_path / uuid.uuid4().hex
        clock = scripted_clock(steps, readings=readings_for(ops))
        with snapshot_lookup_from(lookup_min):
            with opened(store_kind, directory, clock) as store:
                run_ops(store, ops)
                records = list(store.read_all())
                points = points_for(records, picks)
                histories: dict[str, pd.DataFrame] = {}
                for point in points:
                    check_point(store, records, point, histories)
            if store_kind != "memory":  # again from the files (and the catalog's snapshots) alone
                with opened(store_kind, directory, clock, read_only=True) as store:
                    assert list(store.read_all()) == records
                    check_point(store, records, points[-2], histories)

    states_equal_get()


def test_states_before_the_first_event_is_an_empty_frame_with_the_state_columns(tmp_path: Path) -> None:
    clock = ScriptedClock(T0)
    with ev.open_store(tmp_path / "store", durability="none", clock=clock, flush_every=2) as store:
        repo = Repository(store, OftenLedger)
        assert repo.states(as_of=0).empty and repo.states(as_of=T0).empty  # an empty store
        for _ in range(5):
            repo.execute("l-1", Post(amount=Decimal(1)))
        for point in (0, T0 - US, datetime(2000, 1, 1, tzinfo=UTC)):
            frame = repo.states(as_of=point)
            assert frame.empty and list(frame.columns) == state_fields(OftenLedger, store)
        assert repo.states(as_of=T0)["posts"].tolist() == [5]  # every event recorded at T0


# -- property 2: history == a fold of read_stream ------------------------------------------------


def folded(
    cls: type[AggregateRoot[Any]], store: ev.EventStore, aggregate_id: str, records: list[ev.RecordedEvent]
) -> list[Any]:
    """The state after each event, by hand: apply_event, then the framework's version and last_modified."""
    aggregate = cls(persistence_id=aggregate_id, event_store=store)
    state = aggregate.initial_state
    states = []
    for record in records:
        after = aggregate.apply_event(state, record.event)
        modified = after.last_modified if after.last_modified != state.last_modified else record.occurred_at
        state = after.copy_with(version=record.version, last_modified=modified)
        states.append(state)
    return states


@pytest.mark.parametrize(("store_kind", "examples"), HISTORY_EXAMPLES)
def test_history_equals_folding_read_stream(tmp_path: Path, store_kind: str, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, suppress_health_check=SUPPRESSED)
    @given(ops=ops_strategy, steps=clock_steps)
    def history_is_a_fold(ops: list[Op], steps: list[int]) -> None:
        with opened(store_kind, tmp_path / uuid.uuid4().hex, scripted_clock(steps, readings_for(ops))) as store:
            run_ops(store, ops)
            check_histories(store)

    history_is_a_fold()


def check_histories(store: ev.EventStore) -> None:
    everything = list(store.read_all())
    for kind, cls in AGGREGATES.items():
        repo = Repository(store, cls)
        names = [n for n in state_fields(cls, store) if n != "version"]
        ids = sorted({r.stream_id for r in everything if kind_of(r) == kind})
        for aggregate_id in [*ids, f"{kind}-never"]:
            records = store.read_stream(aggregate_id)
            assert [r.position for r in records] == [r.position for r in everything if r.stream_id == aggregate_id]
            history = repo.history(aggregate_id)
            expected = folded(cls, store, aggregate_id, records)
            assert len(history) == len(records) == store.stream_version(aggregate_id)
            for (_, row), record, state in zip(history.iterrows(), records, expected, strict=True):
                where = f"{aggregate_id} v{record.version}"
                assert_same(row["position"], record.position, where)
                assert_same(row["version"], record.version, where)
                assert_same(row["version"], state.version, where)
                assert_same(row["recorded_at"], record.recorded_at, where)
                assert row["event_type"] == record.event_type
                for name in names:
                    assert_same(row[name], getattr(state, name), f"{where} field {name}")
            if records:  # and the newest row is the state now
                assert expected[-1] == repo.get(aggregate_id)
