"""Snapshots: the policy (SnapshotConfig), encoding and decoding, pruning, and above all that
a snapshot is only a cache: recovery from one equals recovery from zero, and a snapshot
that cannot be used (garbage bytes, a changed class, an unknown type) gives a warning and
a replay, never a crash or a wrong state."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventador as ev
import eventador.aggregates.recovery
from eventador import ManualClock, Repository, SnapshotConfig, SnapshotWarning
from eventador.aggregates.snapshots import decode_snapshot, encode_snapshot, snapshot_fingerprint, state_type_name
from eventador.store.snapshots import Snapshot
from tests.support.aggregate_domain import (
    CounterActor,
    Freeze,
    IncrementCommand,
    Ledger,
    LedgerState,
    Limits,
    Post,
    Status,
)
from tests.support.aio import run

T = TypeVar("T")
T0 = datetime(2026, 1, 1, tzinfo=UTC)




def ledger_state(**changes: Any) -> LedgerState:
    base = LedgerState(
        balance=Decimal("12.50"),
        status=Status.OPEN,
        recent=("a", "b"),
        tags=frozenset({"x", "y"}),
        limits=Limits(daily=Decimal("5")),
        posts=2,
        version=7,
        last_modified=T0,
    )
    return base.copy_with(**changes)


# -- the policy ---------------------------------------------------------------------------------


def test_presets_match_the_seed() -> None:
    assert SnapshotConfig.development.event_count_threshold == 50
    assert SnapshotConfig.production.event_count_threshold == 200
    assert SnapshotConfig() == SnapshotConfig(
        event_count_threshold=100,
        time_threshold=None,
        max_snapshots_to_keep=3,
        enable_compression=True,
        compression_threshold=2048,
        min_time_between_snapshots=None,
    )
    assert repr(SnapshotConfig.development) == "SnapshotConfig(event_count_threshold=50)"


@pytest.mark.parametrize(
    "changes",
    [
        {"event_count_threshold": 0},
        {"event_count_threshold": True},
        {"time_threshold": 60},
        {"time_threshold": timedelta(0)},
        {"max_snapshots_to_keep": 0},
        {"compression_threshold": -1},
        {"min_time_between_snapshots": timedelta(seconds=-1)},
    ],
)
def test_nonsense_configs_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ev.InvalidInputError):
        SnapshotConfig(**changes)


def test_should_snapshot_counts_events() -> None:
    config = SnapshotConfig(event_count_threshold=3)
    assert [config.should_snapshot(events_since_snapshot=n) for n in range(5)] == [False, False, False, True, True]
    assert not SnapshotConfig(event_count_threshold=None).should_snapshot(events_since_snapshot=10**6)


def test_should_snapshot_by_time_reads_the_injected_clock() -> None:
    clock = ManualClock(T0)
    config = SnapshotConfig(event_count_threshold=None, time_threshold=timedelta(minutes=5))
    assert not config.should_snapshot(events_since_snapshot=1, last_snapshot_at=T0, clock=clock)
    clock.advance(timedelta(minutes=5))
    assert config.should_snapshot(events_since_snapshot=1, last_snapshot_at=T0, clock=clock)
    assert not config.should_snapshot(events_since_snapshot=0, last_snapshot_at=T0, clock=clock)
    assert not config.should_snapshot(events_since_snapshot=1, last_snapshot_at=None, clock=clock)


def test_min_time_between_snapshots_holds_back_the_count_rule() -> None:
    clock = ManualClock(T0)
    config = SnapshotConfig(event_count_threshold=1, min_time_between_snapshots=timedelta(minutes=1))
    assert not config.should_snapshot(events_since_snapshot=50, last_snapshot_at=T0, clock=clock)
    clock.advance(seconds=60)
    assert config.should_snapshot(events_since_snapshot=50, last_snapshot_at=T0, clock=clock)
    assert config.should_snapshot(events_since_snapshot=1, last_snapshot_at=None, clock=clock)


# -- encoding ----------------------------------------------------------------------------------


def test_a_state_round_trips_with_every_converter() -> None:
    state = ledger_state()
    snapshot = encode_snapshot("l-1", 7, state, taken_at=T0)
    assert snapshot.state_type == "tests.support.aggregate_domain:LedgerState" == state_type_name(LedgerState)
    assert snapshot.fingerprint == snapshot_fingerprint(LedgerState) == ev.codec.schema_of(LedgerState).fingerprint
    decoded = decode_snapshot(snapshot, expected_type=LedgerState)
    assert decoded == state
    assert type(decoded.recent) is tuple and type(decoded.tags) is frozenset and decoded.status is Status.OPEN
    assert decode_snapshot(snapshot) == state  # found by name


@pytest.mark.parametrize("value", [{"value": 8}, [1, 2, 3], (1, "a"), 3.5, "text", None, frozenset({1, 2})])
def test_plain_values_round_trip(value: Any) -> None:
    snapshot = encode_snapshot("c-1", 1, value, taken_at=T0)
    assert snapshot.fingerprint == "plain"
    decoded = decode_snapshot(snapshot)
    assert decoded == value and type(decoded) is type(value)


def test_big_states_are_compressed_and_small_ones_are_not() -> None:
    big = ledger_state(recent=tuple(f"memo number {i}" for i in range(300)))
    packed = encode_snapshot("l-1", 7, big, taken_at=T0, config=SnapshotConfig(compression_threshold=2048))
    plain = encode_snapshot("l-1", 7, big, taken_at=T0, config=SnapshotConfig(enable_compression=False))
    small = encode_snapshot("l-1", 7, ledger_state(), taken_at=T0)
    assert packed.compressed and not plain.compressed and not small.compressed
    assert len(packed.data) < len(plain.data) / 3
    assert decode_snapshot(packed, expected_type=LedgerState) == big


def test_bumping_snapshot_version_changes_the_fingerprint() -> None:
    assert snapshot_fingerprint(LedgerState, snapshot_version=2) == snapshot_fingerprint(LedgerState) + "/v2"
    old = encode_snapshot("l-1", 7, ledger_state(), taken_at=T0)
    with pytest.raises(ev.SerializationError, match="fingerprint"):
        decode_snapshot(old, expected_type=LedgerState, snapshot_version=2)


def bad(snapshot: Snapshot, **changes: Any) -> Snapshot:
    return dataclasses.replace(snapshot, **changes)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"data": b"\xff\x00garbage"}, "do not decode"),
        ({"data": b"garbage", "compressed": True}, "do not decode"),
        ({"fingerprint": "0123456789abcdef"}, "fingerprint"),
        ({"state_type": "tests.support.aggregate_domain.NoSuchState"}, "another type"),
        ({"data": ev.codec.encode_value({"balance": 1})}, "fields"),
        ({"data": ev.codec.encode_value([1, 2])}, "fields"),
    ],
)
def test_unusable_snapshots_raise_serialization_error(changes: dict[str, Any], reason: str) -> None:
    snapshot = bad(encode_snapshot("l-1", 7, ledger_state(), taken_at=T0), **changes)
    with pytest.raises(ev.SerializationError, match=reason):
        decode_snapshot(snapshot, expected_type=LedgerState)


def test_a_snapshot_of_a_type_this_process_does_not_define_is_refused() -> None:
    snapshot = bad(encode_snapshot("l-1", 7, ledger_state(), taken_at=T0), state_type="elsewhere.Gone")
    with pytest.raises(ev.SerializationError, match="not defined in this process"):
        decode_snapshot(snapshot)


# -- recovery with unusable snapshots ----------------------------------------------------------

CORRUPTIONS: dict[str, dict[str, Any]] = {
    "garbage bytes": {"data": b"\x9f\xff\xfe not cbor", "compressed": False},
    "garbage compressed bytes": {"data": b"not zlib at all", "compressed": True},
    "wrong fingerprint": {"fingerprint": "feedfacefeedface"},
    "unknown type": {"state_type": "gone.module.LedgerState"},
}


def post(i: int) -> Post:
    return Post(amount=Decimal(i), memo=f"m{i}")


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_corrupt_newest_snapshot_warns_and_recovery_uses_an_older_one_or_replays(kind: str) -> None:
    async def main() -> None:
        store = ev.open_store()
        ledger = Ledger(persistence_id="l-1", event_store=store)  # a snapshot every 5 events, 2 kept
        for i in range(38):
            await ledger.on_message(post(i))
        newest = store.snapshots.latest("l-1")
        assert newest is not None and newest.version == 35
        store.snapshots.save(bad(newest, **CORRUPTIONS[kind]))
        recovered = Ledger(persistence_id="l-1", event_store=store)
        with pytest.warns(SnapshotWarning, match="replaying its events instead"):
            await recovered.start()
        assert recovered.state == ledger.state
        with pytest.warns(SnapshotWarning):  # the bulk path falls back the same way
            fleet = Repository(store, Ledger).states()
        assert (fleet.loc["l-1", "balance"], fleet.loc["l-1", "version"]) == (ledger.state.balance, 38)
        # Both snapshots bad: a full replay, still right.
        older = store.snapshots.list("l-1")[0]
        store.snapshots.save(bad(older, **CORRUPTIONS[kind]))
        again = Ledger(persistence_id="l-1", event_store=store)
        with pytest.warns(SnapshotWarning, match=r"and 1 older"):
            await again.start()
        assert again.state == ledger.state
        with pytest.warns(SnapshotWarning):
            assert Repository(store, Ledger).get("l-1") == ledger.state
        with pytest.warns(SnapshotWarning):
            fleet = Repository(store, Ledger).states()
        assert (fleet.loc["l-1", "balance"], fleet.loc["l-1", "version"]) == (ledger.state.balance, 38)

    run(main())


def test_a_corrupt_snapshot_of_a_persistent_actor_warns_and_replays() -> None:
    async def main() -> None:
        store = ev.open_store()
        counter = CounterActor(persistence_id="c-1", event_store=store)
        for _ in range(40):
            await counter.on_message(IncrementCommand(aggregate_id="c-1", value=2))
        snapshot = await counter.create_snapshot()
        assert snapshot is not None
        store.snapshots.save(bad(snapshot, data=b"\xff\xff"))
        recovered = CounterActor(persistence_id="c-1", event_store=store)
        with pytest.warns(SnapshotWarning, match="do not decode"):
            await recovered.start()
        assert (recovered.value, recovered.applied) == (80, 40)

    run(main())


def test_a_snapshot_ahead_of_the_stream_is_not_used() -> None:
    async def main() -> None:
        store = ev.open_store()
        ledger = Ledger(persistence_id="l-1", event_store=store)
        for i in range(36):
            await ledger.on_message(post(i))
        store.snapshots.save(encode_snapshot("l-1", 500, ledger_state(), taken_at=T0))
        recovered = Ledger(persistence_id="l-1", event_store=store)
        await recovered.start()
        assert recovered.state == ledger.state

    run(main())


def test_bumping_snapshot_version_retires_old_snapshots_with_a_warning() -> None:
    class LedgerV2(Ledger):
        aggregate_type = "Ledger"
        snapshot_version = 2

    async def main() -> None:
        store = ev.open_store()
        ledger = Ledger(persistence_id="l-1", event_store=store)
        for i in range(36):
            await ledger.on_message(post(i))
        recovered = LedgerV2(persistence_id="l-1", event_store=store)
        with pytest.warns(SnapshotWarning, match="fingerprint"):
            await recovered.start()
        assert recovered.state == ledger.state
        await recovered.on_message(post(99))
        await recovered.create_snapshot()
        assert store.snapshots.latest("l-1").fingerprint.endswith("/v2")  # type: ignore[union-attr]

    run(main())


def labelled_the_old_way(snapshot: Snapshot) -> Snapshot:
    """`snapshot` as stores wrote it before class labels had one scheme: ``module.QualifiedName``."""
    module, qualname = snapshot.state_type.split(":")
    return dataclasses.replace(snapshot, state_type=f"{module}.{qualname}")


def test_snapshots_older_stores_labelled_module_dot_name_are_still_used(tmp_path: Any) -> None:
    async def write() -> LedgerState:
        with ev.open_store(tmp_path / "s") as store:
            counter = CounterActor(persistence_id="c-1", event_store=store)
            for _ in range(40):
                await counter.on_message(IncrementCommand(aggregate_id="c-1", value=2))
            snapshot = await counter.create_snapshot()
            assert snapshot is not None and snapshot.state_type == "builtins:dict"
            store.snapshots.save(labelled_the_old_way(snapshot))
            ledger = Ledger(persistence_id="l-1", event_store=store)  # a snapshot every 5 events
            for i in range(36):
                await ledger.on_message(post(i))
            for snapshot in store.snapshots.list("l-1"):
                store.snapshots.save(labelled_the_old_way(snapshot))
            return ledger.state

    async def recover(store: ev.EventStore) -> tuple[CounterActor, Ledger]:
        counter = CounterActor(persistence_id="c-1", event_store=store)
        ledger = Ledger(persistence_id="l-1", event_store=store)
        await counter.start()
        await ledger.start()
        return counter, ledger

    expected = run(write())
    with ev.open_store(tmp_path / "s") as store:
        labels = {s.state_type for sid in ("c-1", "l-1") for s in store.snapshots.list(sid)}
        assert labels == {"builtins.dict", "tests.support.aggregate_domain.LedgerState"}
        counter, ledger = run(recover(store))  # an unusable snapshot would warn, and warnings fail tests
        assert (counter.value, counter.applied) == (80, 0)  # from the snapshot, no event replayed
        assert ledger.state == expected
        assert Repository(store, Ledger).get("l-1") == expected
        assert Repository(store, Ledger).states().loc["l-1", "balance"] == expected.balance


# -- taking snapshots -------------------------------------------------------------------------------


def test_only_the_newest_max_snapshots_to_keep_are_kept() -> None:
    async def main() -> None:
        store = ev.open_store()
        config = SnapshotConfig(event_count_threshold=3, max_snapshots_to_keep=2)
        counter = CounterActor(persistence_id="c-1", event_store=store, snapshot_config=config)
        for _ in range(20):
            await counter.on_message(IncrementCommand(aggregate_id="c-1", value=1))
        assert [s.version for s in store.snapshots.list("c-1")] == [15, 18]

    run(main())


def test_snapshots_by_time_follow_the_store_clock() -> None:
    clock = ManualClock(T0)
    config = SnapshotConfig(event_count_threshold=None, time_threshold=timedelta(hours=1))

    async def main() -> None:
        store = ev.open_store(clock=clock)
        counter = CounterActor(persistence_id="c-1", event_store=store, snapshot_config=config)
        await counter.on_message(IncrementCommand(aggregate_id="c-1", value=1))
        clock.advance(timedelta(minutes=59))
        await counter.on_message(IncrementCommand(aggregate_id="c-1", value=1))
        assert store.snapshots.list("c-1") == []
        clock.advance(timedelta(minutes=1))
        await counter.on_message(IncrementCommand(aggregate_id="c-1", value=1))
        [snapshot] = store.snapshots.list("c-1")
        assert (snapshot.version, snapshot.taken_at) == (3, T0 + timedelta(hours=1))

    run(main())


class Opaque:
    """Not a payload type: a state holding one cannot be snapshotted."""


class OddState(ev.State):
    thing: Any = None


class Odd(Ledger):
    snapshot_config = SnapshotConfig(event_count_threshold=1)

    @property
    def initial_state(self) -> Any:
        return OddState()

    def handle_command(self, state: Any, command: ev.Command) -> list[ev.Event]:
        return super().handle_command(LedgerState(), command)

    def apply_event(self, state: Any, event: ev.Event) -> Any:
        return state.copy_with(thing=Opaque())


def test_a_snapshot_that_cannot_be_taken_warns_and_the_command_still_succeeds() -> None:
    async def main() -> None:
        store = ev.open_store()
        odd = Odd(persistence_id="o-1", event_store=store)
        with pytest.warns(SnapshotWarning, match="no snapshot of 'o-1'"):
            state = await odd.on_message(post(1))
        assert isinstance(state.thing, Opaque) and store.stream_version("o-1") == 1
        assert store.snapshots.list("o-1") == []
        with pytest.warns(SnapshotWarning, match="no snapshot of 'o-1'"):
            Repository(store, Odd).execute("o-1", post(2))

    run(main())


# -- the invariant: a snapshot is only a cache ----------------------------------------------------

commands = st.lists(
    st.one_of(
        st.builds(
            Post,
            amount=st.decimals(min_value=-50, max_value=100, places=2, allow_nan=False, allow_infinity=False),
            memo=st.sampled_from(["", "rent", "food", "salary"]),
        ),
        st.just(Freeze(reason="audit")),
    ),
    min_size=0,
    max_size=60,
)
configs = st.builds(
    SnapshotConfig,
    event_count_threshold=st.one_of(st.none(), st.integers(1, 12)),
    time_threshold=st.one_of(st.none(), st.just(timedelta(seconds=30))),
    max_snapshots_to_keep=st.integers(1, 3),
    enable_compression=st.booleans(),
    compression_threshold=st.integers(0, 400),
    min_time_between_snapshots=st.one_of(st.none(), st.just(timedelta(seconds=20))),
)


async def drive(store: ev.EventStore, clock: ManualClock, config: SnapshotConfig, cmds: list[ev.Command]) -> Any:
    ledger = Ledger(persistence_id="l-1", event_store=store, snapshot_config=config)
    await ledger.start()
    for command in cmds:
        clock.advance(seconds=7)
        with contextlib.suppress(ev.CommandRejected):
            await ledger.on_message(command)
    return ledger.state


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cmds=commands, config=configs)
def test_recovery_from_snapshots_equals_recovery_from_zero(cmds: list[ev.Command], config: SnapshotConfig) -> None:
    clock = ManualClock(T0)
    store = ev.open_store(clock=clock)

    async def main() -> None:
        live = await drive(store, clock, config, cmds)
        from_snapshot = Ledger(persistence_id="l-1", event_store=store)
        await from_snapshot.start()
        repo_state = Repository(store, Ledger).get("l-1")
        states = Repository(store, Ledger).states()
        store.snapshots.delete("l-1")
        from_zero = Ledger(persistence_id="l-1", event_store=store)
        await from_zero.start()
        assert from_snapshot.state == from_zero.state == live == repo_state
        if store.stream_version("l-1"):
            assert states.loc["l-1", "balance"] == live.balance and states.loc["l-1", "version"] == live.version

    with pytest.MonkeyPatch.context() as patch:
        # Short streams normally just replay: make every recovery look for a snapshot.
        patch.setattr(eventador.aggregates.recovery, "SNAPSHOT_LOOKUP_MIN", 1)
        run(main())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cmds=commands, config=configs, cut=st.integers(0, 60))
def test_repository_snapshots_give_the_same_states_as_actors(
    cmds: list[ev.Command], config: SnapshotConfig, cut: int
) -> None:
    clock = ManualClock(T0)
    store = ev.open_store(clock=clock)

    class Configured(Ledger):
        aggregate_type = "Ledger"
        snapshot_config = config

    repo = Repository(store, Configured)
    for command in cmds[:cut]:
        clock.advance(seconds=7)
        with contextlib.suppress(ev.CommandRejected):
            repo.execute("l-1", command)

    async def rest() -> Any:
        return await drive(store, clock, config, cmds[cut:])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(eventador.aggregates.recovery, "SNAPSHOT_LOOKUP_MIN", 1)
        live = run(rest())
        assert Repository(store, Configured).get("l-1") == live
        store.snapshots.delete("l-1")
        assert Repository(store, Configured).get("l-1") == live
