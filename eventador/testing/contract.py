"""The event store's contract as pytest tests: ``StoreContract`` (see ``eventador.testing``).

Imported by ``eventador.testing`` when ``StoreContract`` is first asked for, so that
``import eventador.testing`` (clocks, scenarios, factories) works without pytest.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from eventador.clock import ManualClock
from eventador.codec import decode_event
from eventador.errors import (
    ConcurrencyError,
    InvalidInputError,
    ReadOnlyError,
    SerializationError,
    SqlError,
    StoreClosedError,
)
from eventador.messages import Event, TypeRegistry, UnknownEvent
from eventador.store import ANY, NO_STREAM, STREAM_EXISTS, EventStore, RecordedEvent
from eventador.testing.clocks import ScriptedClock
from eventador.testing.factories import StoreFactory

__all__ = ["StoreContract"]


# -- the events the contract writes ------------------------------------------------------


class ContractAccountKind(enum.Enum):
    CHECKING = "checking"
    SAVINGS = "savings"


class ContractOpened(Event, event_type="eventador.testing.Opened"):
    """An account was opened (str, Enum, datetime and list fields)."""

    account_id: str
    owner: str
    kind: ContractAccountKind
    opened_at: datetime
    tags: list[str]


class ContractDeposited(Event, event_type="eventador.testing.Deposited"):
    """Money came in (Decimal and float fields)."""

    account_id: str
    amount: Decimal
    rate: float


class ContractWithdrawn(Event, event_type="eventador.testing.Withdrawn"):
    """Money went out."""

    account_id: str
    amount: Decimal


class ContractNoted(Event, event_type="eventador.testing.Noted"):
    """A free-form note: its `extra` dict can hold values the codec must refuse."""

    text: str
    extra: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ContractPlace:
    """A nested value inside an event."""

    room: str
    floor: int | None = None


class ContractScheduled(Event, event_type="eventador.testing.Scheduled"):
    """Every other payload type: date, timedelta, UUID, bytes, bool, set, tuple, frozenset, nested, Optional."""

    day: date
    duration: timedelta
    ref: uuid.UUID
    raw: bytes
    urgent: bool
    labels: set[str]
    window: tuple[int, int]
    seen_by: frozenset[str]
    place: ContractPlace
    places: list[ContractPlace]
    note: str | None


_T0 = datetime(2026, 1, 1, 9, 30, tzinfo=UTC)


def _opened(account_id: str = "acc-1") -> ContractOpened:
    return ContractOpened(
        account_id=account_id,
        owner="Ann",
        kind=ContractAccountKind.SAVINGS,
        opened_at=_T0,
        tags=["new", "web"],
    )


def _deposited(amount: str = "10.00", account_id: str = "acc-1") -> ContractDeposited:
    return ContractDeposited(account_id=account_id, amount=Decimal(amount), rate=0.125)


def _withdrawn(amount: str = "1.00", account_id: str = "acc-1") -> ContractWithdrawn:
    return ContractWithdrawn(account_id=account_id, amount=Decimal(amount))


def _naive_event() -> ContractOpened:
    return ContractOpened(
        account_id="acc-1", owner="Ann", kind=ContractAccountKind.CHECKING, opened_at=datetime(2026, 1, 1), tags=[]
    )


def _positions(records: Sequence[RecordedEvent] | Iterator[RecordedEvent]) -> list[int]:
    return [r.position for r in records]


def _everything(store: EventStore) -> list[tuple[Any, ...]]:
    """What a store holds, in a form two stores (or one before and after) can be compared by."""
    return [(r.position, r.stream_id, r.version, r.event_type, r.event_id, r.event) for r in store.read_all()]


class StoreContract:
    """The event store's contract as pytest tests: subclass it and provide a ``store_factory`` fixture.

    The fixture returns a ``StoreFactory`` (and should close it afterwards). Tests that
    need to reopen a store, or to open a second one beside it, are skipped for
    factories that are not ``persistent``.
    """

    @pytest.fixture
    def store(self, store_factory: StoreFactory) -> EventStore:
        """A newly opened, empty store from the subclass's factory."""
        return store_factory.open()

    @staticmethod
    def reopen(factory: StoreFactory, store: EventStore, **options: Any) -> EventStore:
        """Close `store` and open its location again (skips the test for in-memory factories)."""
        if not factory.persistent:
            pytest.skip(f"{factory!r} is not persistent: nothing to reopen")
        store.close()
        return factory.open(**options)

    # -- appending and reading ---------------------------------------------------------

    def test_append_returns_the_new_stream_version(self, store: EventStore) -> None:
        assert store.append("acc-1", [_opened()]) == 1
        assert store.append("acc-1", [_deposited(), _deposited("2.50")]) == 3
        assert store.append("acc-2", _opened("acc-2")) == 1

    def test_read_stream_returns_the_appended_events_in_version_order(self, store: EventStore) -> None:
        events: list[Event] = [_opened(), _deposited("5"), _withdrawn("2"), _deposited("7.5")]
        store.append("acc-1", events[:2])
        store.append("other", [_opened("other")])
        store.append("acc-1", events[2:])
        records = store.read_stream("acc-1")
        assert [r.event for r in records] == events
        assert [r.version for r in records] == [1, 2, 3, 4]
        assert {r.stream_id for r in records} == {"acc-1"}
        assert [r.event_type for r in records] == [type(e).event_type for e in events]

    def test_field_values_come_back_equal_and_typed(self, store: EventStore) -> None:
        store.append("acc-1", [_opened(), _deposited("0.10")])
        opened, deposited = (r.event for r in store.read_stream("acc-1"))
        assert isinstance(opened, ContractOpened)
        assert opened.kind is ContractAccountKind.SAVINGS
        assert opened.opened_at == _T0 and opened.opened_at.utcoffset() == timedelta(0)
        assert opened.tags == ["new", "web"]
        assert isinstance(deposited, ContractDeposited)
        assert deposited.amount == Decimal("0.10") and str(deposited.amount) == "0.10"  # exact, not 0.1000001
        assert deposited.rate == 0.125

    def test_read_stream_of_an_unknown_stream_is_empty(self, store: EventStore) -> None:
        store.append("acc-1", [_opened()])
        assert store.read_stream("nobody") == []

    def test_read_stream_honours_from_and_to_version(self, store: EventStore) -> None:
        store.append("acc-1", [_opened()] + [_deposited(str(i)) for i in range(1, 6)])
        assert [r.version for r in store.read_stream("acc-1", from_version=3)] == [3, 4, 5, 6]
        assert [r.version for r in store.read_stream("acc-1", to_version=2)] == [1, 2]
        assert [r.version for r in store.read_stream("acc-1", from_version=2, to_version=4)] == [2, 3, 4]
        assert store.read_stream("acc-1", from_version=7) == []

    def test_stream_version_counts_the_events_of_a_stream(self, store: EventStore) -> None:
        assert store.stream_version("acc-1") == 0
        store.append("acc-1", [_opened(), _deposited()])
        store.append("acc-2", [_opened("acc-2")])
        assert store.stream_version("acc-1") == 2
        assert store.stream_version("acc-2") == 1

    def test_every_event_gets_a_distinct_event_id(self, store: EventStore) -> None:
        store.append("acc-1", [_opened(), _deposited(), _deposited()])
        store.append("acc-2", [_opened("acc-2")])
        ids = [r.event_id for r in store.read_all()]
        assert len(set(ids)) == 4
        assert all(i.version == 4 for i in ids)

    def test_an_empty_append_writes_nothing_and_returns_the_current_version(self, store: EventStore) -> None:
        store.append("acc-1", [_opened()])
        assert store.append("acc-1", []) == 1
        assert store.append("new", [], expected_version=0) == 0
        assert store.stream_version("new") == 0
        assert store.last_position == 1

    # -- expected versions ----------------------------------------------------------------

    def test_matching_expected_version_appends(self, store: EventStore) -> None:
        assert store.append("acc-1", [_opened()], expected_version=0) == 1
        assert store.append("acc-1", [_deposited()], expected_version=1) == 2
        assert store.append("acc-1", [_deposited()], expected_version=2) == 3

    @pytest.mark.parametrize("stale", [0, 1, 3])
    def test_stale_expected_version_raises_concurrency_error(self, store: EventStore, stale: int) -> None:
        store.append("acc-1", [_opened(), _deposited()])
        with pytest.raises(ConcurrencyError) as caught:
            store.append("acc-1", [_withdrawn()], expected_version=stale)
        assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == ("acc-1", stale, 2)

    def test_no_stream_accepts_only_a_new_stream(self, store: EventStore) -> None:
        assert store.append("acc-1", [_opened()], expected_version=NO_STREAM) == 1
        with pytest.raises(ConcurrencyError) as caught:
            store.append("acc-1", [_opened()], expected_version=NO_STREAM)
        assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == ("acc-1", NO_STREAM, 1)

    def test_stream_exists_refuses_a_new_stream(self, store: EventStore) -> None:
        with pytest.raises(ConcurrencyError) as caught:
            store.append("acc-1", [_deposited()], expected_version=STREAM_EXISTS)
        assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == ("acc-1", STREAM_EXISTS, 0)
        store.append("acc-1", [_opened()])
        assert store.append("acc-1", [_deposited()], expected_version=STREAM_EXISTS) == 2

    def test_any_appends_whatever_the_version(self, store: EventStore) -> None:
        assert store.append("acc-1", [_opened()], expected_version=ANY) == 1
        assert store.append("acc-1", [_deposited()], expected_version=ANY) == 2

    def test_a_refused_append_writes_nothing(self, store: EventStore) -> None:
        store.append("acc-1", [_opened()])
        before = _everything(store)
        with pytest.raises(ConcurrencyError):
            store.append("acc-1", [_deposited(), _deposited()], expected_version=0)
        assert _everything(store) == before
        assert store.stream_version("acc-1") == 1
        assert store.last_position == 1
        store.append("acc-2", [_opened("acc-2")])
        assert _positions(store.read_all()) == [1, 2]

    @pytest.mark.parametrize("bad", [-1, True, "1", 1.0, None])
    def test_a_malformed_expected_version_raises_invalid_input(self, store: EventStore, bad: Any) -> None:
        with pytest.raises(InvalidInputError, match="expected_version"):
            store.append("acc-1", [_opened()], expected_version=bad)
        assert store.last_position == 0

    # -- positions and times ----------------------------------------------------------------

    def test_positions_are_one_based_gap_free_and_in_commit_order(self, store: EventStore) -> None:
        committed: list[tuple[str, int]] = []
        for stream, count in [("a", 1), ("b", 3), ("a", 2), ("c", 1), ("b", 1)]:
            version = store.append(stream, [_deposited(str(i), stream) for i in range(count)])
            committed.extend((stream, v) for v in range(version - count + 1, version + 1))
            assert store.last_position == len(committed)
        records = list(store.read_all())
        assert _positions(records) == list(range(1, len(committed) + 1))
        assert [(r.stream_id, r.version) for r in records] == committed

    def test_one_append_gets_consecutive_versions_and_positions(self, store: EventStore) -> None:
        store.append("other", [_opened("other")])
        store.append("acc-1", [_opened(), _deposited(), _withdrawn()])
        records = store.read_stream("acc-1")
        assert [(r.version, r.position) for r in records] == [(1, 2), (2, 3), (3, 4)]

    def test_recorded_at_is_the_store_clock_in_aware_utc(self, store_factory: StoreFactory) -> None:
        clock = ManualClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
        store = store_factory.open(clock=clock)
        store.append("acc-1", [_opened(), _deposited()])
        clock.advance(seconds=90)
        store.append("acc-1", [_withdrawn()])
        times = [r.recorded_at for r in store.read_stream("acc-1")]
        assert all(t.utcoffset() == timedelta(0) for t in times)
        start = datetime(2026, 3, 1, 12, tzinfo=UTC)
        assert times == [start, start, start + timedelta(seconds=90)]

    def test_recorded_at_never_decreases_when_the_clock_goes_back(self, store_factory: StoreFactory) -> None:
        t0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
        clock = ScriptedClock(t0 + timedelta(seconds=10), t0, t0 + timedelta(seconds=5), t0 + timedelta(seconds=20))
        store = store_factory.open(clock=clock)
        for i in range(4):
            store.append("acc-1", [_deposited(str(i))])
        times = [r.recorded_at for r in store.read_all()]
        assert times == sorted(times)
        assert times[-1] == t0 + timedelta(seconds=20)

    def test_occurred_at_defaults_to_recorded_at(self, store: EventStore) -> None:
        store.append("acc-1", [_opened(), _deposited()])
        for r in store.read_all():
            assert r.occurred_at == r.recorded_at

    def test_an_explicit_occurred_at_is_kept(self, store: EventStore) -> None:
        when = datetime(2019, 5, 4, 10, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
        store.append("acc-1", [_opened(), _deposited()], occurred_at=when)
        store.append("acc-1", [_withdrawn()])
        first, second, third = store.read_stream("acc-1")
        assert first.occurred_at == when and second.occurred_at == when
        assert first.occurred_at.utcoffset() == timedelta(0)
        assert first.recorded_at != when
        assert third.occurred_at == third.recorded_at

    def test_a_naive_occurred_at_raises_invalid_input(self, store: EventStore) -> None:
        with pytest.raises(InvalidInputError, match="occurred_at"):
            store.append("acc-1", [_opened()], occurred_at=datetime(2020, 1, 1))
        assert store.last_position == 0

    # -- metadata ------------------------------------------------------------------------------

    def test_metadata_round_trips_on_every_event_of_the_append(self, store: EventStore) -> None:
        metadata = {
            "user": "ann",
            "attempt": 3,
            "ratio": 0.5,
            "tags": ["a", "b"],
            "nested": {"ok": True, "none": None},
            "at": datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC),
            "amount": Decimal("1.10"),
        }
        store.append("acc-1", [_opened(), _deposited()], metadata=metadata)
        store.append("acc-1", [_withdrawn()])
        first, second, third = store.read_stream("acc-1")
        assert first.metadata == metadata and second.metadata == metadata
        assert third.metadata == {}

    def test_metadata_must_be_a_dict_of_storable_values(self, store: EventStore) -> None:
        for bad in ("not a dict", [], [("user", "ann")], 0):
            with pytest.raises(InvalidInputError, match="metadata"):
                store.append("acc-1", [_opened()], metadata=bad)  # type: ignore[arg-type]
        with pytest.raises(SerializationError) as caught:
            store.append("acc-1", [_opened()], metadata={"at": datetime(2020, 1, 1)})
        assert caught.value.path == "metadata.at"
        assert store.last_position == 0

    # -- read_all -------------------------------------------------------------------------------

    def _three_streams(self, store: EventStore) -> list[tuple[str, str]]:
        store.append("acc-1", [_opened(), _deposited("1")])
        store.append("acc-2", [_opened("acc-2")])
        store.append("acc-1", [_withdrawn("1"), _deposited("3")])
        store.append("acc-3", [_opened("acc-3"), _deposited("4", "acc-3"), _withdrawn("2", "acc-3")])
        return [(r.stream_id, r.event_type) for r in store.read_all()]

    def test_read_all_returns_every_event_once_in_position_order(self, store: EventStore) -> None:
        everything = self._three_streams(store)
        assert len(everything) == 8
        assert _positions(store.read_all()) == list(range(1, 9))

    def test_read_all_honours_from_and_to_position(self, store: EventStore) -> None:
        self._three_streams(store)
        assert _positions(store.read_all(from_position=3)) == [3, 4, 5, 6, 7, 8]
        assert _positions(store.read_all(to_position=4)) == [1, 2, 3, 4]
        assert _positions(store.read_all(from_position=2, to_position=6)) == [2, 3, 4, 5, 6]
        assert _positions(store.read_all(from_position=9)) == []
        assert _positions(store.read_all(from_position=5, to_position=4)) == []

    def test_read_all_filters_by_event_type_name_or_class(self, store: EventStore) -> None:
        everything = self._three_streams(store)

        def expected(*types: str) -> list[int]:
            return [p for p, (_, t) in enumerate(everything, start=1) if t in types]

        deposited, opened = ContractDeposited.event_type, ContractOpened.event_type
        assert _positions(store.read_all(event_types=[deposited])) == expected(deposited)
        assert _positions(store.read_all(event_types=[ContractDeposited])) == expected(deposited)
        assert _positions(store.read_all(event_types=[ContractOpened, deposited])) == expected(deposited, opened)
        assert _positions(store.read_all(event_types=[deposited], from_position=4)) == [
            p for p in expected(deposited) if p >= 4
        ]
        assert _positions(store.read_all(event_types=["no.such.Type"])) == []
        assert _positions(store.read_all(event_types=[])) == []

    def test_read_batches_hold_what_read_all_yields_and_no_empty_batch(self, store: EventStore) -> None:
        self._three_streams(store)
        store.flush()
        store.append("acc-9", [_opened("acc-9"), _deposited("7")])  # and two in the hot tier
        for kwargs in ({}, {"from_position": 3, "to_position": 9}, {"event_types": [ContractDeposited]}):
            batches = list(store.read_batches(**kwargs))
            assert all(batches)
            assert [r.position for b in batches for r in b] == _positions(store.read_all(**kwargs))

    def test_flushing_keeps_every_event_readable(self, store: EventStore) -> None:
        store.append("acc-1", [_opened(), _deposited("1")])
        store.flush()
        store.append("acc-2", [_opened("acc-2")])
        store.append("acc-1", [_withdrawn("1")])
        store.flush()
        store.append("acc-1", [_deposited("5")])
        assert [r.version for r in store.read_stream("acc-1")] == [1, 2, 3, 4]
        assert [r.position for r in store.read_stream("acc-1")] == [1, 2, 4, 5]
        assert _positions(store.read_all()) == [1, 2, 3, 4, 5]
        assert _positions(store.read_all(event_types=[ContractOpened])) == [1, 3]

    def test_every_payload_type_survives_flushing_and_reopening(
        self, store_factory: StoreFactory, store: EventStore
    ) -> None:
        events = [
            ContractScheduled(
                day=date(2026, 2, 28),
                duration=timedelta(days=1, seconds=3, microseconds=7),
                ref=uuid.UUID(int=42),
                raw=b"\x00\xff",
                urgent=True,
                labels={"a", "b"},
                window=(9, 17),
                seen_by=frozenset({"ann"}),
                place=ContractPlace(room="r1", floor=2),
                places=[ContractPlace(room="r2"), ContractPlace(room="r3", floor=-1)],
                note=None,
            ),
            ContractScheduled(
                day=date(1999, 12, 31),
                duration=timedelta(0),
                ref=uuid.UUID(int=0),
                raw=b"",
                urgent=False,
                labels=set(),
                window=(0, 0),
                seen_by=frozenset(),
                place=ContractPlace(room=""),
                places=[],
                note="x",
            ),
        ]
        store.append("plan", events[:1])
        store.flush()
        store.append("plan", events[1:])

        def check(store: EventStore) -> None:
            read = [r.event for r in store.read_stream("plan")]
            assert read == events
            first = read[0]
            assert isinstance(first, ContractScheduled)
            assert type(first.window) is tuple and type(first.seen_by) is frozenset and type(first.labels) is set
            assert type(first.place) is ContractPlace and type(first.places[0]) is ContractPlace
            rows = store.sql(
                f'SELECT day, urgent, note FROM "{ContractScheduled.event_type}" ORDER BY position'
            ).fetchall()
            assert rows == [(e.day, e.urgent, e.note) for e in events]

        check(store)
        if store_factory.persistent:
            check(self.reopen(store_factory, store))

    # -- atomicity and bad input ---------------------------------------------------------------

    def test_a_bad_event_in_a_batch_writes_nothing(self, store_factory: StoreFactory, store: EventStore) -> None:
        store.append("acc-1", [_opened(), _deposited()])
        before = _everything(store)
        with pytest.raises(SerializationError):
            store.append("acc-1", [_deposited("1"), _naive_event(), _deposited("2")])
        assert store.stream_version("acc-1") == 2
        assert store.last_position == 2
        assert _everything(store) == before
        assert store.sql("SELECT count(*) FROM events").fetchall() == [(2,)]
        if store_factory.persistent:
            store = self.reopen(store_factory, store)
            assert store.stream_version("acc-1") == 2
            assert store.last_position == 2
            assert _everything(store) == before
        assert store.append("acc-1", [_withdrawn()], expected_version=2) == 3
        assert _positions(store.read_all()) == [1, 2, 3]

    def test_a_naive_datetime_field_raises_serialization_error_naming_it(self, store: EventStore) -> None:
        with pytest.raises(SerializationError) as caught:
            store.append("acc-1", [_naive_event()])
        assert caught.value.path == "ContractOpened.opened_at"
        assert "naive" in str(caught.value)

    def test_a_naive_datetime_nested_in_a_field_names_the_path(self, store: EventStore) -> None:
        event = ContractNoted(text="x", extra={"when": [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2)]})
        with pytest.raises(SerializationError) as caught:
            store.append("acc-1", [event])
        assert caught.value.path == "ContractNoted.extra.when[1]"
        assert store.last_position == 0

    def test_an_unsupported_value_raises_serialization_error_naming_it(self, store: EventStore) -> None:
        with pytest.raises(SerializationError) as caught:
            store.append("acc-1", [ContractNoted(text="x", extra={"handle": object()})])
        assert caught.value.path == "ContractNoted.extra.handle"
        assert store.last_position == 0

    def test_a_value_of_the_wrong_type_raises_serialization_error_naming_the_field(self, store: EventStore) -> None:
        with pytest.raises(SerializationError) as caught:
            store.append("acc-1", [ContractDeposited(account_id="acc-1", amount=1.5, rate=0.0)])  # type: ignore[arg-type]
        assert caught.value.path == "ContractDeposited.amount"

    @pytest.mark.parametrize("stream_id", ["", 5, None, b"acc-1"])
    def test_an_empty_or_non_str_stream_id_raises_invalid_input(self, store: EventStore, stream_id: Any) -> None:
        with pytest.raises(InvalidInputError, match="stream_id"):
            store.append(stream_id, [_opened()])
        with pytest.raises(InvalidInputError, match="stream_id"):
            store.read_stream(stream_id)
        with pytest.raises(InvalidInputError, match="stream_id"):
            store.stream_version(stream_id)
        assert store.last_position == 0

    def test_an_object_that_is_not_an_event_raises_serialization_error(self, store: EventStore) -> None:
        with pytest.raises(SerializationError) as caught:
            store.append("acc-1", [_opened(), {"amount": 5}])  # type: ignore[list-item]
        assert caught.value.path == "event"
        for bad in (object(), None, 42):
            with pytest.raises(SerializationError) as caught:
                store.append("acc-1", bad)  # type: ignore[arg-type]
            assert caught.value.path == "events"
        assert store.last_position == 0

    def test_a_tuple_of_events_can_be_appended(self, store: EventStore) -> None:
        assert store.append("acc-1", (_opened(), _deposited())) == 2
        assert [r.version for r in store.read_stream("acc-1")] == [1, 2]

    def test_read_all_refuses_an_event_type_that_is_neither_a_name_nor_a_class(self, store: EventStore) -> None:
        with pytest.raises(InvalidInputError, match="event_types"):
            list(store.read_all(event_types=[42]))  # type: ignore[list-item]

    # -- reading without the writer's classes ---------------------------------------------------

    def test_events_of_an_unregistered_type_load_as_unknown_event(
        self, store_factory: StoreFactory, store: EventStore
    ) -> None:
        store.append("acc-1", [_opened(), _deposited("2.50")])
        store.flush()
        store.append("acc-1", [_withdrawn("0.50")])  # and one still in the write-ahead log
        store = self.reopen(store_factory, store, registry=TypeRegistry())
        records = store.read_stream("acc-1")
        unknown = [r.event for r in records if isinstance(r.event, UnknownEvent)]
        assert len(unknown) == len(records) == 3
        assert (
            [e.event_type for e in unknown]
            == [r.event_type for r in records]
            == [
                ContractOpened.event_type,
                ContractDeposited.event_type,
                ContractWithdrawn.event_type,
            ]
        )
        assert unknown[1].data == {"account_id": "acc-1", "amount": Decimal("2.50"), "rate": 0.125}
        assert unknown[2].data == {"account_id": "acc-1", "amount": Decimal("0.50")}
        assert _positions(store.read_all(event_types=[ContractDeposited.event_type])) == [2]

    def test_a_read_only_store_beside_the_writer_decodes_with_its_own_registry(
        self, store_factory: StoreFactory, store: EventStore
    ) -> None:
        if not store_factory.persistent:
            pytest.skip(f"{store_factory!r} is not persistent: no second opener")
        store.append("acc-1", [_opened(), _deposited("2.50")])
        reader = store_factory.open(read_only=True, registry=TypeRegistry())
        assert [type(r.event) for r in reader.read_all()] == [UnknownEvent, UnknownEvent]
        assert [type(r.event) for r in store.read_all()] == [ContractOpened, ContractDeposited]

    # -- SQL -------------------------------------------------------------------------------------

    def test_the_events_view_matches_what_read_all_returns(self, store: EventStore) -> None:
        store.append("acc-1", [_opened(), _deposited("1.25")], metadata={"user": "ann", "n": 1})
        store.flush()
        store.append("acc-2", [_opened("acc-2")], occurred_at=datetime(2020, 1, 1, tzinfo=UTC))
        store.append("acc-1", [_withdrawn("0.25")])  # not flushed: SQL must see it too
        rows = store.sql(
            "SELECT position, stream_id, version, event_type, event_id, recorded_at, occurred_at, metadata, payload "
            "FROM events ORDER BY position"
        ).fetchall()
        records = list(store.read_all())
        assert [row[:7] for row in rows] == [
            (r.position, r.stream_id, r.version, r.event_type, r.event_id, r.recorded_at, r.occurred_at)
            for r in records
        ]
        assert [json.loads(row[7]) if row[7] is not None else {} for row in rows] == [r.metadata for r in records]
        assert [decode_event(row[3], row[8], store.registry) for row in rows] == [r.event for r in records]

    def test_typed_views_have_one_typed_column_per_field(self, store: EventStore) -> None:
        store.append("acc-1", [_opened(), _deposited("1.25"), _deposited("0.10")])
        store.flush()
        store.append("acc-2", [_opened("acc-2"), _deposited("7", "acc-2")])
        deposits = store.sql(
            f'SELECT position, stream_id, account_id, amount, rate FROM "{ContractDeposited.event_type}" '
            "ORDER BY position"
        ).fetchall()
        expected = [
            (r.position, r.stream_id, e.account_id, e.amount, e.rate)
            for r in store.read_all(event_types=[ContractDeposited])
            if isinstance(e := r.event, ContractDeposited)
        ]
        assert len(expected) == 3
        assert deposits == expected
        assert store.sql(f'SELECT sum(amount) FROM "{ContractDeposited.event_type}"').fetchall() == [(Decimal("8.35"),)]
        opened = store.sql(
            f'SELECT account_id, owner, kind, opened_at, tags FROM "{ContractOpened.event_type}" ORDER BY position'
        ).fetchall()
        assert [(a, o, k, t, json.loads(tags)) for a, o, k, t, tags in opened] == [
            ("acc-1", "Ann", "savings", _T0, ["new", "web"]),
            ("acc-2", "Ann", "savings", _T0, ["new", "web"]),
        ]

    def test_a_value_too_large_for_its_sql_column_fails_in_sql_and_reads_exact_in_events(
        self, store: EventStore
    ) -> None:
        huge = [Decimal("1E+40"), Decimal("123456789012345678901234567.5"), Decimal("0.1")]
        for amount in huge:
            store.append("acc-1", [ContractDeposited(account_id="acc-1", amount=amount, rate=0.0)])
        store.flush()
        view = f'"{ContractDeposited.event_type}"'
        with pytest.raises(SqlError, match=r"amount at position 1 holds 1E\+40, which DECIMAL\(38, 12\) cannot"):
            store.sql(f"SELECT amount FROM {view} WHERE position = 1").fetchall()
        assert store.sql(f"SELECT amount FROM {view} WHERE position = 3").fetchall() == [(Decimal("0.1"),)]
        texts = store.sql("SELECT data->>'amount' FROM events ORDER BY position").fetchall()
        assert [Decimal(t) for (t,) in texts] == huge
        amounts = [e.amount for r in store.read_all() if isinstance(e := r.event, ContractDeposited)]
        assert [str(a) for a in amounts] == [str(a) for a in huge]
        store.append("acc-1", [_withdrawn()])
        assert store.stream_version("acc-1") == 4

    def test_sql_takes_parameters(self, store: EventStore) -> None:
        self._three_streams(store)
        rows = store.sql("SELECT count(*) FROM events WHERE stream_id = ?", ["acc-1"]).fetchall()
        assert rows == [(4,)]

    def test_sql_sees_events_appended_after_an_earlier_query(self, store: EventStore) -> None:
        store.append("acc-1", [_opened()])
        assert store.sql("SELECT count(*) FROM events").fetchall() == [(1,)]
        store.append("acc-1", [_deposited(), _deposited()])
        assert store.sql("SELECT count(*) FROM events").fetchall() == [(3,)]

    def test_a_bad_query_raises_invalid_input(self, store: EventStore) -> None:
        with pytest.raises(InvalidInputError, match="SQL"):
            store.sql("SELECT no_such_column FROM events")

    # -- the past --------------------------------------------------------------------------------

    def test_as_of_a_position_shows_the_events_up_to_it(self, store: EventStore) -> None:
        self._three_streams(store)
        past = store.as_of(5)
        assert _positions(past.read_all()) == [1, 2, 3, 4, 5]
        assert [r.version for r in past.read_stream("acc-1")] == [1, 2, 3, 4]
        assert past.read_stream("acc-3") == []
        assert past.stream_version("acc-1") == 4
        assert past.stream_version("acc-3") == 0
        assert past.sql("SELECT count(*), max(position) FROM events").fetchall() == [(5, 5)]
        assert past.sql(f'SELECT count(*) FROM "{ContractOpened.event_type}"').fetchall() == [(2,)]

    def test_as_of_ignores_events_appended_later(self, store: EventStore) -> None:
        self._three_streams(store)
        past = store.as_of(8)
        store.append("acc-1", [_deposited("9")])
        store.flush()
        store.append("acc-4", [_opened("acc-4")])
        assert _positions(past.read_all()) == list(range(1, 9))
        assert past.stream_version("acc-1") == 4
        assert past.sql("SELECT count(*) FROM events").fetchall() == [(8,)]

    def test_as_of_a_time_shows_the_events_recorded_at_or_before_it(self, store_factory: StoreFactory) -> None:
        clock = ManualClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
        store = store_factory.open(clock=clock)
        store.append("acc-1", [_opened(), _deposited("1")])  # 12:00:00
        clock.advance(seconds=10)
        store.append("acc-2", [_opened("acc-2")])  # 12:00:10
        clock.advance(seconds=10)
        store.append("acc-1", [_withdrawn("1")])  # 12:00:20
        at = datetime(2026, 3, 1, 12, tzinfo=UTC)
        assert _positions(store.as_of(at).read_all()) == [1, 2]
        assert _positions(store.as_of(at + timedelta(seconds=15)).read_all()) == [1, 2, 3]
        assert _positions(store.as_of(at + timedelta(seconds=20)).read_all()) == [1, 2, 3, 4]
        in_paris = (at + timedelta(seconds=10)).astimezone(timezone(timedelta(hours=1)))
        past = store.as_of(in_paris)
        assert _positions(past.read_all()) == [1, 2, 3]
        assert past.stream_version("acc-1") == 2
        assert past.sql("SELECT count(*) FROM events").fetchall() == [(3,)]
        # The store's own SQL still works after asking for the past.
        assert store.sql("SELECT count(*) FROM events").fetchall() == [(4,)]

    def test_as_of_before_the_first_event_is_empty(self, store_factory: StoreFactory) -> None:
        clock = ManualClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
        store = store_factory.open(clock=clock)
        store.append("acc-1", [_opened(), _deposited()])
        for past in (store.as_of(datetime(2026, 3, 1, 11, 59, 59, 999999, tzinfo=UTC)), store.as_of(0)):
            assert list(past.read_all()) == []
            assert past.read_stream("acc-1") == []
            assert past.stream_version("acc-1") == 0
            assert past.sql("SELECT count(*) FROM events").fetchall() == [(0,)]

    def test_as_of_occurred_at_uses_the_events_own_time(self, store: EventStore) -> None:
        store.append("acc-1", [_opened()], occurred_at=datetime(2020, 1, 1, tzinfo=UTC))
        store.append("acc-1", [_deposited()], occurred_at=datetime(2021, 1, 1, tzinfo=UTC))
        store.append("acc-1", [_withdrawn()], occurred_at=datetime(2020, 6, 1, tzinfo=UTC))
        past = store.as_of(datetime(2020, 12, 31, tzinfo=UTC), by="occurred_at")
        assert _positions(past.read_all()) == [1, 3]
        assert past.sql("SELECT list(position ORDER BY position) FROM events").fetchall() == [([1, 3],)]

    @pytest.mark.parametrize("when", [datetime(2026, 1, 1), "2026-01-01", 1.5, True])
    def test_as_of_refuses_a_naive_datetime_or_a_non_point(self, store: EventStore, when: Any) -> None:
        store.append("acc-1", [_opened()])
        with pytest.raises(InvalidInputError):
            store.as_of(when)

    # -- closing and read-only stores ---------------------------------------------------------------

    def test_a_closed_store_raises_store_closed_error(self, store: EventStore) -> None:
        store.append("acc-1", [_opened()])
        store.close()
        store.close()  # idempotent
        with pytest.raises(StoreClosedError):
            store.append("acc-1", [_deposited()])
        with pytest.raises(StoreClosedError):
            store.read_stream("acc-1")
        with pytest.raises(StoreClosedError):
            list(store.read_all())
        with pytest.raises(StoreClosedError):
            store.stream_version("acc-1")
        with pytest.raises(StoreClosedError):
            store.sql("SELECT 1")
        with pytest.raises(StoreClosedError):
            store.as_of(1)
        with pytest.raises(StoreClosedError):
            store.flush()

    def test_the_store_is_a_context_manager_that_closes(self, store_factory: StoreFactory) -> None:
        with store_factory.open() as store:
            store.append("acc-1", [_opened()])
        with pytest.raises(StoreClosedError):
            store.append("acc-1", [_deposited()])

    def test_reopening_keeps_every_event(self, store_factory: StoreFactory, store: EventStore) -> None:
        self._three_streams(store)
        store.flush()
        store.append("acc-1", [_deposited("9")])
        before = _everything(store)
        store = self.reopen(store_factory, store)
        assert _everything(store) == before
        assert store.stream_version("acc-1") == 5
        assert store.append("acc-2", [_deposited("1", "acc-2")], expected_version=1) == 2
        assert store.last_position == 10

    def test_a_read_only_store_reads_and_refuses_writes(self, store_factory: StoreFactory, store: EventStore) -> None:
        if not store_factory.persistent:
            pytest.skip(f"{store_factory!r} is not persistent: no read-only opener")
        self._three_streams(store)
        store.flush()
        store.append("acc-1", [_deposited("9")])  # only in the write-ahead log
        reader = store_factory.open(read_only=True)
        assert _everything(reader) == _everything(store)
        assert reader.stream_version("acc-1") == 5
        assert reader.sql("SELECT count(*) FROM events").fetchall() == [(9,)]
        with pytest.raises(ReadOnlyError):
            reader.append("acc-1", [_deposited()])
        with pytest.raises(ReadOnlyError):
            reader.flush()
        assert store.last_position == 9
        assert store.append("acc-1", [_withdrawn()], expected_version=5) == 6
