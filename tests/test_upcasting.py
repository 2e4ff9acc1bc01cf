"""Versioned event classes and upcasters: every read path gives today's class, or a SchemaError."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import eventador as ev
from eventador.codec import decode_value
from eventador.queue.manager import decode_message, encode_message

# Each test makes its own types (unique names); tests/conftest.py removes the upcasters it registers.
_counter = iter(range(1_000_000))



@pytest.fixture(params=["memory", "disk"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ev.EventStore]:
    if request.param == "memory":
        store = ev.open_store()
        return lambda: store
    return lambda: ev.open_store(tmp_path / "store")


def _name(stem: str) -> str:
    return f"test_upcasting{next(_counter)}.{stem}"


def deposited_v1(name: str) -> type[ev.Event]:
    class Deposited(ev.Event, event_type=name):
        account_id: str
        amount: int

    return Deposited


def deposited_v2(name: str) -> type[ev.Event]:
    class Deposited(ev.Event, event_type=name, version=2):
        account: str
        amount: int
        currency: str = "EUR"

    return Deposited


def _written(store: ev.EventStore, cls: type[ev.Event], stage: str) -> ev.EventStore:
    """Two version-1 events in stream a1, then at `stage`: hot, flushed or (disk) reopened."""
    store.append("a1", [cls(account_id="a1", amount=10), cls(account_id="a1", amount=5)])
    if stage == "flushed":
        store.flush()
    return store


STAGES = ["hot", "flushed", "reopened"]


def _reopen(store: ev.EventStore, opener: Callable[[], ev.EventStore], stage: str) -> ev.EventStore:
    if stage != "reopened" or store.path is None:
        return store
    store.close()
    return opener()


@pytest.mark.parametrize("stage", STAGES)
def test_a_renamed_required_field_without_an_upcaster_is_a_schema_error_naming_it(
    opener: Callable[[], ev.EventStore], stage: str
) -> None:
    name = _name("Deposited")
    store = _written(opener(), deposited_v1(name), stage)
    deposited_v2(name)
    store = _reopen(store, opener, stage)
    with pytest.raises(ev.SchemaError) as caught:
        store.read_stream("a1")
    assert caught.value.event_type == name and caught.value.version == 1
    assert caught.value.field == "account" and caught.value.position == 1
    assert "account" in str(caught.value) and "position 1" in str(caught.value)
    with pytest.raises(ev.SchemaError):
        list(store.read_all())
    store.close()


@pytest.mark.parametrize("stage", STAGES)
def test_a_rename_upcaster_reads_old_events_as_todays_class_on_every_path(
    opener: Callable[[], ev.EventStore], stage: str
) -> None:
    name = _name("Deposited")
    store = _written(opener(), deposited_v1(name), stage)
    new = deposited_v2(name)
    ev.upcaster(name, 1, ev.Rename("account_id", "account"))
    store = _reopen(store, opener, stage)
    store.append("a1", [new(account="a1", amount=1, currency="USD")])
    want = [new(account="a1", amount=10), new(account="a1", amount=5), new(account="a1", amount=1, currency="USD")]
    assert [r.event for r in store.read_stream("a1")] == want
    assert [r.schema_version for r in store.read_stream("a1")] == [1, 1, 2]
    assert [r.event for r in store.read_all()] == want
    assert [r.event for r in store.read_all(event_types=[new])] == want
    assert store.replay("a1").events == want
    store.flush()  # the old events' typed columns are now written upcast
    assert [r.event for r in store.read_all()] == want
    assert [type(r.event) for r in store.read_stream("a1")] == [new] * 3
    store.close()


def test_a_new_field_with_a_default_takes_it_without_an_upcaster(tmp_path: Path) -> None:
    name = _name("Opened")

    class Opened(ev.Event, event_type=name):
        owner: str

    with ev.open_store(tmp_path) as store:
        store.append("a1", [Opened(owner="ann")])
        store.flush()
        store.append("a2", [Opened(owner="bob")])

    class Opened(ev.Event, event_type=name):  # type: ignore[no-redef]
        owner: str
        tier: str = "basic"

    with ev.open_store(tmp_path) as store:
        assert [r.event for r in store.read_all()] == [Opened(owner="ann"), Opened(owner="bob")]
        assert {r.event.tier for r in store.read_all()} == {"basic"}  # type: ignore[attr-defined]


def test_a_chain_of_three_versions_converts_adds_drops_and_runs_a_function(tmp_path: Path) -> None:
    name = _name("Paid")

    class Paid(ev.Event, event_type=name):
        cents: int
        memo: str

    with ev.open_store(tmp_path) as store:
        store.append("p", [Paid(cents=1250, memo="x")])
        store.flush()

    class Paid(ev.Event, event_type=name, version=2):  # type: ignore[no-redef]
        amount: Decimal
        memo: str

    with ev.open_store(tmp_path) as store:
        store.append("p", [Paid(amount=Decimal("3.10"), memo="y")])

    class Paid(ev.Event, event_type=name, version=3):  # type: ignore[no-redef]
        amount: Decimal
        currency: str
        note: str

    ev.upcaster(name, 1, ev.Rename("cents", "amount"), ev.Convert("amount", lambda c: Decimal(c) / 100))

    def memo_becomes_note(data: dict[str, Any]) -> dict[str, Any]:
        data["note"] = data.pop("memo").upper()
        return data

    ev.upcaster(name, 2, memo_becomes_note, ev.Add("currency", "EUR"))
    with ev.open_store(tmp_path) as store:
        assert [r.event for r in store.read_stream("p")] == [
            Paid(amount=Decimal("12.5"), currency="EUR", note="X"),
            Paid(amount=Decimal("3.10"), currency="EUR", note="Y"),
        ]


def test_a_renamed_event_type_reads_under_its_new_name_and_filters_find_it(tmp_path: Path) -> None:
    old_name, new_name = _name("Deposit"), _name("Deposited")
    old = deposited_v1(old_name)
    with ev.open_store(tmp_path) as store:
        store.append("a1", [old(account_id="a1", amount=7)])
        store.flush()
        store.append("a1", [old(account_id="a1", amount=8)])
    new = deposited_v2(new_name)
    ev.upcaster(old_name, 1, ev.Rename("account_id", "account"), to_type=new_name, to_version=2)
    with ev.open_store(tmp_path) as store:
        store.append("a1", [new(account="a1", amount=9)])
        records = list(store.read_all(event_types=[new]))
        assert [r.event for r in records] == [new(account="a1", amount=a) for a in (7, 8, 9)]
        assert {r.event_type for r in records} == {new_name}
        assert [r.event for r in store.read_stream("a1")] == [r.event for r in records]


def test_a_split_chooses_the_new_type_per_event(tmp_path: Path) -> None:
    paid, card, cash = _name("Paid"), _name("CardPaid"), _name("CashPaid")

    class Paid(ev.Event, event_type=paid):
        kind: str
        amount: int

    class CardPaid(ev.Event, event_type=card):
        kind: str
        amount: int

    class CashPaid(ev.Event, event_type=cash):
        kind: str
        amount: int

    with ev.open_store(tmp_path) as store:
        store.append("p", [Paid(kind="card", amount=1), Paid(kind="cash", amount=2)])
    chooser = ev.Split(
        lambda d: card if d["kind"] == "card" else cash,
        sql=f"CASE WHEN {{kind}} = 'card' THEN '{card}' ELSE '{cash}' END",
    )
    ev.upcaster(paid, 1, to_type=chooser)
    with ev.open_store(tmp_path) as store:
        both = [CardPaid(kind="card", amount=1), CashPaid(kind="cash", amount=2)]
        assert [r.event for r in store.read_stream("p")] == both
        assert [r.event for r in store.read_all(event_types=[CashPaid])] == [CashPaid(kind="cash", amount=2)]


def test_an_upcaster_that_raises_is_a_schema_error_naming_type_version_and_position() -> None:
    name = _name("Deposited")
    old = deposited_v1(name)
    store = ev.open_store()
    store.append("a1", [old(account_id="a1", amount=1)])
    deposited_v2(name)

    @ev.upcaster(name, 1)
    def broken(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("nope")

    with pytest.raises(ev.SchemaError, match=r"schema version 1\) at position 1: the upcaster failed: KeyError"):
        store.read_stream("a1")


def test_an_upcaster_whose_result_the_next_version_cannot_take_names_the_missing_field() -> None:
    name = _name("Deposited")
    old = deposited_v1(name)
    store = ev.open_store()
    store.append("a1", [old(account_id="a1", amount=1)])
    deposited_v2(name)
    ev.upcaster(name, 1, ev.Drop("account_id"))  # forgets to give `account`
    with pytest.raises(ev.SchemaError) as caught:
        list(store.read_all())
    assert caught.value.field == "account" and caught.value.position == 1


def test_upcasters_that_loop_are_an_error_not_a_hang() -> None:
    a, b = _name("A"), _name("B")
    ev.upcaster(a, 1, to_type=b)
    ev.upcaster(b, 1, to_type=a)
    deposited_v1(a)
    with pytest.raises(ev.SchemaError, match="loop"):
        ev.codec.decode_event(a, ev.codec.encode_value({"account_id": "x", "amount": 1}), ev.registry)


def test_a_second_upcaster_for_one_step_is_refused_and_the_same_one_again_is_not() -> None:
    name = _name("Deposited")
    ev.upcaster(name, 1, ev.Rename("account_id", "account"))
    ev.upcaster(name, 1, ev.Rename("account_id", "account"))  # a re-run cell
    with pytest.raises(ev.InvalidInputError, match="already has an upcaster"):
        ev.upcaster(name, 1, ev.Rename("account_id", "owner"))
    with pytest.raises(ev.InvalidInputError, match="from_version"):
        ev.upcaster(name, 0, ev.Drop("x"))
    with pytest.raises(ev.InvalidInputError, match="later version"):
        ev.upcaster(name, 2, ev.Drop("x"), to_version=2)
    with pytest.raises(ev.InvalidInputError, match="Step or a function"):
        ev.upcaster(name, 3, "rename")  # type: ignore[call-overload]
    with pytest.raises(ev.InvalidInputError, match="version of"):
        class Bad(ev.Event, event_type=_name("Bad"), version=0):
            x: int


def test_aggregates_recover_and_fold_old_events_through_upcasters(tmp_path: Path) -> None:
    name = _name("Credited")

    class Credited(ev.Event, event_type=name):
        cents: int

    class Balance(ev.State):
        total: float = 0.0

    class Account(ev.AggregateRoot[Balance]):
        @property
        def initial_state(self) -> Balance:
            return Balance()

        def handle_command(self, state: Balance, command: Any) -> list[ev.Event]:
            return []

        def apply_event(self, state: Balance, event: ev.Event) -> Balance:
            if isinstance(event, Credited):  # the class bound last: today's
                return state.copy_with(total=state.total + event.amount)  # type: ignore[attr-defined]
            return state

    kind = Account.aggregate_type
    with ev.open_store(tmp_path) as store:
        store.append("acc", [Credited(cents=1600), Credited(cents=1400)], stream_type=kind)
        store.flush()
        store.append("acc", [Credited(cents=100)], stream_type=kind)

    class Credited(ev.Event, event_type=name, version=2):  # type: ignore[no-redef]
        amount: float

    ev.upcaster(name, 1, ev.Rename("cents", "amount"), ev.Convert("amount", lambda c: c / 100, sql="{amount} / 100"))
    with ev.open_store(tmp_path) as store:
        repo = ev.Repository(store, Account)
        assert repo.get("acc").total == pytest.approx(31.0)
        assert repo.get("acc", as_of=2).total == pytest.approx(30.0)
        assert repo.states().loc["acc", "total"] == pytest.approx(31.0)
        assert repo.history("acc")["total"].tolist() == pytest.approx([16.0, 30.0, 31.0])


def test_python_projections_subscriptions_and_queued_events_see_todays_class(tmp_path: Path) -> None:
    name = _name("Deposited")
    old = deposited_v1(name)
    store = ev.open_store(tmp_path / "s")
    store.append("a1", [old(account_id="a1", amount=3)])
    new = deposited_v2(name)
    ev.upcaster(name, 1, ev.Rename("account_id", "account"))

    seen: list[ev.Event] = []

    class Seen(ev.Projection[list[ev.Event]]):
        projection_id = _name("seen").replace(".", "_")
        interested_event_types = (new,)

        @property
        def read_model(self) -> list[ev.Event]:
            return seen

        def handle(self, event: ev.Event) -> bool:
            seen.append(event)
            return True

        def reset(self) -> None:
            seen.clear()

    runner = ev.ProjectionRunner(store, [Seen()])
    runner.run_until_caught_up()
    runner.close()
    assert seen == [new(account="a1", amount=3)]

    async def first() -> ev.Event:
        async for record in store.subscribe(from_position=1):
            return record.event
        raise AssertionError("no event")

    assert asyncio.run(first()) == new(account="a1", amount=3)
    message_type, body = encode_message(new(account="a1", amount=4))
    assert message_type == f"event@2:{name}"
    assert decode_message(message_type, body, ev.registry) == new(account="a1", amount=4)
    store.close()


def test_a_field_the_class_no_longer_has_stays_in_the_log_through_compaction(tmp_path: Path) -> None:
    name = _name("Deposited")
    old = deposited_v1(name)
    with ev.open_store(tmp_path) as store:
        for i in range(3):
            store.append(f"a{i}", [old(account_id=f"a{i}", amount=i)])
            store.flush()

    class Deposited(ev.Event, event_type=name, version=2):
        amount: int

    ev.upcaster(name, 1, ev.Drop("account_id"))
    with ev.open_store(tmp_path) as store:
        assert [r.event for r in store.read_all()] == [Deposited(amount=i) for i in range(3)]
        store.compact()
        rows = store.sql("SELECT payload FROM events ORDER BY position").fetchall()
        payloads = [decode_value(row[0]) for row in rows]
        assert [p["account_id"] for p in payloads] == ["a0", "a1", "a2"]


def test_version_one_events_are_written_as_before_and_newer_ones_record_their_version(tmp_path: Path) -> None:
    name = _name("Deposited")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old = deposited_v1(name)
    with ev.open_store(tmp_path) as store:
        store.append("a1", [old(account_id="a1", amount=1)])
        new = deposited_v2(name)
        store.append("a1", [new(account="a1", amount=2)])
        ev.upcaster(name, 1, ev.Rename("account_id", "account"))
        rows = store.sql("SELECT schema_version FROM _all ORDER BY position").fetchall()
        assert rows == [(1,), (2,)]
