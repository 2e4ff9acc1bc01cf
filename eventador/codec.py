"""CBOR encoding of message payloads, driven by each class's annotations.

A payload is a CBOR map of field name to value. cbor2 writes most supported
types natively (str, int, float, bool, bytes, None, Decimal, UUID, aware
datetime, date, list, tuple, set, dict); this module adds the rest (Enum,
timedelta, frozenset, nested dataclasses) and turns values back into the
annotated types on the way in.

Per class, a ``Schema`` is compiled once: which fields need a converter on
decode, how each field is checked on encode, and a fingerprint of the field
layout (snapshots keep it, so a changed class never loads a stale snapshot).
Decoding a class with only natively typed fields bypasses ``__init__``: the
decoded dict becomes the instance's ``__dict__`` (the hot path of replays).

Nothing is written that cannot be read back: containers may nest ``MAX_NESTING``
levels deep in one field (cbor2's decoder stops at 400, and its encoder would
overflow the C stack on a value nested 100,000 deep), Decimals must be finite (CBOR
has no Decimal NaN or Infinity: they would come back as floats), and text must be
valid Unicode (no lone surrogates). Only fields that can hold containers are walked;
a scalar field's type check does the rest (a Decimal's tests it is finite), so a flat
event costs next to nothing more. NumPy scalars and pandas times are stored as their
Python values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import importlib
import io
import operator
import sys
import types
import typing
import uuid
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Union

import cbor2

from eventador.digits import Digits, declared_digits
from eventador.errors import NestingError, SchemaError, SerializationError
from eventador.messages import Event, TypeRegistry, UnknownEvent, text_flaw
from eventador.upcasting import UpcasterRegistry
from eventador.upcasting import upcasters as default_upcasters

__all__ = [
    "MAX_NESTING",
    "Decoder",
    "MissingField",
    "Schema",
    "check_text",
    "check_value",
    "class_label",
    "decode_event",
    "decode_value",
    "encode_coded_rows",
    "encode_event",
    "encode_fields",
    "encode_rows",
    "encode_value",
    "import_class",
    "instance_from_fields",
    "is_label_of",
    "resolve_class",
    "schema_of",
    "unwrap_optional",
]

MAX_NESTING = 64
"""How deep containers (list, tuple, set, frozenset, dict, dataclass) may nest in one
event field, in metadata or in a queued message. Every read path handles this depth
with room to spare: cbor2 decodes 400 levels, DuckDB's JSON and Python's ``json`` more."""

# Private CBOR tag for timedelta: [days, seconds, microseconds] keeps it exact.
_TAG_TIMEDELTA = 40_001

_NATIVE_SCALARS: tuple[type, ...] = (str, int, float, bool, bytes, Decimal, uuid.UUID, datetime, date)


def _default(encoder: Any, value: Any) -> None:
    if _is_numpy_scalar(value) or (type(value) not in _LEAVES and isinstance(value, (datetime, timedelta))):
        encoder.encode(_python_scalar(value))  # np.int64(3) is stored as 3, a pandas Timestamp as a datetime
    elif isinstance(value, enum.Enum):
        encoder.encode(value.value)
    elif isinstance(value, timedelta):
        encoder.encode(cbor2.CBORTag(_TAG_TIMEDELTA, [value.days, value.seconds, value.microseconds]))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        encoder.encode({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def _tag_hook(first: Any, second: Any) -> Any:
    # cbor2 5 calls tag_hook(decoder, tag); cbor2 6 calls tag_hook(tag, immutable).
    tag = first if isinstance(first, cbor2.CBORTag) else second
    if tag.tag == _TAG_TIMEDELTA:
        days, seconds, micros = tag.value
        return timedelta(days=days, seconds=seconds, microseconds=micros)
    return tag


_instance_dict = operator.attrgetter("__dict__")


def encode_value(value: Any, *, what: str = "value") -> bytes:
    """CBOR bytes for any supported value (metadata, snapshots, queue messages).

    Raises:
        SerializationError: naming the path of the first value that cannot be encoded.
        NestingError: containers nest deeper than ``MAX_NESTING`` (or hold themselves).
    """
    if type(value) not in _LEAVES:
        check_value(value, what)
    try:
        return cbor2.dumps(value, default=_default)
    except Exception as exc:
        raise _explain(value, what, exc) from None


def encode_rows(columns: dict[str, list[Any]], *, what: str = "row") -> list[bytes]:
    """CBOR maps for rows given as columns (``None``: the key is absent from that row).

    The same bytes as ``encode_value`` of each row's dict; see ``encode_coded_rows``.

    Raises:
        SerializationError: naming the column and row of the first value that cannot be encoded.
    """
    import numpy as np

    height = len(next(iter(columns.values()))) if columns else 0
    for key, values in columns.items():
        if len(values) != height:
            raise SerializationError(what, key, f"column {key!r} has {len(values)} values, expected {height}")
    rows = np.arange(height, dtype=np.int64)
    encoded: list[bytes] = encode_coded_rows({key: (rows, values) for key, values in columns.items()}, height,
                                             what=what).to_pylist()
    return encoded


def encode_coded_rows(columns: dict[str, tuple[Any, list[Any]]], height: int, *, what: str = "row") -> Any:
    """CBOR maps, as an Arrow binary array, for rows given as columns of codes into distinct values:
    ``(codes, values)`` says row i holds ``values[codes[i]]`` (code -1 or a ``None`` value: the
    key is absent from that row).

    The same bytes as ``encode_value`` of each row's dict, made fast for bulk imports:
    each distinct value is encoded once (event logs repeat their resources, activities and
    case attributes on every row), and the rows are joined in Arrow, with no Python step per row.

    Raises:
        SerializationError: naming the column and row of the first value that cannot be encoded.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    counts = np.zeros(height, dtype=np.int64)  # the keys present in each row
    parts = []
    for key, (codes, values) in columns.items():
        entries = [*_encoded_column(key, values, what, codes), b""]  # the last one: absent
        present = np.fromiter(map(bool, entries), dtype=bool, count=len(entries))
        where = np.where(codes < 0, len(entries) - 1, codes)
        counts += present[where]
        parts.append(pa.array(entries, pa.binary()).take(pa.array(where)))
    heads = pa.array([_map_header(n) for n in range(int(counts.max(initial=0)) + 1)], pa.binary())
    rows = heads.take(pa.array(counts))
    return pc.binary_join_element_wise(rows, *parts, b"") if parts else rows


