"""Building messages: what the constructor of a Command, Event or State accepts and refuses.

Plain classes get a constructor of their own that fills the instance's ``__dict__``;
it must take and refuse exactly what the dataclass's constructor does.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import InitVar
from decimal import Decimal

import pytest

import eventador as ev


class Paid(ev.Event, event_type="test.messages.Paid"):
    invoice: str
    amount: Decimal
    note: str = ""


class PaidLate(Paid, event_type="test.messages.PaidLate"):
    days: int = 1


class Tagged(ev.Event, event_type="test.messages.Tagged"):
    tags: list[str] = dataclasses.field(default_factory=list)


class Normalised(ev.Command):
    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name.strip().lower())


class Scaled(ev.Command):
    value: int
    factor: InitVar[int] = 1

    def __post_init__(self, factor: int) -> None:
        object.__setattr__(self, "value", self.value * factor)


class Renamed(ev.Command):
    name: str

    def __init__(self, *, name: str) -> None:  # the class's own constructor stays
        object.__setattr__(self, "name", name.upper())


class Balance(ev.State):
    amount: Decimal = Decimal(0)


def reference_init(cls: type) -> inspect.Signature:
    """The signature the dataclass machinery gives `cls`."""
    twin = dataclasses.make_dataclass(
        cls.__name__, [(f.name, f.type, f) for f in dataclasses.fields(cls)], kw_only=True, frozen=True
    )
    return inspect.signature(twin)


def test_fields_defaults_and_values_are_those_of_the_dataclass() -> None:
    paid = Paid(invoice="i-1", amount=Decimal("9.50"))
    assert (paid.invoice, paid.amount, paid.note) == ("i-1", Decimal("9.50"), "")
    assert paid == Paid(invoice="i-1", amount=Decimal("9.50"), note="")
    assert hash(paid) == hash(Paid(invoice="i-1", amount=Decimal("9.50")))
    assert repr(paid) == "Paid(invoice='i-1', amount=Decimal('9.50'), note='')"
    assert list(vars(paid)) == ["invoice", "amount", "note"]
    late = PaidLate(invoice="i-2", amount=Decimal(1), days=3)
    assert dataclasses.asdict(late) == {"invoice": "i-2", "amount": Decimal(1), "note": "", "days": 3}
    assert Balance().amount == 0 and Balance().version == 0
    assert inspect.signature(Paid) == reference_init(Paid)
    assert inspect.signature(PaidLate) == reference_init(PaidLate)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Paid(invoice="i-1"), "missing 1 required keyword-only argument: 'amount'"),
        (lambda: Paid(invoice="i-1", amount=1, colour="red"), "unexpected keyword argument 'colour'"),
        (lambda: Paid("i-1", 1), "takes 1 positional argument"),
    ],
)
def test_bad_arguments_are_refused_naming_them(build: object, message: str) -> None:
    with pytest.raises(TypeError, match=message) as caught:
        build()  # type: ignore[operator]
    assert "Paid.__init__()" in str(caught.value)


def test_messages_stay_frozen() -> None:
    paid = Paid(invoice="i-1", amount=Decimal(1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        paid.amount = Decimal(2)  # type: ignore[misc]


def test_post_init_init_vars_and_default_factories_still_run() -> None:
    assert Normalised(name="  Ann ").name == "ann"
    assert Scaled(value=3, factor=4).value == 12
    assert Scaled(value=3).value == 3
    assert Renamed(name="ann").name == "ANN"
    a, b = Tagged(), Tagged()
    a.tags.append("x")
    assert b.tags == []
    assert Balance(amount=Decimal(5)).copy_with(amount=Decimal(6)).amount == 6
