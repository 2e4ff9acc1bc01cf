"""Upcasters: events stored under an older schema read as today's classes.

An event class declares the version of its fields (``class Deposited(ev.Event,
version=2)``) and the store records with every event the version it was written
with. The log is never rewritten: an upcaster turns the payload of one stored
(event type, version) into the next version's, on every read.

    ev.upcaster("bank.Deposited", 1, ev.Rename("account_id", "account"), ev.Add("currency", "EUR"))

    @ev.upcaster("bank.Deposited", 2)
    def amount_in_cents(data):          # any Python; SQL cannot run it (see below)
        data["amount"] = Decimal(data.pop("cents")) / 100
        return data

Upcasters chain: a version 1 event passes through 1 → 2, then 2 → 3, and so on
until no upcaster takes it. The fields of the result are then fitted to the class:
a field with a default takes it, a required field still missing is a
``SchemaError`` (never a silent None).

Declared steps (``Rename``, ``Add``, ``Drop``, ``Convert`` with ``sql=``) and
type changes (``to_type=`` a name, or a ``Split`` with ``sql=``) are SQL too, so a
type's typed SQL view applies them without a Python call per row. A plain
function, or a ``Convert`` without ``sql=``, runs only in Python: in SQL the
fields it may change raise an error on the rows that need it, never a wrong value.

Registering again for the same (event type, version) replaces the earlier
upcaster: re-running a notebook cell is normal.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from string import Formatter
from typing import Any, overload

from eventador.errors import InvalidInputError, SchemaError

__all__ = [
    "Add",
    "Convert",
    "Drop",
    "Rename",
    "Split",
    "Step",
    "Upcaster",
    "UpcasterRegistry",
    "upcaster",
    "upcasters",
]

Data = dict[str, Any]

_MAX_CHAIN = 1000  # a chain longer than this is a loop in the registrations


# -- how SQL sees one stored event's fields while a chain is applied ------------------------


class NeedsPython:
    """An SQL field value that only a Python upcaster can compute (its `reason` says which)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"NeedsPython({self.reason!r})"


SqlValue = str | None | NeedsPython
"""An SQL expression, None (the field is absent: the class's default applies), or NeedsPython."""


class SqlFields:
    """The fields of one stored (event type, version) as SQL expressions, while steps change them.

    Starts as the stored columns themselves (``column(type, field)``: an expression,
    or None where no such column exists); each step replaces what it changes.
    """

    def __init__(self, stored_type: str, column: Callable[[str, str], str | None]) -> None:
        self.stored_type = stored_type
        self._column = column
        self._changed: dict[str, SqlValue] = {}
        self._opaque: NeedsPython | None = None  # set once a Python-only step ran over the whole payload

    def get(self, name: str) -> SqlValue:
        if name in self._changed:
            return self._changed[name]
        if self._opaque is not None:
            return self._opaque
        return self._column(self.stored_type, name)

    def set(self, name: str, value: SqlValue) -> None:
        self._changed[name] = value

    def make_opaque(self, reason: str) -> None:
        self._opaque = NeedsPython(reason)
        self._changed = {}


# -- steps --------------------------------------------------------------------------------------