_HASHABLE_SCALARS = (str, int, float, bool, bytes, Decimal, uuid.UUID, datetime, date)


def _encoded_column(key: str, values: list[Any], what: str, codes: Any) -> list[bytes]:
    """Each value as its map entry (key and value), b"" for None; each distinct value encoded once.
    A value that cannot be encoded is named by the first row whose code points to it."""
    import numpy as np

    prefix = cbor2.dumps(key)

    def entry(value: Any) -> bytes:
        try:
            if type(value) not in _LEAVES:
                check_value(value, key)
            return prefix + cbor2.dumps(value, default=_default)
        except Exception as exc:
            code = next(i for i, v in enumerate(values) if v is value)
            row = int(np.flatnonzero(codes == code)[0])
            if isinstance(exc, SerializationError):
                check_value(value, f"{what} {row}, column {key!r}")  # raises again, naming the row
            raise _explain(value, f"{what} {row}, column {key!r}", exc) from None

    kinds = set(map(type, values)) - {type(None)}
    if len(kinds) <= 1 and all(k in _HASHABLE_SCALARS for k in kinds):
        # One type only, so no two distinct values are equal keys (1, 1.0 and True are).
        table = {v: entry(v) for v in dict.fromkeys(values) if v is not None}
        table[None] = b""
        return [table[v] for v in values]
    done: dict[tuple[type, Any], bytes] = {}
    out: list[bytes] = []
    for value in values:
        if value is None:
            out.append(b"")
            continue
        try:
            memo: tuple[type, Any] | None = (type(value), value)
            part = done.get(memo)  # type: ignore[arg-type]
        except TypeError:  # unhashable (a list, a dict): encoded every time
            memo, part = None, None
        if part is None:
            part = entry(value)
            if memo is not None:
                done[memo] = part
        out.append(part)
    return out


_MAP_HEADERS = [bytes([0xA0 + n]) for n in range(24)]


def _map_header(n: int) -> bytes:
    """The CBOR head of a map of n pairs (major type 5)."""
    if n < 24:
        return _MAP_HEADERS[n]
    for code, size in ((0xB8, 1), (0xB9, 2), (0xBA, 4)):
        if n < 1 << (8 * size):
            return bytes([code]) + n.to_bytes(size, "big")
    return b"\xbb" + n.to_bytes(8, "big")


