"""The SQL type of a ``Decimal`` field: ``Digits(precision, scale)``, declared with ``Annotated``.

    class Paid(ev.Event):
        amount: Annotated[Decimal, ev.Digits(18, 2)]    # DECIMAL(18, 2) in SQL

The CBOR payload keeps every Decimal exactly, whatever its digits. SQL needs a fixed
type per field: a declared one, else ``DEFAULT_DIGITS`` (DECIMAL(38, 12)). Append
refuses a value its field's declared digits cannot hold exactly; a value that does
not fit the default is kept out of the typed column (see ``eventador.store.columns``),
never rounded.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Sequence
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation
from typing import Any

from eventador.errors import InvalidInputError

__all__ = ["DEFAULT_DIGITS", "MAX_PRECISION", "Digits", "declared_digits", "digits_of"]

MAX_PRECISION = 38
"""The most digits a SQL DECIMAL holds in DuckDB (and in a 128-bit Parquet decimal)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Digits:
    """The SQL type a Decimal field declares: ``Annotated[Decimal, ev.Digits(18, 2)]``.

    Its typed column and view are DECIMAL(`precision`, `scale`): at most `precision`
    digits, `scale` of them after the point. Append refuses a value that type cannot
    hold exactly (``SerializationError``); SQL sums keep the scale (``100.00``).

    Raises:
        InvalidInputError: not 1 <= precision <= 38 and 0 <= scale <= precision.

    >>> Digits(18, 2).holds(Decimal("12.50")), Digits(18, 2).holds(Decimal("0.125"))
    (True, False)
    """

    precision: int
    scale: int

    def __post_init__(self) -> None:
        p, s = self.precision, self.scale
        if type(p) is not int or type(s) is not int or not (1 <= p <= MAX_PRECISION and 0 <= s <= p):
            raise InvalidInputError(
                f"Digits({p!r}, {s!r}): expected a precision from 1 to {MAX_PRECISION} "
                "and a scale from 0 to the precision"
            )

    def __str__(self) -> str:
        return f"DECIMAL({self.precision}, {self.scale})"

    def fitted(self, value: Decimal) -> Decimal | None:
        """Returns `value` with exactly `scale` digits after the point, or None if it does not fit.

        It does not fit when that would round it, or need more than `precision` digits,
        or it is not finite.
        """
        try:
            return value.quantize(_quantum(self.scale), context=_context(self.precision))
        except (Inexact, InvalidOperation):  # the digits it would lose, or too many digits
            return None

    def fitted_all(self, values: Sequence[Any]) -> list[Decimal | None]:
        """Returns ``fitted`` of each value in `values` (None for what is not a Decimal).

        One pass when all fit, as nearly always: a flush builds a column of them.
        """
        quantum, context = _quantum(self.scale), _context(self.precision)
        try:
            return [None if v is None else v.quantize(quantum, context=context) for v in values]
        except (Inexact, InvalidOperation, AttributeError, TypeError):  # one does not fit, or is no Decimal
            return [self.fitted(v) if isinstance(v, Decimal) else None for v in values]

    def holds(self, value: Decimal) -> bool:
        """Returns whether a column of this type holds `value` exactly."""
        return self.fitted(value) is not None

    def refusal(self, value: Decimal) -> str:
        """Returns why `value` cannot be stored in a field declared with these digits (for errors)."""
        return (
            f"its declared Digits({self.precision}, {self.scale}) cannot hold {value} exactly: round it "
            f"first (value.quantize(Decimal('{_quantum(self.scale)}'))) or declare more digits"
        )


DEFAULT_DIGITS = Digits(38, 12)
"""The SQL type of a Decimal field that declares no digits."""


@functools.cache
def _quantum(scale: int) -> Decimal:
    return Decimal(1).scaleb(-scale)


@functools.cache
def _context(precision: int) -> Context:
    # Traps make quantize raise instead of rounding; the wide exponent range takes any finite value.
    return Context(prec=precision, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[Inexact, InvalidOperation])


def digits_of(annotation: Any) -> Digits | None:
    """Returns the ``Digits`` an annotation declares (``Annotated[Decimal, Digits(18, 2)]``,
    also inside ``| None``), or None."""
    if typing.get_origin(annotation) is typing.Annotated:
        found = [m for m in annotation.__metadata__ if isinstance(m, Digits)]
        if found:
            return found[-1]
        annotation = typing.get_args(annotation)[0]
    for arg in typing.get_args(annotation):  # T | None, Optional[T]
        if arg is not type(None) and typing.get_origin(arg) is typing.Annotated:
            return digits_of(arg)
    return None


def declared_digits(cls: type) -> dict[str, Digits]:
    """Returns field name -> declared ``Digits`` of a message class (cached on the class).

    Resolves the annotations with their ``Annotated`` extras (string annotations too,
    as under ``from __future__ import annotations``); a class whose annotations do
    not resolve declares none (the codec names that problem).
    """
    cached = cls.__dict__.get("__eventador_digits__")
    if cached is not None:
        return typing.cast(dict[str, Digits], cached)
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception:
        return {}
    declared = {name: d for name, tp in hints.items() if (d := digits_of(tp)) is not None}
    type.__setattr__(cls, "__eventador_digits__", declared)
    return declared
