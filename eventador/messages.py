"""Commands, events and states: the three kinds of message, and the event type registry.

A subclass that only declares annotated fields becomes a dataclass with a
keyword-only constructor and value equality, without writing ``@dataclass``:

    class Deposited(ev.Event):
        account_id: str
        amount: Decimal

Every ``Event`` subclass is registered under a stable type name (its class name,
or ``event_type=`` in the class statement). That name, not the Python class, is
what the store records, so a store can be read by a process that never saw the
writer's code (its events load as ``UnknownEvent``).
"""

from __future__ import annotations

import dataclasses
import html
import inspect
import threading
import typing
import warnings
import weakref
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar, dataclass_transform

from eventador.errors import InvalidInputError, RegistrationError

__all__ = [
    "Command",
    "Event",
    "Redefinitions",
    "State",
    "TypeRegistry",
    "UnknownEvent",
    "event_data",
    "fields_html",
    "incompatibilities",
    "redefinitions",
    "registry",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

T = TypeVar("T")


class TypeRegistry:
    """Maps stable event type names to event classes, and back.

    Redefining a class of the same module and name (re-running a notebook cell)
    replaces the old one, with a ``UserWarning`` naming the change when events
    stored under the old one will not read as the new one (a required field
    removed, renamed or added, or a field's type changed, in the same schema
    version); a class from another module that claims a taken name raises
    ``RegistrationError``.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, type[Event]] = {}
        self._lock = threading.Lock()

    def register(self, cls: type[Event], name: str) -> None:
        with self._lock:
            existing = self._by_name.get(name)
            if existing is not None and existing is not cls and not _same_definition(existing, cls):
                raise RegistrationError(name, existing, cls)
            self._by_name[name] = cls
        if existing is not None and existing is not cls:
            redefinitions.retire(existing)  # also when only the name is the same (a class in a function)
            changes = incompatibilities(existing, cls)
            if changes:
                warnings.warn(
                    f"{name} redefined: {', '.join(changes)}; events stored before will not read as the new "
                    "class: give the class a new version and an upcaster",
                    UserWarning,
                    stacklevel=3,  # the class statement (through Event.__init_subclass__)
                )

    def resolve(self, name: str) -> type[Event] | None:
        """The class registered under `name`, or None."""
        return self._by_name.get(name)

    def classes(self) -> dict[str, type[Event]]:
        """A copy of the mapping from type name to class."""
        with self._lock:
            return dict(self._by_name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __iter__(self) -> Iterator[tuple[str, type[Event]]]:
        return iter(sorted(self._by_name.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __repr__(self) -> str:
        return f"TypeRegistry({len(self._by_name)} event types)"


def _same_definition(a: type, b: type) -> bool:
    # A notebook cell or a test run again defines a new class object with the same name.
    return a.__module__ == b.__module__ and a.__name__ == b.__name__


def incompatibilities(old: type, new: type) -> list[str]:
    """How events written as `old` would fail to read as `new`, its redefinition: a required
    field removed or added (a rename is both), or a field's type changed. Empty when they read
    (a field with a default added, other methods or docs) or when the two declare different
    schema versions (an upcaster's job then).

    >>> class Old(Event, _register=False):
    ...     account_id: str
    >>> class New(Event, _register=False):
    ...     account: str
    ...     note: str = ""
    >>> incompatibilities(Old, New)
    ["field 'account_id' removed", "required field 'account' added"]
    """
    if getattr(old, "schema_version", 1) != getattr(new, "schema_version", 1):
        return []
    if not (dataclasses.is_dataclass(old) and dataclasses.is_dataclass(new)):
        return []
    before = {f.name: f for f in dataclasses.fields(old)}
    after = {f.name: f for f in dataclasses.fields(new)}
    changes = [f"field {name!r} removed" for name, f in before.items() if name not in after and _required(f)]
    for name, f in after.items():
        if name not in before:
            if _required(f):
                changes.append(f"required field {name!r} added")
        elif _type_text(f.type) != _type_text(before[name].type):
            changes.append(
                f"field {name!r} changed type from {_type_text(before[name].type)} to {_type_text(f.type)}"
            )
    return changes


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _type_text(annotation: Any) -> str:
    # Compared as text: a redefined cell may annotate with classes redefined too (new objects).
    # Annotated's extras (SQL digits) do not change what old events read as: they are dropped.
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, str):
        return _unannotated(annotation.strip())
    if isinstance(annotation, type):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def _unannotated(text: str) -> str:
    """``Annotated[T, ...]`` written as text (postponed annotations) -> ``T``."""
    for prefix in ("Annotated[", "typing.Annotated[", "t.Annotated["):
        if text.startswith(prefix) and text.endswith("]"):
            depth = 0
            for i, char in enumerate(text[len(prefix) :], len(prefix)):
                depth += 1 if char in "[(" else -1 if char in "])" else 0
                if char == "," and depth == 0:
                    return text[len(prefix) : i].strip()
    return text


def text_flaw(text: str) -> str | None:
    """Why `text` cannot be stored (it is not valid Unicode: a lone surrogate), or None."""
    if text.isascii():  # O(1): CPython knows; only other text is encoded to look
        return None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return f"not valid Unicode: a lone surrogate {text[exc.start]!r} at index {exc.start}"
    return None


registry = TypeRegistry()
"""The process-wide registry every ``Event`` subclass joins when it is defined."""


class Redefinitions:
    """The message classes that a newer class of the same module and qualified name replaced
    (a notebook cell run again, or a module reloaded).

    ``generation`` counts the replacements: a cache of decoded messages compares it once per
    read, and only when it moved looks for instances of replaced classes to decode again.
    """

    def __init__(self) -> None:
        self.generation = 0
        self._newest: weakref.WeakValueDictionary[tuple[str, str], type] = weakref.WeakValueDictionary()
        self._replaced: weakref.WeakSet[type] = weakref.WeakSet()
        self._lock = threading.Lock()

    def define(self, cls: type) -> None:
        """Record `cls` as the newest class of its module and qualified name."""
        key = (cls.__module__, cls.__qualname__)
        with self._lock:
            old = self._newest.get(key)
            self._newest[key] = cls
        if old is not None and old is not cls:
            self.retire(old)

    def retire(self, old: type) -> None:
        """Record that a newer class replaced `old` (an event type's registry entry did)."""
        with self._lock:
            if old not in self._replaced:
                self._replaced.add(old)
                self.generation += 1

    def replaced(self, cls: type) -> bool:
        """Whether a newer definition of `cls` exists."""
        return cls in self._replaced

    def __repr__(self) -> str:
        return f"Redefinitions(generation {self.generation})"


redefinitions = Redefinitions()
"""The process's record of redefined message classes (classes are process-wide, as the registry is)."""


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Message:
    """Base of Command, Event and State: subclasses become frozen keyword-only dataclasses."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own_init = "__init__" in vars(cls)  # written by the user: the dataclass keeps it, and so do we
        dataclasses.dataclass(cls, kw_only=True, frozen=True, eq=True, repr=True)
        if not own_init:
            _quick_init(cls)
        redefinitions.define(cls)


def _quick_init(cls: type) -> None:
    """Give a plain message class an ``__init__`` that fills the new instance's ``__dict__``.

    A frozen dataclass's own ``__init__`` sets each field through ``object.__setattr__``,
    three times the cost, and messages are made by the million. The signature is the
    dataclass's; classes with ``__post_init__``, ``InitVar`` or ``init=False`` fields,
    default factories or ``__slots__`` keep the dataclass's ``__init__``.
    """
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    generated = vars(cls)["__init__"]  # the dataclass's
    if (
        not fields
        or hasattr(cls, "__post_init__")
        or any(not f.init or f.default_factory is not dataclasses.MISSING for f in fields)
        or any("__slots__" in vars(k) for k in cls.__mro__[:-1])
        or {"self", "_values"}.intersection(names)
        or list(inspect.signature(generated).parameters)[1:] != names  # an InitVar adds one
    ):
        return
    namespace: dict[str, Any] = {}
    params = []
    for f in fields:
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    body = "".join(f"    _values[{name!r}] = {name}\n" for name in names)
    exec(f"def __init__(self, *, {', '.join(params)}):\n    _values = self.__dict__\n{body}", namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = generated.__doc__
    init.__annotations__ = dict(generated.__annotations__)
    type.__setattr__(cls, "__init__", init)


class Command(Message):
    """A request to change something. Handlers may refuse it."""


class Event(Message):
    """Something that happened. Events are immutable and stored forever.

    The class statement may name the stored type and its schema version:
    ``class X(Event, event_type="bank.X", version=2)``. The store records the version
    with each event; upcasters (``eventador.upcasting``) read older ones as the newest.
    """

    event_type: ClassVar[str] = "Event"
    schema_version: ClassVar[int] = 1
    """The version of this class's fields, recorded with every event written with it."""

    def __init_subclass__(
        cls, event_type: str | None = None, version: int | None = None, _register: bool = True, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if not _register:
            return
        if version is not None:
            if type(version) is not int or not 1 <= version <= 32_767:
                raise InvalidInputError(f"version of {cls.__qualname__} must be an int, 1 to 32767, not {version!r}")
            cls.schema_version = version
        elif "schema_version" not in vars(cls):
            cls.schema_version = 1  # not inherited: a subclass is a new type, at its own first version
        name = cls.__name__ if event_type is None else event_type
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"event_type of {cls.__qualname__} must be a non-empty str, got {name!r}")
        flaw = text_flaw(name)
        if flaw is not None:
            raise InvalidInputError(f"event_type of {cls.__qualname__} is {flaw}, got {name!r}")
        cls.event_type = name
        registry.register(cls, name)


class State(Message):
    """The state an aggregate folds its events into.

    ``version`` is the number of events applied; ``last_modified`` when the last one was.
    """

    version: int = 0
    last_modified: datetime = EPOCH

    def _repr_html_(self) -> str:
        return fields_html(type(self).__name__, ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self)))

    def copy_with(self: T, **changes: Any) -> T:
        """A new state with `changes` applied; the original is unchanged.

        Cheap (a dict copy, no ``__init__``): replays call it once per event.

        Raises:
            TypeError: a name in `changes` is not a field.
        """
        cls = type(self)
        fields = cls.__dict__.get("_eventador_fields")
        if fields is None:
            # Empty when the class has a __post_init__: every copy must then run it.
            plain = not hasattr(cls, "__post_init__")
            fields = frozenset(f.name for f in dataclasses.fields(cls)) if plain else frozenset()  # type: ignore[arg-type]
            type.__setattr__(cls, "_eventador_fields", fields)
        if not fields.issuperset(changes) or not fields:
            return dataclasses.replace(self, **changes)  # type: ignore[type-var]
        copy = object.__new__(cls)
        values = copy.__dict__  # filled in place: assigning __dict__ costs as much again
        values.update(self.__dict__)
        values.update(changes)
        return copy


class UnknownEvent(Event, _register=False):
    """An event whose type this process does not define; its fields are kept in `data`.

    Reading a store never needs the writer's code: such events load as this class.
    """

    event_type: str  # type: ignore[misc]  # an instance field here: the stored type name
    data: dict[str, Any]


def event_data(event: Event) -> dict[str, Any]:
    """An event's payload fields by name (an ``UnknownEvent``'s `data`), as they are: nothing converted."""
    if isinstance(event, UnknownEvent):
        return dict(event.data)
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}


def fields_html(title: str, fields: Iterable[tuple[str, Any]], *, caption: str = "") -> str:
    """A titled two-column HTML table of names and values (reprs; times as ISO 8601), for notebooks."""
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(name)}</th><td>{html.escape(_shown(value))}</td></tr>"
        for name, value in fields
    )
    note = f" <small>{html.escape(caption)}</small>" if caption else ""
    return f"<div><strong>{html.escape(title)}</strong>{note}<table>{rows}</table></div>"


def _shown(value: Any) -> str:
    return value.isoformat(" ") if isinstance(value, datetime) else repr(value)