def decode_value(data: bytes) -> Any:
    """The value `encode_value` wrote (containers come back as list/dict/set)."""
    return cbor2.loads(data, tag_hook=_tag_hook)


# -- what can be read back -----------------------------------------------------------

# Values that need no look inside: nothing nests in them and CBOR keeps them exactly.
# (A str with a lone surrogate makes cbor2 raise, cleanly; `_explain` names it.)
_LEAVES = frozenset({str, int, float, bool, bytes, type(None), uuid.UUID, datetime, date, timedelta})


class _Refused(Exception):
    """Raised inside `_walk`; each level on the way out adds its step to `steps`."""

    def __init__(self, value: Any, reason: str | None) -> None:
        self.value, self.reason, self.steps = value, reason, list[str]()


def check_value(value: Any, path: str) -> None:
    """Refuse what CBOR could write but not read back, before anything is written.

    Walks only containers (a flat list of scalars is one C-level pass over its types).

    Raises:
        NestingError: containers nest deeper than ``MAX_NESTING``, or one holds itself.
        SerializationError: a Decimal NaN or Infinity, or a time with nanoseconds.
    """
    try:
        _walk(value, 0)
    except _Refused as refused:
        where = path + "".join(reversed(refused.steps))
        if refused.reason is None:
            raise NestingError(where, refused.value, MAX_NESTING) from None
        raise SerializationError(where, refused.value, refused.reason) from None


def _walk(value: Any, depth: int) -> None:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _Refused(value, "a Decimal NaN or Infinity cannot be stored (CBOR reads it back as a float)")
        return
    if isinstance(value, (datetime, timedelta)):
        if getattr(value, "nanosecond", 0) or getattr(value, "nanoseconds", 0):  # pandas: stored to the µs
            raise _Refused(value, "nanoseconds cannot be stored: round to microseconds, e.g. ts.floor('us')")
        return
    if isinstance(value, dict):
        inner: Iterable[Any] = value.values()
        keys = set(map(type, value))
    elif isinstance(value, (list, tuple, set, frozenset)):
        inner, keys = value, set()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}  # walked as its dict
        inner, keys = value.values(), set()
    else:
        return  # a scalar: cbor2 writes it exactly, or refuses it cleanly
    depth += 1
    if depth > MAX_NESTING:
        raise _Refused(value, None)
    if keys <= _LEAVES and set(map(type, inner)) <= _LEAVES:
        return  # the common case: only scalars inside
    if isinstance(value, dict):
        for key, item in value.items():
            step = f".{key}" if type(key) is str else f"[{key!r:.40}]"
            for part in (key, item):
                if type(part) not in _LEAVES:
                    try:
                        _walk(part, depth)
                    except _Refused as refused:
                        refused.steps.append(step)
                        raise
        return
    for i, item in enumerate(value):
        if type(item) not in _LEAVES:
            try:
                _walk(item, depth)
            except _Refused as refused:
                refused.steps.append(f"[{i}]")
                raise


def _is_numpy_scalar(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "item")


_NUMPY_HINTS = {
    "datetime64": " (it has no time zone: pass an aware datetime or pd.Timestamp(value, tz='UTC'))",
    "timedelta64": " (pass a timedelta or pd.Timedelta(value))",
}


def _python_scalar(value: Any) -> Any:
    """The plain Python value of a NumPy scalar (np.int64(3) -> 3) or of a datetime or
    timedelta subclass (a pandas Timestamp); anything else as it is. Not np.datetime64:
    it has no time zone, and guessing one would store a different instant."""
    if _is_numpy_scalar(value):
        return value if type(value).__name__ == "datetime64" else value.item()
    if isinstance(value, datetime) and not getattr(value, "nanosecond", 0):
        return datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            value.tzinfo,
            fold=value.fold,
        )
    if isinstance(value, timedelta) and not getattr(value, "nanoseconds", 0):
        return timedelta(value.days, value.seconds, value.microseconds)
    return value


# -- schemas -------------------------------------------------------------------------

Converter = Callable[[Any], Any]
Checker = Callable[[Any], bool]