class Step:
    """One change to a stored payload: in Python (``__call__``) and in SQL (``sql``)."""

    def __call__(self, data: Data) -> Data:
        raise NotImplementedError

    def sql(self, fields: SqlFields) -> None:
        """Apply this step to `fields` (SQL expressions); a Python-only step marks what it touches."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Rename(Step):
    """The field `old` is now called `new`."""

    old: str
    new: str

    def __call__(self, data: Data) -> Data:
        if self.old in data:
            data[self.new] = data.pop(self.old)
        return data

    def sql(self, fields: SqlFields) -> None:
        fields.set(self.new, fields.get(self.old))
        fields.set(self.old, None)


@dataclasses.dataclass(frozen=True)
class Add(Step):
    """A new field: events stored without it (or with None) get `default`."""

    name: str
    default: Any

    def __post_init__(self) -> None:
        sql_literal(self.default)  # refuse what SQL could not show, at registration

    def __call__(self, data: Data) -> Data:
        if data.get(self.name) is None:
            data[self.name] = self.default
        return data

    def sql(self, fields: SqlFields) -> None:
        current = fields.get(self.name)
        literal = sql_literal(self.default)
        if current is None:
            fields.set(self.name, literal)
        elif isinstance(current, NeedsPython):
            pass
        else:
            fields.set(self.name, f"coalesce({current}, {literal})")


@dataclasses.dataclass(frozen=True)
class Drop(Step):
    """The field is gone from the class (its value stays in the log)."""

    name: str

    def __call__(self, data: Data) -> Data:
        data.pop(self.name, None)
        return data

    def sql(self, fields: SqlFields) -> None:
        fields.set(self.name, None)


@dataclasses.dataclass(frozen=True)
class Convert(Step):
    """The field's value changes type or unit: ``python`` maps one (non-None) value.

    ``sql`` says the same in SQL, naming fields in braces, e.g.
    ``Convert("amount", Decimal, sql="CAST({amount} AS DECIMAL(18, 2))")``. Without it
    the field is computed in Python only (SQL raises on the rows that need it).
    """

    name: str
    python: Callable[[Any], Any]
    sql_template: str | None = None

    def __init__(self, name: str, python: Callable[[Any], Any], sql: str | None = None) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "python", python)
        object.__setattr__(self, "sql_template", sql)
        if not callable(python):
            raise InvalidInputError(f"Convert({name!r}, ...): python must be callable, got {python!r}")
        if sql is not None:
            template_fields(sql)  # a malformed template fails here, not at the first query

    def __call__(self, data: Data) -> Data:
        value = data.get(self.name)
        if value is not None:
            data[self.name] = self.python(value)
        return data

    def sql(self, fields: SqlFields) -> None:
        if self.sql_template is None:
            fields.set(self.name, NeedsPython(f"Convert({self.name!r}) without sql="))
        else:
            fields.set(self.name, render(self.sql_template, fields))


@dataclasses.dataclass(frozen=True)
class _Function(Step):
    """A plain function of the whole payload: Python only."""

    function: Callable[[Data], Data]

    def __call__(self, data: Data) -> Data:
        result = self.function(data)
        if not isinstance(result, dict):
            raise TypeError(f"returned {type(result).__name__}, not the payload dict")
        return result

    def sql(self, fields: SqlFields) -> None:
        fields.make_opaque(f"the Python upcaster {getattr(self.function, '__qualname__', self.function)!r}")


@dataclasses.dataclass(frozen=True)
class Split:
    """One stored type becomes one of several, chosen per event: ``python(data)`` and
    ``sql`` (a template over the fields, e.g. ``"CASE WHEN {kind} = 'card' THEN
    'CardPaid' ELSE 'CashPaid' END"``) both return the new type's name.

    One stored event stays one event: positions and versions are facts of the log.
    """

    python: Callable[[Data], str]
    sql: str

    def __post_init__(self) -> None:
        template_fields(self.sql)


# -- upcasters ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Upcaster:
    """Turns events stored as (`event_type`, `from_version`) into (`to_type`, `to_version`)."""

    event_type: str
    from_version: int
    steps: tuple[Step, ...]
    to_type: str | Split
    to_version: int

    def apply(self, data: Data) -> tuple[str, int, Data]:
        for step in self.steps:
            data = step(data)
        to_type = self.to_type if isinstance(self.to_type, str) else self.to_type.python(data)
        if not isinstance(to_type, str):
            raise TypeError(f"Split chose {to_type!r}, not an event type name")
        return to_type, self.to_version, data

    def __repr__(self) -> str:
        target = self.to_type if isinstance(self.to_type, str) else "Split(...)"
        steps = len(self.steps)
        return f"Upcaster({self.event_type} v{self.from_version} -> {target} v{self.to_version}, {steps} steps)"


class UpcasterRegistry:
    """The upcasters of a process, by the (event type, version) they read."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], Upcaster] = {}
        self._lock = threading.Lock()
        self.generation = 0
        """Bumped on every registration: caches of decoding plans compare it."""
        self.renames_types = False
        """True when some upcaster changes the event type (readers then take each event's own)."""

    def register(self, upcaster: Upcaster) -> Upcaster:
        """Add `upcaster`; the same definition again (a re-run notebook cell) replaces it.

        Raises:
            InvalidInputError: a different upcaster already reads this (event type, version).
        """
        key = (upcaster.event_type, upcaster.from_version)
        with self._lock:
            existing = self._by_key.get(key)
            if existing is not None and not _same_definition(existing, upcaster):
                raise InvalidInputError(
                    f"{upcaster.event_type!r} version {upcaster.from_version} already has an upcaster "
                    f"({existing!r}); one step has one upcaster: remove it first with "
                    f"upcasters.remove({upcaster.event_type!r}, {upcaster.from_version})"
                )
            self._by_key[key] = upcaster
            self._changed()
        return upcaster

    def remove(self, event_type: str, from_version: int | None = None) -> None:
        """Returns nothing; forgets one upcaster, or every one of `event_type` (tests, notebooks)."""
        with self._lock:
            for key in [k for k in self._by_key if k[0] == event_type and from_version in (None, k[1])]:
                del self._by_key[key]
            self._changed()

    def _changed(self) -> None:
        self.generation += 1
        self.renames_types = any(u.to_type != u.event_type for u in self._by_key.values())

    def get(self, event_type: str, version: int) -> Upcaster | None:
        return self._by_key.get((event_type, version))

    def has_type(self, event_type: str) -> bool:
        """True when some version of `event_type` has an upcaster."""
        return any(t == event_type for t, _ in self._by_key)

    def __iter__(self) -> Iterator[Upcaster]:
        return iter(sorted(self._by_key.values(), key=lambda u: (u.event_type, u.from_version)))

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def upcast(self, event_type: str, version: int, data: Data) -> tuple[str, int, Data]:
        """The event type, version and payload after every upcaster that applies, in turn.

        Raises:
            SchemaError: an upcaster failed (naming it), or the registrations loop.
        """
        for _ in range(_MAX_CHAIN):
            upcaster = self._by_key.get((event_type, version))
            if upcaster is None:
                return event_type, version, data
            try:
                event_type, version, data = upcaster.apply(data)
            except SchemaError:
                raise
            except Exception as exc:
                raise SchemaError(
                    upcaster.event_type, upcaster.from_version, f"the upcaster failed: {type(exc).__name__}: {exc}"
                ) from exc
        raise SchemaError(event_type, version, f"upcasters chain more than {_MAX_CHAIN} times: they loop")

    def stored_types_of(self, event_types: set[str]) -> set[str]:
        """Every stored type whose events may upcast into one of `event_types` (those included).

        A ``Split`` may lead anywhere, so its stored type is always included (the
        reader filters after decoding).
        """
        wanted = set(event_types)
        changed = True
        while changed:  # a fixed point: renames may chain A -> B -> C
            changed = False
            for (stored, _), up in list(self._by_key.items()):
                if stored not in wanted and (isinstance(up.to_type, Split) or up.to_type in wanted):
                    wanted.add(stored)
                    changed = True
        return wanted

    def sql_sources(
        self, target_type: str, column: Callable[[str, str], str | None]
    ) -> list[tuple[str, int, str | None, SqlFields]]:
        """How SQL finds `target_type`'s events among the stored ones, upcasters applied.

        One entry per stored (event type, version) that an upcaster turns into
        `target_type`: (stored type, version, a condition the row must also meet (a
        Split's choice) or None, its fields as SQL). Rows of `target_type` that no
        upcaster takes read their own columns and are not listed.
        """
        sources = []
        for stored, version in sorted(self._by_key):
            fields = SqlFields(stored, column)
            condition: str | None = None
            current_type, current_version = stored, version
            reaches = False
            seen: set[tuple[str, int]] = set()
            for _ in range(_MAX_CHAIN):
                up = self._by_key.get((current_type, current_version))
                if up is None:
                    break
                if (current_type, current_version) in seen:
                    reaches = False  # a loop (Python raises for it), or a Split's branch back to itself
                    break
                seen.add((current_type, current_version))
                for step in up.steps:
                    step.sql(fields)
                if isinstance(up.to_type, Split):
                    choice = render(up.to_type.sql, fields)
                    if isinstance(choice, NeedsPython) or choice is None:
                        break  # SQL cannot tell where these rows go: the Python read path can
                    # The chosen name decides the rest of the chain, so the chain continues
                    # only for the target's branch.
                    clause = f"({choice}) = {sql_literal(target_type)}"
                    condition = clause if condition is None else f"({condition}) AND {clause}"
                    current_type = target_type
                else:
                    current_type = up.to_type
                current_version = up.to_version
                reaches = current_type == target_type
            if reaches:
                sources.append((stored, version, condition, fields))
        return sources


def _same_definition(a: Upcaster, b: Upcaster) -> bool:
    """True when `b` is `a` defined again: equal declared steps, functions of the same name."""

    def shape(u: Upcaster) -> tuple[Any, ...]:
        steps = tuple(
            (s.function.__module__, s.function.__qualname__) if isinstance(s, _Function)
            else (type(s).__name__, s.name, s.sql_template) if isinstance(s, Convert)
            else s
            for s in u.steps
        )
        target = u.to_type if isinstance(u.to_type, str) else ("split", u.to_type.sql)
        return steps, target, u.to_version

    return shape(a) == shape(b)


upcasters = UpcasterRegistry()
"""The process-wide registry every ``upcaster(...)`` call joins."""


StepLike = Step | Callable[[Data], Data]


@overload
def upcaster(
    event_type: str | type,
    from_version: int,
    *,
    to_type: str | Split | type | None = None,
    to_version: int | None = None,
    registry: UpcasterRegistry | None = None,
) -> Callable[[Callable[[Data], Data]], Callable[[Data], Data]]: ...


@overload
def upcaster(
    event_type: str | type,
    from_version: int,
    step: StepLike,
    /,
    *steps: StepLike,
    to_type: str | Split | type | None = None,
    to_version: int | None = None,
    registry: UpcasterRegistry | None = None,
) -> Upcaster: ...


def upcaster(
    event_type: str | type,
    from_version: int,
    *steps: StepLike,
    to_type: str | Split | type | None = None,
    to_version: int | None = None,
    registry: UpcasterRegistry | None = None,
) -> Any:
    """Register how events stored as (`event_type`, `from_version`) read as the next version.

    With steps (``Rename``, ``Add``, ``Drop``, ``Convert``, or plain functions of the
    payload dict), registers them and returns the ``Upcaster``; without, it is a
    decorator of one function ``data -> data``. The result is version
    ``from_version + 1`` of the same type, or of `to_type` (a rename: ``to_version``
    then defaults to `from_version`; a ``Split`` chooses per event).

    Raises:
        InvalidInputError: a version is not a positive int, a step is not a step.
    """
    stored = _type_name(event_type)
    if type(from_version) is not int or from_version < 1:
        raise InvalidInputError(f"from_version of the upcaster of {stored!r} must be an int >= 1, got {from_version!r}")
    target: str | Split = stored if to_type is None else to_type if isinstance(to_type, Split) else _type_name(to_type)
    if to_version is None:
        to_version = from_version + 1 if target == stored else from_version
    if type(to_version) is not int or to_version < 1:
        raise InvalidInputError(f"to_version of the upcaster of {stored!r} must be an int >= 1, got {to_version!r}")
    if target == stored and to_version <= from_version:
        raise InvalidInputError(
            f"the upcaster of {stored!r} from version {from_version} must lead to a later version, not {to_version}"
        )
    chosen = registry if registry is not None else upcasters

    def make(all_steps: tuple[StepLike, ...]) -> Upcaster:
        made = []
        for step in all_steps:
            if isinstance(step, Step):
                made.append(step)
            elif callable(step):
                made.append(_Function(step))
            else:
                raise InvalidInputError(f"an upcaster step must be a Step or a function of the payload, got {step!r}")
        return chosen.register(Upcaster(stored, from_version, tuple(made), target, to_version))

    if steps:
        return make(steps)
    if to_type is not None:  # a pure rename of the type: no steps at all
        return make(())

    def decorate(function: Callable[[Data], Data]) -> Callable[[Data], Data]:
        make((function,))
        return function

    return decorate


def _type_name(event_type: str | type) -> str:
    if isinstance(event_type, str):
        if not event_type.strip():
            raise InvalidInputError("an upcaster's event type must be a non-empty name")
        return event_type
    name = getattr(event_type, "event_type", None)
    if not isinstance(name, str):
        raise InvalidInputError(f"expected an event type name or an Event class, got {event_type!r}")
    return name


# -- SQL text ---------------------------------------------------------------------------------


def template_fields(template: str) -> list[str]:
    """The field names a SQL template mentions in braces.

    Raises:
        InvalidInputError: the template is malformed or names no field in a brace.
    """
    try:
        names = [name for _, name, _, _ in Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise InvalidInputError(f"SQL template {template!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
    if any(not name for name in names):
        raise InvalidInputError(f"SQL template {template!r}: name a field inside each {{}}")
    return names


def render(template: str, fields: SqlFields) -> SqlValue:
    """`template` with each ``{field}`` replaced by that field's SQL (NULL where absent)."""
    values: dict[str, str] = {}
    for name in template_fields(template):
        value = fields.get(name)
        if isinstance(value, NeedsPython):
            return value
        values[name] = "NULL" if value is None else f"({value})"
    return template.format(**values)


def sql_literal(value: Any) -> str:
    """`value` as a SQL literal (the view casts it to the field's type).

    Always a string literal (or NULL): DuckDB casts one to the type it meets, so
    ``coalesce(column, literal)`` binds whatever type the stored column has.

    Raises:
        InvalidInputError: no SQL literal can hold the value.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "'true'" if value else "'false'"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"'{value!r}'" if value == value and value not in (float("inf"), float("-inf")) else f"'{value}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return f"'{value}'"
    if isinstance(value, dt.datetime | dt.date):
        return f"'{value.isoformat()}'"
    if isinstance(value, dt.timedelta):
        return f"'{(value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds}'"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"no SQL literal for the default {value!r}") from None
    return "'" + text.replace("'", "''") + "'"


# -- column plans: what the readers' fast path builds from typed columns --------------------------

ColumnSource = tuple[str, Any]
"""Where a field's value comes from: ("column", stored field name), ("value", a constant), or
("default", a constant): its own column where that holds a value, else the constant."""


def column_plan(
    event_type: str, version: int, registry: UpcasterRegistry | None = None
) -> tuple[int, dict[str, ColumnSource]] | None:
    """How events stored as (`event_type`, `version`) are built from their stored typed
    columns, when every upcaster on their way only renames, drops or adds fields (and
    keeps the type): the version reached, and each changed field's source. Fields not
    named keep their own column. None when a step needs the payload itself (a
    conversion, a function, a change of type, an added field that may exist already).
    """
    chosen = registry if registry is not None else upcasters
    changed: dict[str, ColumnSource | None] = {}  # None: absent

    def get(name: str) -> ColumnSource | None:
        return changed.get(name, ("column", name))

    for _ in range(_MAX_CHAIN):
        up = chosen.get(event_type, version)
        if up is None:
            return version, {name: source for name, source in changed.items() if source is not None}
        if up.to_type != event_type:
            return None
        for step in up.steps:
            if isinstance(step, Rename):
                changed[step.new], changed[step.old] = get(step.old), None
            elif isinstance(step, Drop):
                changed[step.name] = None
            elif isinstance(step, Add) and get(step.name) in (None, ("column", step.name)):
                # ("default", ...): the reader takes the value when the stored column, if any,
                # holds none for these rows (else the payload decides, as in Python).
                changed[step.name] = ("value", step.default) if get(step.name) is None else ("default", step.default)
            else:
                return None
        version = up.to_version
    return None
