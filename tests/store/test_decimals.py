"""Exact decimals: SQL returns each Decimal as appended or refuses to, never a rounded number;
declared digits (``Digits``) set the SQL type and are enforced at append."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventador as ev
from eventador.digits import DEFAULT_DIGITS
from eventador.store.columns import exact_columns


class Paid(ev.Event, event_type="test.decimals.Paid"):
    amount: Decimal


class Priced(ev.Event, event_type="test.decimals.Priced"):
    item: str
    amount: Annotated[Decimal, ev.Digits(18, 2)]
    discount: Annotated[Decimal, ev.Digits(5, 4)] | None = None


PAID = '"test.decimals.Paid"'
PRICED = '"test.decimals.Priced"'


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(path: Path) -> Iterator[ev.EventStore]:
    with ev.open_store(path) as s:
        yield s


def amounts(store: ev.EventStore, view: str = PAID) -> list[Decimal]:
    return [row[0] for row in store.sql(f"SELECT amount FROM {view} ORDER BY position").fetchall()]


# -- an undeclared Decimal: DECIMAL(38, 12) when it fits, an error when it does not --------------


@pytest.mark.parametrize("flushed", [False, True], ids=["hot", "parquet"])
def test_more_than_twelve_places_fail_in_sql_instead_of_rounding(store: ev.EventStore, flushed: bool) -> None:
    store.append("a", [Paid(amount=Decimal("0.12345678901234567")), Paid(amount=Decimal("2.5"))])
    if flushed:
        store.flush()
    with pytest.raises(ev.SqlError, match=r"test\.decimals\.Paid\.amount at position 1 holds 0\.12345678901234567, "
                       r"which DECIMAL\(38, 12\) cannot hold exactly.*ev\.Digits"):
        amounts(store)
    # The rows that fit still read (and sum), and `events.data` holds the exact digits.
    assert store.sql(f"SELECT sum(amount) FROM {PAID} WHERE position > 1").fetchall() == [(Decimal("2.5"),)]
    assert store.sql("SELECT data->>'amount' FROM events ORDER BY position").fetchall() == [
        ("0.12345678901234567",), ("2.500000000000",)
    ]
    assert [r.event for r in store.read_all()] == [
        Paid(amount=Decimal("0.12345678901234567")), Paid(amount=Decimal("2.5"))
    ]


def test_more_than_26_integer_digits_fail_in_sql_instead_of_reading_null(path: Path, store: ev.EventStore) -> None:
    big = Decimal("1" * 27 + ".5")
    store.append("a", Paid(amount=big))
    store.flush()  # no "does not fit" warning (warnings are errors here)
    store.append("a", Paid(amount=Decimal("1E+30")))  # one in the hot tier too
    store.close()
    with ev.open_store(path, read_only=True) as again:
        with pytest.raises(ev.SqlError, match=r"position 1 holds 1{27}\.5, which DECIMAL\(38, 12\)"):
            again.sql(f"SELECT amount FROM {PAID} WHERE position = 1").fetchall()
        with pytest.raises(ev.SqlError, match=r"position 2 holds 1E\+30"):
            again.sql(f"SELECT amount FROM {PAID} WHERE position = 2").fetchall()
        assert [Decimal(t) for (t,) in again.sql("SELECT data->>'amount' FROM events").fetchall()] == [
            big, Decimal("1E+30")
        ]
        assert [r.event.amount for r in again.read_stream("a")] == [big, Decimal("1E+30")]  # type: ignore[attr-defined]


def test_values_that_fit_read_exactly_and_sum_fast(store: ev.EventStore) -> None:
    values = [Decimal("0.000000000001"), Decimal("-" + "9" * 26 + "." + "9" * 12), Decimal("1.000000000000000000000")]
    store.append("a", [Paid(amount=v) for v in values])
    assert amounts(store) == values
    store.flush()
    assert amounts(store) == values
    assert store.sql(f"SELECT typeof(amount) FROM {PAID} LIMIT 1").fetchall() == [("DECIMAL(38,12)",)]


def test_python_reads_return_the_decimal_as_appended(path: Path, store: ev.EventStore) -> None:
    values = [Decimal("100"), Decimal("0.10"), Decimal("0.12345678901234567"), Decimal("0E-30"), Decimal("-1.50")]
    store.append("a", [Priced(item="x", amount=Decimal("100"), discount=Decimal("0.5"))])
    store.append("b", [Paid(amount=v) for v in values])
    store.flush()
    assert exact_columns(Priced) is None and exact_columns(Paid) is None  # never built from typed columns
    store.close()
    with ev.open_store(path, read_only=True) as again:
        priced = again.read_stream("a")[0].event
        assert str(priced.amount) == "100" and str(priced.discount) == "0.5"  # type: ignore[attr-defined]
        assert [str(r.event.amount) for r in again.read_stream("b")] == [str(v) for v in values]  # type: ignore[attr-defined]
        assert [str(r.event.amount) for r in again.read_all() if isinstance(r.event, Paid)] == [str(v) for v in values]


# -- declared digits ---------------------------------------------------------------------------------


def test_declared_digits_set_the_sql_type_so_sums_keep_the_scale(store: ev.EventStore) -> None:
    store.append("a", [Priced(item="x", amount=Decimal("100")), Priced(item="y", amount=Decimal("0.10"))])
    for _ in range(2):
        assert store.sql(f"SELECT sum(amount), typeof(amount) FROM {PRICED} GROUP BY 2").fetchall() == [
            (Decimal("100.10"), "DECIMAL(18,2)")
        ]
        assert str(store.sql(f"SELECT sum(amount) FROM {PRICED}").fetchall()[0][0]) == "100.10"
        assert store.sql(f"SELECT typeof(discount) FROM {PRICED} LIMIT 1").fetchall() == [("DECIMAL(5,4)",)]
        store.flush()


@pytest.mark.parametrize("amount", ["0.125", "10000000000000000", "1E+16", "0.001"])
@pytest.mark.parametrize("batch", [1, 6], ids=["one", "batch"])
def test_a_value_the_declared_digits_cannot_hold_is_refused_and_nothing_written(
    store: ev.EventStore, amount: str, batch: int
) -> None:
    store.append("a", Priced(item="ok", amount=Decimal("1.50")))
    events = [Priced(item="ok", amount=Decimal("2"))] * (batch - 1) + [Priced(item="bad", amount=Decimal(amount))]
    with pytest.raises(ev.SerializationError) as caught:
        store.append("a", events)
    assert caught.value.path == "Priced.amount" and caught.value.value == Decimal(amount)
    assert "Digits(18, 2)" in str(caught.value) and amount in str(caught.value)
    assert store.stream_version("a") == 1 and store.last_position == 1
    store.flush()
    assert amounts(store, PRICED) == [Decimal("1.50")]


def test_an_optional_declared_field_takes_none_and_checks_values(store: ev.EventStore) -> None:
    one = Decimal(1)
    store.append("a", [Priced(item="x", amount=one), Priced(item="y", amount=one, discount=Decimal("0.1234"))])
    refused = r"Priced\.discount: its declared Digits\(5, 4\) cannot hold 0\.12345"
    with pytest.raises(ev.SerializationError, match=refused):
        store.append("a", Priced(item="z", amount=Decimal(1), discount=Decimal("0.12345")))
    assert store.sql(f"SELECT discount FROM {PRICED} ORDER BY position").fetchall() == [(None,), (Decimal("0.1234"),)]


@pytest.mark.parametrize("args", [(39, 2), (5, 6), (0, 0), (10, -1), (True, 0), (10.0, 2)])
def test_impossible_digits_are_refused(args: tuple[int, int]) -> None:
    with pytest.raises(ev.InvalidInputError, match="precision from 1 to 38"):
        ev.Digits(*args)


def test_digits_on_a_field_that_is_not_a_decimal_are_refused(store: ev.EventStore) -> None:
    class Counted(ev.Event, event_type="test.decimals.Counted"):
        n: Annotated[int, ev.Digits(10, 0)]

    with pytest.raises(ev.SerializationError, match=r"Counted\.n: .*Decimal fields only"):
        store.append("a", Counted(n=1))
    assert store.last_position == 0


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "disk"])
def test_changed_digits_never_round_values_stored_under_the_old_ones(path: Path, on_disk: bool) -> None:
    store = ev.open_store(path) if on_disk else ev.open_store()

    class Fee(ev.Event, event_type="test.decimals.Fee"):
        amount: Decimal

    store.append("a", [Fee(amount=Decimal("1.25")), Fee(amount=Decimal("0.125"))])
    store.flush()  # a DECIMAL(38, 12) column

    class Fee(ev.Event, event_type="test.decimals.Fee"):  # type: ignore[no-redef]  # the cell run again
        amount: Annotated[Decimal, ev.Digits(18, 2)]

    store.append("a", Fee(amount=Decimal("3.10")))
    store.flush()  # a DECIMAL(18, 2) column beside it, under its own name
    view = '"test.decimals.Fee"'
    assert store.sql(f"SELECT amount FROM {view} WHERE position <> 2 ORDER BY position").fetchall() == [
        (Decimal("1.25"),), (Decimal("3.10"),)
    ]
    with pytest.raises(ev.SqlError, match=r"position 2 holds 0\.125000000000, which DECIMAL\(18, 2\) \(the digits"):
        amounts(store, view)

    class Fee(ev.Event, event_type="test.decimals.Fee"):  # type: ignore[no-redef]
        amount: Annotated[Decimal, ev.Digits(38, 20)]

    finer = Decimal("0.12345678901234567891")
    store.append("a", Fee(amount=finer))
    store.flush()
    store.compact()  # files of three column layouts merge into one
    expected = [Decimal("1.25"), Decimal("0.125"), Decimal("3.10"), finer]
    assert amounts(store, view) == expected
    assert store.sql(f"SELECT typeof(amount) FROM {view} LIMIT 1").fetchall() == [("DECIMAL(38,20)",)]
    assert [Decimal(t) for (t,) in store.sql("SELECT data->>'amount' FROM events ORDER BY position").fetchall()] == (
        expected
    )
    store.close()


# -- the property: SQL gives the value appended, or the documented error -----------------------------


@st.composite
def decimals(draw: st.DrawFn) -> Decimal:
    digits = draw(st.lists(st.integers(0, 9), min_size=1, max_size=45))
    return Decimal((draw(st.integers(0, 1)), tuple(digits), draw(st.integers(-45, 45))))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(decimals(), min_size=1, max_size=4), flush=st.booleans())
def test_sql_returns_each_accepted_decimal_exactly_or_raises(
    store: ev.EventStore, values: list[Decimal], flush: bool
) -> None:
    first = store.last_position + 1
    store.append(f"s{first}", [Paid(amount=v) for v in values])
    if flush:
        store.flush()
    for position, value in enumerate(values, start=first):
        query = f"SELECT amount FROM {PAID} WHERE position = {position}"
        if DEFAULT_DIGITS.holds(value):
            assert store.sql(query).fetchall() == [(value,)]
        else:
            told = rf"Paid\.amount at position {position} holds {re.escape(str(value))}, which"
            with pytest.raises(ev.SqlError, match=told):
                store.sql(query).fetchall()
        [(text,)] = store.sql(f"SELECT data->>'amount' FROM events WHERE position = {position}").fetchall()
        assert Decimal(text) == value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=decimals())
def test_declared_digits_take_exactly_the_values_they_hold(store: ev.EventStore, value: Decimal) -> None:
    before = store.last_position
    holds = ev.Digits(18, 2).holds(value)
    if not holds:
        with pytest.raises(ev.SerializationError, match=r"Priced\.amount: its declared Digits\(18, 2\)"):
            store.append("s", Priced(item="x", amount=value))
        assert store.last_position == before
        return
    store.append("s", Priced(item="x", amount=value))
    [(got,)] = store.sql(f"SELECT amount FROM {PRICED} WHERE position = {before + 1}").fetchall()
    assert got == value and got.as_tuple().exponent == -2


# -- types without a class here (other writers, imported logs) ---------------------------------------


def test_decimals_of_a_type_without_a_class_have_one_sql_type_in_every_file(store: ev.EventStore) -> None:
    values = [Decimal("0.12345678901234567"), Decimal("123456789012345678901234.5"), Decimal("7")]
    for value in values:  # one file each: each would type its own values differently
        store.append("s", ev.UnknownEvent(event_type="test.decimals.Other", data={"amount": value}))
        store.flush()
    view = '"test.decimals.Other"'
    assert store.sql(f"SELECT amount FROM {view} WHERE position > 1 ORDER BY position").fetchall() == [
        (values[1],), (values[2],)
    ]
    with pytest.raises(ev.SqlError, match=r"Other\.amount at position 1 holds 0\.12345678901234567, which"):
        store.sql(f"SELECT amount FROM {view} WHERE position = 1").fetchall()
    texts = store.sql("SELECT data->>'amount' FROM events ORDER BY position").fetchall()
    assert [Decimal(t) for (t,) in texts] == values


def test_a_reader_without_the_class_sees_a_declared_field_under_its_name(path: Path, store: ev.EventStore) -> None:
    store.append("a", [Priced(item="x", amount=Decimal("100")), Priced(item="y", amount=Decimal("0.10"))])
    store.close()
    with ev.open_store(path, read_only=True, registry=ev.TypeRegistry()) as reader:
        assert reader.sql(f"SELECT item, amount FROM {PRICED} ORDER BY position").fetchall() == [
            ("x", Decimal("100.00")), ("y", Decimal("0.10"))
        ]
        assert reader.sql(f"SELECT sum(amount), typeof(sum(amount)) FROM {PRICED}").fetchall() == [
            (Decimal("100.10"), "DECIMAL(38,2)")
        ]


def test_a_type_whose_only_field_declares_digits_shows_its_rows(store: ev.EventStore) -> None:
    class Rate(ev.Event, event_type="test.decimals.Rate"):
        value: Annotated[Decimal, ev.Digits(10, 4)]

    store.append("a", Rate(value=Decimal("0.25")))
    for _ in range(2):  # hot, then flushed: its only typed column is "test.decimals.Rate.value:DECIMAL(10,4)"
        assert store.sql('SELECT value FROM "test.decimals.Rate"').fetchall() == [(Decimal("0.2500"),)]
        assert store.sql("SELECT data FROM events").fetchall() == [('{"value":"0.2500"}',)]
        store.flush()