@dataclasses.dataclass(frozen=True, slots=True)
class Schema:
    """What the codec knows about one message class."""

    cls: type
    names: tuple[str, ...]
    hints: dict[str, Any]
    checkers: tuple[tuple[str, Checker, str], ...]
    accepts: tuple[tuple[str, tuple[type, ...]], ...]  # the types each checked field takes
    converters: tuple[tuple[str, Converter], ...]
    defaults: dict[str, Callable[[], Any]]
    fingerprint: str
    walked: tuple[tuple[str, str], ...] = ()  # (field, path) of fields `check_value` must look into
    decimals: tuple[str, ...] = ()  # Decimal fields: their type check also tests they are finite

    @property
    def plain(self) -> bool:
        """True when decoded values need no conversion (the fast path)."""
        return not self.converters


def schema_of(cls: type) -> Schema:
    """The compiled schema of a dataclass message type (cached on the class).

    Raises:
        SerializationError: a field's annotation is not a supported payload type.
    """
    cached = cls.__dict__.get("__eventador_schema__")
    if cached is not None:
        return typing.cast(Schema, cached)
    schema = _compile(cls)
    type.__setattr__(cls, "__eventador_schema__", schema)
    return schema


def _compile(cls: type) -> Schema:
    try:
        hints = typing.get_type_hints(cls)
    except Exception as exc:
        raise SerializationError(cls.__qualname__, cls, f"cannot resolve field annotations: {exc}") from exc
    fields = list(dataclasses.fields(cls))
    names = tuple(f.name for f in fields)
    checkers = []
    accepts: list[tuple[str, tuple[type, ...]]] = []
    converters = []
    walked = []
    decimals: list[str] = []
    defaults: dict[str, Callable[[], Any]] = {}
    layout = []
    digits = declared_digits(cls)
    for f in fields:
        tp = hints[f.name]
        path = f"{cls.__qualname__}.{f.name}"
        checker, expected, accepted = _checker_for(tp, path)
        if f.name in digits:
            checker, expected = _with_digits(checker, expected, tp, path, digits[f.name])
        checkers.append((f.name, checker, expected))
        if accepted is not None:
            accepts.append((f.name, accepted))
        if accepted is None or not set(accepted) <= _FLAT:
            walked.append((f.name, path))
        if accepted is not None and Decimal in accepted:
            decimals.append(f.name)
        conv = _converter_for(tp)
        if conv is not None:
            converters.append((f.name, conv))
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = _constant(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory
        layout.append(f"{f.name}:{_type_name(tp)}")
    fingerprint = hashlib.blake2b("|".join(layout).encode(), digest_size=8).hexdigest()
    return Schema(
        cls,
        names,
        hints,
        tuple(checkers),
        tuple(accepts),
        tuple(converters),
        defaults,
        fingerprint,
        tuple(walked),
        tuple(decimals),
    )


# Field types whose values need no walk: no containers inside, nothing CBOR cannot read back.
# (Their type checks are exact for datetime and timedelta, and test a Decimal is finite;
# an Enum's values are fixed by its class. Containers and Any are walked.)
_FLAT = frozenset({str, int, float, bool, bytes, type(None), Decimal, uuid.UUID, datetime, date, timedelta})


def _with_digits(checker: Checker, expected: str, tp: Any, path: str, digits: Digits) -> tuple[Checker, str]:
    """A Decimal field's type check that also tests its declared digits hold the value exactly."""
    if unwrap_optional(tp)[0] is not Decimal:
        raise SerializationError(path, tp, f"{digits!r} is for Decimal fields only")
    holds = digits.holds
    return (lambda v: checker(v) and (v is None or holds(v))), f"{expected} within {digits}"


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """Returns ``(T, True)`` for an annotation ``T | None`` (or ``Optional[T]``), else ``(tp, False)``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _checker_for(tp: Any, path: str) -> tuple[Checker, str, tuple[type, ...] | None]:
    """A cheap isinstance test for one annotated field, the type's name for errors, and the
    types the test accepts (None: any value), for checking a column of values at once."""
    inner, optional = unwrap_optional(tp)
    if inner is Any or inner is object:
        return (lambda v: True), "any value", None
    origin = typing.get_origin(inner) or inner
    if origin in (Union, types.UnionType):
        return (lambda v: True), "any of " + repr(inner), None
    if origin is float:
        accepted: tuple[type, ...] = (float, int)
    elif origin in (list, tuple, set, frozenset, dict):
        accepted = (origin,)
        if origin is dict:
            key_tp = (typing.get_args(inner) or (str,))[0]
            if key_tp not in (str, Any):
                raise SerializationError(path, tp, "dict keys must be str")
    elif isinstance(origin, type) and (
        issubclass(origin, (*_NATIVE_SCALARS, enum.Enum, timedelta)) or dataclasses.is_dataclass(origin)
    ):
        accepted = (origin,)
    elif origin is type(None):
        return (lambda v: v is None), "None", (type(None),)
    else:
        raise SerializationError(path, tp, "unsupported payload type")
    name = " | ".join(t.__name__ for t in accepted) + (" | None" if optional else "")
    if origin is Decimal:  # a finite one: CBOR has no Decimal NaN or Infinity
        if optional:
            return (lambda v: v is None or (isinstance(v, Decimal) and v.is_finite())), name, (Decimal, type(None))
        return (lambda v: isinstance(v, Decimal) and v.is_finite()), name, accepted
    if origin in (datetime, timedelta):
        # Exactly: cbor2 writes no subclass (a pandas Timestamp); encode_event converts those.
        if optional:
            return (lambda v: v is None or type(v) is origin), name, (origin, type(None))
        return (lambda v: type(v) is origin), name, accepted
    if optional:
        return (lambda v: v is None or isinstance(v, accepted)), name, (*accepted, type(None))
    return (lambda v: isinstance(v, accepted)), name, accepted


def _converter_for(tp: Any) -> Converter | None:
    """How to turn a decoded CBOR value back into `tp`, or None when it needs nothing."""
    inner, optional = unwrap_optional(tp)
    origin = typing.get_origin(inner) or inner
    args = typing.get_args(inner)
    conv: Converter | None = None
    if isinstance(origin, type) and issubclass(origin, enum.Enum):
        conv = origin
    elif isinstance(origin, type) and dataclasses.is_dataclass(origin):
        conv = _nested_decoder(origin)
    elif origin is tuple:
        item = _converter_for(args[0]) if len(args) == 2 and args[1] is Ellipsis else None
        conv = (lambda v: tuple(map(item, v))) if item else tuple
    elif origin is frozenset:
        conv = frozenset
    elif origin is list and args:
        item = _converter_for(args[0])
        if item is not None:
            conv = lambda v: [item(x) for x in v]  # noqa: E731
    elif origin is set and args:
        item = _converter_for(args[0])
        if item is not None:
            conv = lambda v: {item(x) for x in v}  # noqa: E731
    elif origin is dict and len(args) == 2:
        item = _converter_for(args[1])
        if item is not None:
            conv = lambda v: {k: item(x) for k, x in v.items()}  # noqa: E731
    elif origin is datetime:
        # cbor2 may hand back a date for an all-midnight value written by another encoder; keep datetimes.
        conv = None
    if conv is None:
        return None
    if optional:
        base = conv
        return lambda v: None if v is None else base(v)
    return conv


def _nested_decoder(cls: type) -> Converter:
    def decode(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return instance_from_fields(schema_of(cls), value)

    return decode


def instance_from_fields(schema: Schema, data: dict[str, Any], *, strict: bool = False) -> Any:
    """Returns an instance of `schema.cls` from decoded field values, without running ``__init__``.

    Converts the fields that need it (enums, nested dataclasses, ...; a value that does
    not convert is kept as stored) and fits `data` to the class as defined now: a field
    it no longer has is dropped, a new one takes its default. A new field without a
    default reads as None, or with `strict` raises ``MissingField`` (events: no silent
    None). `data` becomes the instance's ``__dict__``: the caller gives up the dict.
    """
    if schema.converters:
        for name, conv in schema.converters:
            if name in data:
                # On failure keep the raw value: reading must not fail on an old enum member.
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    data[name] = conv(data[name])
    if len(data) != len(schema.names) or data.keys() != set(schema.names):
        data = _fit_layout(schema, data, strict)
    obj: Any = object.__new__(schema.cls)
    object.__setattr__(obj, "__dict__", data)
    return obj


class MissingField(Exception):
    """A stored payload lacks a required field of the class that reads it (the field's name)."""


def _fit_layout(schema: Schema, data: dict[str, Any], strict: bool) -> dict[str, Any]:
    # The class changed since the payload was written: fill new fields from their
    # defaults, drop fields it no longer has (they stay in the log).
    fitted = {}
    for name in schema.names:
        if name in data:
            fitted[name] = data[name]
        elif name in schema.defaults:
            fitted[name] = schema.defaults[name]()
        elif strict:
            raise MissingField(name)
        else:
            fitted[name] = None
    return fitted


# -- events ----------------------------------------------------------------------------


def encode_event(event: Event) -> bytes:
    """The CBOR payload of one event, after checking every field against its annotation.

    Raises:
        SerializationError: naming `Type.field` of the first bad value; nothing is written.
    """
    if not isinstance(event, Event):
        raise SerializationError("event", event, "expected an instance of an ev.Event subclass")
    if isinstance(event, UnknownEvent):
        check_text(event.event_type, "UnknownEvent.event_type")
        return encode_value(event.data, what=f"UnknownEvent[{event.event_type}].data")
    schema = schema_of(type(event))
    values = event.__dict__
    fixed = None
    for name, check, expected in schema.checkers:
        value = values[name]
        if not check(value):
            scalar = _python_scalar(value)  # np.int64(3) in an int field is 3
            if scalar is value or not check(scalar):
                path = f"{type(event).__qualname__}.{name}"
                check_value(value, path)  # a Decimal NaN, nanoseconds: say so
                digits = declared_digits(type(event)).get(name)
                if digits is not None and isinstance(value, Decimal):
                    raise SerializationError(path, value, digits.refusal(value))
                hint = _NUMPY_HINTS.get(type(value).__name__, "") if _is_numpy_scalar(value) else ""
                raise SerializationError(path, value, f"expected {expected}, got {type(value).__name__}{hint}")
            fixed = fixed or {}
            fixed[name] = scalar
    if fixed:
        values = {**values, **fixed}
    for name, path in schema.walked:
        value = values[name]
        if type(value) not in _LEAVES:
            check_value(value, path)
    try:
        payload = cbor2.dumps(values, default=_default)
    except Exception as exc:
        raise _explain(values, type(event).__qualname__, exc) from None
    if fixed:
        event.__dict__.update(fixed)  # the event holds what the store holds, read before or after a flush
    return payload


def encode_events(events: list[Event]) -> list[bytes]:
    """``encode_event`` of each event, the same bytes, quicker for a batch of one class:
    each field is checked for a whole column at once (the set of its values' types) and
    the rows are written with no Python step between them.

    Raises:
        SerializationError: as ``encode_event``, naming the first bad value.
    """
    if len(events) < 4:
        return [encode_event(e) for e in events]
    kinds = set(map(type, events))
    cls = kinds.pop() if len(kinds) == 1 else None
    if cls is None or not issubclass(cls, Event) or issubclass(cls, UnknownEvent):
        return [encode_event(e) for e in events]
    payloads = _encode_checked(cls, list(map(_instance_dict, events)))
    # None: a value to convert or refuse, event by event (which names the first bad one).
    return payloads if payloads is not None else [encode_event(e) for e in events]


def encode_fields(cls: type[Event], values: list[dict[str, Any]]) -> list[bytes]:
    """The payloads of events of `cls` given as their fields (each a dict of every field by
    name, as an instance's ``__dict__``), without making the events: the bytes
    ``encode_events`` gives for the instances. For a writer that holds its events' fields
    already (an adapter of another library's stored events).

    Raises:
        SerializationError: as ``encode_event``, naming the first bad value.
    """
    payloads = _encode_checked(cls, values)
    if payloads is None:  # the instances, only to convert or name a bad value as encode_event does
        return [encode_event(_instance_of(cls, v)) for v in values]
    return payloads


def _instance_of(cls: type[Event], values: dict[str, Any]) -> Event:
    event = object.__new__(cls)
    object.__setattr__(event, "__dict__", dict(values))
    return event


def _encode_checked(cls: type[Event], values: list[dict[str, Any]]) -> list[bytes] | None:
    """The payloads of `values` (fields of events of `cls`), each field checked a column at
    a time; None when a value is not plainly of its field's type (converted or refused event
    by event, by the caller)."""
    schema = schema_of(cls)
    try:
        for name, accepted in schema.accepts:
            # The set of types of a checked field's values, in C loops (a column at a time).
            if not set(map(type, map(operator.itemgetter(name), values))).issubset(accepted):
                return None  # a wrong type, or a subclass (bool in an int field, a NumPy scalar)
        for name in schema.decimals:
            if not all(value is None or value.is_finite() for value in map(operator.itemgetter(name), values)):
                return None
        for name, digits in declared_digits(cls).items():
            if not all(value is None or digits.holds(value) for value in map(operator.itemgetter(name), values)):
                return None
        for name, path in schema.walked:
            for value in map(operator.itemgetter(name), values):
                if type(value) not in _LEAVES:
                    check_value(value, path)
        return _encode_each(values)
    except Exception:
        return None


def _encode_each(values: list[dict[str, Any]]) -> list[bytes]:
    """``cbor2.dumps`` of each value, the same bytes, by one encoder for all, in one C loop
    (a ``dumps`` call makes a new encoder, which costs more than encoding a small event)."""
    return list(map(cbor2.CBOREncoder(io.BytesIO(), default=_default).encode_to_bytes, values))


def decode_event(
    event_type: str,
    payload: bytes,
    registry: TypeRegistry,
    version: int = 1,
    upcasters: UpcasterRegistry = default_upcasters,
) -> Event:
    """The typed event for a stored payload of `event_type` written at schema `version`:
    upcast to the newest version, then fitted to its class; an ``UnknownEvent`` when no
    class is registered for the (upcast) type.

    Raises:
        SchemaError: a required field is missing after upcasting, or an upcaster failed.
    """
    return make_decoder(registry, upcasters)(event_type, payload, version)


class Decoder(typing.Protocol):
    """Decodes one stored event: its type, CBOR payload and schema version."""

    def __call__(self, event_type: str, payload: bytes, version: int = 1, /) -> Event: ...


def make_decoder(registry: TypeRegistry, upcasters: UpcasterRegistry = default_upcasters) -> Decoder:
    """A decoding function ``decode(event_type, payload, version=1)`` for bulk reads: each
    stored (type, version)'s plan (its class, or its upcasters) is worked out once.

    Raises (from the function):
        SchemaError: as ``decode_event``.
    """
    loads = cbor2.loads
    new = object.__new__
    setattr_ = object.__setattr__
    # event type -> (class, schema, field names, the class's version, whether the type has upcasters)
    plan: dict[str, tuple[type[Event], Schema, frozenset[str], int, bool] | None] = {}

    def decode(event_type: str, payload: bytes, version: int = 1, /) -> Event:
        try:
            entry = plan[event_type]
        except KeyError:
            cls = registry.resolve(event_type)
            if cls is None:
                entry = None
            else:
                schema = schema_of(cls)
                entry = (cls, schema, frozenset(schema.names), cls.schema_version, upcasters.has_type(event_type))
            plan[event_type] = entry
        data = loads(payload, tag_hook=_tag_hook)
        if entry is None:
            if upcasters.has_type(event_type):  # a renamed type: no class by its stored name
                return _upcast(event_type, version, data, registry, upcasters)
            return UnknownEvent(event_type=event_type, data=data)
        cls, schema, names, class_version, upcast = entry
        if upcast or version != class_version:
            return _upcast(event_type, version, data, registry, upcasters)
        if schema.converters or data.keys() != names:
            return _fitted(cls, schema, data, event_type, version)
        obj: Event = new(cls)
        setattr_(obj, "__dict__", data)
        return obj

    return decode


def _upcast(
    event_type: str, version: int, data: dict[str, Any], registry: TypeRegistry, upcasters: UpcasterRegistry
) -> Event:
    """The slow path: a stored version other than the class's, or a type with upcasters."""
    event_type, version, data = upcasters.upcast(event_type, version, data)
    cls = registry.resolve(event_type)
    if cls is None:
        return UnknownEvent(event_type=event_type, data=data)
    return _fitted(cls, schema_of(cls), data, event_type, version)


def _fitted(cls: type[Event], schema: Schema, data: dict[str, Any], event_type: str, version: int) -> Event:
    try:
        return typing.cast(Event, instance_from_fields(schema, data, strict=True))
    except MissingField as missing:
        (name,) = missing.args
        how = (
            f"stored at version {version}, read by {cls.__qualname__} version {cls.schema_version}: "
            if version != cls.schema_version
            else ""
        )
        raise SchemaError(
            event_type,
            version,
            f"{how}the stored event has no value for this required field and no upcaster gives one "
            f"(register one with ev.upcaster({event_type!r}, {version}, ...), or give the field a default)",
            field=name,
        ) from None


# -- classes by name ----------------------------------------------------------------------
#
# Stored data names a class (a queued command, a saga's state, a snapshot's state) by
# one label, ``module:QualifiedName``: the colon splits module from qualname, which both
# may hold dots. Older stores wrote ``module.QualifiedName`` (snapshots) and
# ``class:module:QualifiedName`` (queues); both still read.

_LEGACY_QUEUE_TAG = "class:"


def class_label(cls: type) -> str:
    """Returns the label stored data gives `cls`: ``module:QualifiedName``.

    >>> class_label(dict)
    'builtins:dict'
    """
    label = cls.__dict__.get("__eventador_label__")
    if label is None:
        label = f"{cls.__module__}:{cls.__qualname__}"
        with contextlib.suppress(TypeError):  # a builtin type cannot remember it: built each time
            type.__setattr__(cls, "__eventador_label__", label)
    return typing.cast(str, label)


def is_label_of(label: str, cls: type) -> bool:
    """Returns whether `label` names `cls`, in the current spelling or an older one."""
    if label == class_label(cls):
        return True
    module, qualname = cls.__module__, cls.__qualname__
    return label in (f"{module}.{qualname}", f"{_LEGACY_QUEUE_TAG}{module}:{qualname}")


def resolve_class(label: str) -> type | None:
    """Returns the class `label` names, importing its module if need be; None if not found.

    Reads ``module:QualifiedName`` (``class_label``) and the older spellings
    ``class:module:QualifiedName`` and ``module.QualifiedName``.

    >>> resolve_class("builtins:dict"), resolve_class("builtins.dict"), resolve_class("no.such:Class")
    (<class 'dict'>, <class 'dict'>, None)
    """
    label = label.removeprefix(_LEGACY_QUEUE_TAG)
    module_name, colon, qualname = label.partition(":")
    if colon:
        return import_class(module_name, qualname)
    # module.QualifiedName: the longest importable module prefix (qualnames have dots too).
    parts = label.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        found = import_class(".".join(parts[:cut]), ".".join(parts[cut:]))
        if found is not None:
            return found
    return None


# Builtin types their module does not name (a plain snapshot may hold None).
_NAMELESS: dict[tuple[str, str], type] = {("builtins", "NoneType"): type(None)}


def import_class(module_name: str, qualname: str) -> type | None:
    """Returns the class `qualname` of module `module_name`, importing the module if need be; None if absent."""
    nameless = _NAMELESS.get((module_name, qualname))
    if nameless is not None:
        return nameless
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except Exception:
            return None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, type) else None


# -- error paths -----------------------------------------------------------------------


def _explain(value: Any, path: str, exc: Exception) -> SerializationError:
    """Find the first value under `value` that cannot be encoded, for a useful message."""
    found = _find_bad(value, path)
    if found is not None:
        return found
    return SerializationError(path, value, f"cannot be encoded: {exc}")


def check_text(text: str, what: str) -> None:
    """Refuse text that is not valid Unicode (a lone surrogate, as from a bad decode).

    Raises:
        SerializationError: naming `what`.
    """
    flaw = text_flaw(text)
    if flaw is not None:
        raise SerializationError(what, text, flaw)


def _find_bad(value: Any, path: str) -> SerializationError | None:
    if isinstance(value, str):
        flaw = text_flaw(value)
        return None if flaw is None else SerializationError(path, value, flaw)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            return SerializationError(path, value, "naive datetime: pass an aware one, e.g. tzinfo=UTC")
        return None
    if value is None or isinstance(value, (*_NATIVE_SCALARS, enum.Enum, timedelta)):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**64) <= value < 2**64:
            return SerializationError(path, value, "integer out of the 64-bit range")
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return SerializationError(f"{path}[{k!r}]", k, "dict keys must be str")
            bad = _find_bad(k, f"{path}[{k!r}]") or _find_bad(v, f"{path}.{k}" if path else k)
            if bad is not None:
                return bad
        return None
    if isinstance(value, (list, tuple, set, frozenset)):
        for i, v in enumerate(value):
            bad = _find_bad(v, f"{path}[{i}]")
            if bad is not None:
                return bad
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            bad = _find_bad(getattr(value, f.name), f"{path}.{f.name}")
            if bad is not None:
                return bad
        return None
    return SerializationError(path, value, f"type {type(value).__name__} cannot be stored")
