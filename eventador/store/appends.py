"""Preparing appends: every check and every encoding that happens before the lock is taken."""

from __future__ import annotations

import functools
import itertools
import operator
import os
import random
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import cbor2

from eventador.codec import check_text, encode_events, encode_value
from eventador.errors import ConcurrencyError, InvalidInputError, SerializationError
from eventador.messages import Event, text_flaw
from eventador.store.reads import check_stream_id
from eventador.store.records import ANY, NO_STREAM, STREAM_EXISTS, ExpectedVersion, datetime_to_micros

__all__ = [
    "PreparedAppend",
    "check_checkpoint",
    "check_expected",
    "check_new_stream_id",
    "decode_columns",
    "frame_records",
    "joint_body",
    "prepare_append",
    "prepare_encoded",
    "verify_expected",
]

_BIG_ENDIAN = sys.byteorder == "big"  # the log's sizes are little-endian everywhere
assert array("I").itemsize == 4


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 2.5 µs more to build, once per append
class PreparedAppend:
    """One stream's append, checked and encoded, waiting for the lock: its columns, and
    those columns already encoded as the log will hold them (``logged``). Never changed
    once made."""

    stream_id: str
    expected: int | ExpectedVersion
    events: list[Event] | None  # None: given encoded (prepare_encoded), decoded when read
    types: list[str]
    ids: list[bytes]
    occurred: list[int | None]
    payloads: list[bytes]
    versions: list[int]  # each event's schema version
    metadata: bytes | None
    stream_type: str | None
    logged: bytes


_event_type = operator.attrgetter("event_type")
_schema_version = operator.attrgetter("schema_version")


def micros_or_none(when: object) -> int | None:
    if when is None:
        return None
    if not isinstance(when, datetime) or when.utcoffset() is None:
        raise InvalidInputError(f"occurred_at must be an aware datetime, got {when!r}")
    return datetime_to_micros(when)


_VERSION_MASK = int.from_bytes(bytes.fromhex("ffffffffffff0fff3fffffffffffffff"))
_VERSION_BITS = int.from_bytes(bytes.fromhex("00000000000040008000000000000000"))


# Event ids are unique, not secret: they come from a generator of this module's own,
# seeded from the OS. os.urandom would cost a system call per append and let go of the
# GIL around it, handing it to another appending thread each time (eight threads
# appended 15% faster without that). Its own instance, so that a user's random.seed()
# cannot make ids repeat; seeded again in a forked child, so parent and child differ.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def new_event_ids(n: int) -> bytes:
    """n random version-4 UUIDs, 16 bytes each, end to end (uuid.uuid4() costs more than
    the rest of an append). Version and variant are set on all n at once, as one integer."""
    if n == 1:
        return ((_ids.getrandbits(128) & _VERSION_MASK) | _VERSION_BITS).to_bytes(16)
    if n == 0:
        return b""
    mask, bits = _repeated(n)
    return ((_ids.getrandbits(128 * n) & mask) | bits).to_bytes(16 * n)


@functools.lru_cache(maxsize=32)
def _repeated(n: int) -> tuple[int, int]:
    """The version mask and bits, repeated for n ids end to end."""
    mask = _VERSION_MASK.to_bytes(16) * n
    bits = _VERSION_BITS.to_bytes(16) * n
    return int.from_bytes(mask), int.from_bytes(bits)


def split_ids(ids: bytes) -> list[bytes]:
    if len(ids) == 16:  # one event, the common append: no copy
        return [ids]
    if len(ids) <= 16 * _SPLIT_IN_ONE_CALL:
        return list(_splitter(len(ids) // 16).unpack(ids))
    return [ids[i : i + 16] for i in range(0, len(ids), 16)]


_SPLIT_IN_ONE_CALL = 1024  # ids a cached Struct cuts (its size grows with them)


@functools.lru_cache(maxsize=32)
def _splitter(n: int) -> struct.Struct:
    """Cuts n ids end to end into n bytes objects in one C call (a slice each costs 3x more)."""
    return struct.Struct("16s" * n)


def check_new_stream_id(stream_id: object) -> None:
    """A stream id an append may create: non-empty, not only whitespace, valid Unicode.

    Raises:
        InvalidInputError: naming what is wrong with it.
    """
    if type(stream_id) is str and stream_id and stream_id.isascii() and not stream_id.isspace():
        return  # the common case, in C: ASCII holds no surrogate
    check_stream_id(stream_id)
    assert isinstance(stream_id, str)
    if stream_id.isspace():
        raise InvalidInputError(f"stream_id must not be only whitespace, got {stream_id!r}")
    flaw = text_flaw(stream_id)
    if flaw is not None:
        raise InvalidInputError(f"stream_id is {flaw}, got {stream_id!r}")


def check_expected(expected: object) -> None:
    if isinstance(expected, ExpectedVersion):
        return
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise InvalidInputError(
            f"expected_version must be an int >= 0, ev.ANY, ev.NO_STREAM or ev.STREAM_EXISTS, got {expected!r}"
        )


def check_checkpoint(checkpoint: object) -> tuple[str, int] | None:
    """`checkpoint` as (name, position), checked: a non-empty name and a position >= 1 (or None).

    Raises:
        InvalidInputError: naming what is wrong with it.
    """
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, tuple) or len(checkpoint) != 2:
        raise InvalidInputError(f"checkpoint must be a (name, position) tuple, got {checkpoint!r}")
    name, position = checkpoint
    if not isinstance(name, str) or not name or name.isspace():
        raise InvalidInputError(f"a checkpoint's name must be a non-empty str, got {name!r}")
    check_text(name, "checkpoint name")
    if isinstance(position, bool) or not isinstance(position, int) or position < 1:
        raise InvalidInputError(f"checkpoint {name!r}: the position must be an int >= 1, got {position!r}")
    return name, position


def verify_expected(stream_id: str, expected: int | ExpectedVersion, current: int) -> None:
    if expected is ANY:
        return
    if expected is NO_STREAM:
        ok = current == 0
    elif expected is STREAM_EXISTS:
        ok = current > 0
    else:
        ok = current == expected
    if not ok:
        raise ConcurrencyError(stream_id, expected, current)


def prepare_append(
    stream_id: str,
    events: Event | Sequence[Event],
    expected_version: int | ExpectedVersion,
    metadata: dict[str, Any] | None,
    occurred_at: datetime | Sequence[datetime] | None,
    stream_type: str | None,
    *,
    logged: bool = True,
) -> PreparedAppend:
    """One stream's append, checked and encoded: everything that can fail before writing.
    `logged`: encode its columns for the log too (a store in memory has none)."""
    if isinstance(events, Event):
        batch = [events]
    elif isinstance(events, (str, bytes, dict)):  # iterable, but its items are no events
        raise SerializationError(
            "events",
            events,
            f"expected an ev.Event or a list of them, not a {type(events).__name__}: "
            "make the event first, e.g. Deposited(**data)",
        )
    else:
        try:
            batch = list(events)
        except TypeError:
            raise SerializationError("events", events, "expected an ev.Event or a list of them") from None
    check_new_stream_id(stream_id)
    check_expected(expected_version)
    payloads = encode_events(batch)
    types = list(map(_event_type, batch))
    meta = None
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidInputError(f"metadata must be a dict, got {type(metadata).__name__}")
    if metadata:
        meta = encode_value(metadata, what="metadata")
    if occurred_at is None or isinstance(occurred_at, datetime):
        occurred: list[int | None] = [micros_or_none(occurred_at)] * len(batch)
    else:
        occurred = [micros_or_none(t) for t in occurred_at]
        if len(occurred) != len(batch):
            raise InvalidInputError(f"occurred_at has {len(occurred)} times for {len(batch)} events")
    if stream_type is not None:
        if not isinstance(stream_type, str):
            raise InvalidInputError(f"stream_type must be a str, got {stream_type!r}")
        check_text(stream_type, "stream_type")
    versions = list(map(_schema_version, batch))
    ids = new_event_ids(len(batch))
    record = encode_columns(types, ids, occurred, payloads, versions) if logged else b""
    return PreparedAppend(
        stream_id, expected_version, batch, types, split_ids(ids), occurred, payloads, versions, meta, stream_type,
        record,
    )


def prepare_encoded(
    stream_id: str,
    event_type: str,
    schema_version: int,
    payloads: list[bytes],
    expected_version: int | ExpectedVersion,
    *,
    logged: bool = True,
) -> PreparedAppend:
    """One stream's append of events already encoded: `payloads` of `event_type` at
    `schema_version`, each what ``encode_event`` gives for its event (``codec.encode_fields``
    makes them without making the events). No instances are kept: a read of them decodes.

    Raises:
        InvalidInputError: a bad stream id or expected version.
    """
    check_new_stream_id(stream_id)
    check_expected(expected_version)
    check_text(event_type, "event_type")
    n = len(payloads)
    occurred: list[int | None] = [None] * n
    types, versions = [event_type] * n, [schema_version] * n
    ids = new_event_ids(n)
    record = encode_columns(types, ids, occurred, payloads, versions) if logged else b""
    return PreparedAppend(
        stream_id, expected_version, None, types, split_ids(ids), occurred, payloads, versions, None, None, record
    )


# -- an append's columns in the log ------------------------------------------------------------
#
# A log record is the CBOR array [first position, stream id, first version, recorded µs,
# stream type, metadata, columns]. Since log format 3 the columns are five values, not a
# row per event: the event type (one str when all share it), the ids end to end, the
# occurred times (None when none is set), the payload sizes (u32 little-endian) and the
# payloads end to end. Encoding 100 events is one short CBOR call, not 400 values.
# Events of a schema version above 1 add a sixth: the versions (one int when all
# share it), so the records of version-1 events are what they always were.


def encode_columns(
    types: list[str], ids: bytes, occurred: list[int | None], payloads: list[bytes], versions: list[int] | None = None
) -> bytes:
    """The columns of one append as the log holds them (a CBOR array of five, or six)."""
    versioned = versions is not None and versions.count(1) != len(versions)
    if len(payloads) == 1 and not versioned:  # the common case, written by hand: no list to build and walk
        single = payloads[0]
        when = _one_time(occurred[0])
        return b"".join(
            (
                b"\x85",
                _text(types[0]),
                b"\x50",
                ids,
                when,
                b"\x44",
                len(single).to_bytes(4, "little"),
                _bytes_head(len(single)),
                single,
            )
        )
    first = types[0] if types else ""
    sizes = array("I", map(len, payloads))
    if _BIG_ENDIAN:
        sizes.byteswap()
    columns: list[Any] = [
        first if types.count(first) == len(types) else types,
        ids,
        None if occurred.count(None) == len(occurred) else occurred,
        sizes.tobytes(),
        b"".join(payloads),
    ]
    if versioned:
        assert versions is not None
        columns.append(versions[0] if versions.count(versions[0]) == len(versions) else versions)
    return cbor2.dumps(columns)


@functools.lru_cache(maxsize=1024)
def _text(value: str) -> bytes:
    """An event type as a CBOR text string (the few types of a store, encoded once each)."""
    return cbor2.dumps(value)


def _one_time(micros: int | None) -> bytes:
    """The occurred column of one event: null, or [µs] (any time after 1970-01-01 01:12 is
    an 8-byte integer in CBOR)."""
    if micros is None:
        return b"\xf6"
    if 0x100000000 <= micros < 0x10000000000000000:
        return b"\x81\x1b" + micros.to_bytes(8)
    return cbor2.dumps([micros])


def _bytes_head(size: int, major: int = 0x40) -> bytes:
    """The head of a CBOR byte string of `size` bytes (major type 2; `major` 0x80: an array of `size` items)."""
    if size < 24:
        return bytes((major + size,))
    if size < 0x100:
        return bytes((major + 24,)) + size.to_bytes(1)
    if size < 0x10000:
        return bytes((major + 25,)) + size.to_bytes(2)
    if size < 0x100000000:
        return bytes((major + 26,)) + size.to_bytes(4)
    return bytes((major + 27,)) + size.to_bytes(8)


def decode_columns(
    columns: list[Any], *, log_format: int
) -> tuple[list[str], list[bytes], list[int | None], list[bytes], list[int]]:
    """(types, ids, occurred, payloads, schema versions) of one logged append, of any log format."""
    if log_format < 3:  # a row per event: (event type, id, occurred, payload)
        types, ids, occurred, payloads = (list(c) for c in zip(*columns, strict=True))
        return types, ids, occurred, payloads, [1] * len(payloads)
    if len(columns) == 6:
        kinds, joined_ids, times, size_bytes, joined, stored_versions = columns
    else:
        (kinds, joined_ids, times, size_bytes, joined), stored_versions = columns, 1
    sizes = array("I")
    sizes.frombytes(size_bytes)
    if _BIG_ENDIAN:
        sizes.byteswap()
    n = len(sizes)
    ends = list(itertools.accumulate(sizes))
    if len(joined_ids) != 16 * n or (ends[-1] if ends else 0) != len(joined):
        raise ValueError(f"columns of {n} events do not add up")
    payloads = [joined[end - size : end] for size, end in zip(sizes, ends, strict=True)]
    types = [kinds] * n if isinstance(kinds, str) else list(kinds)
    occurred = [None] * n if times is None else list(times)
    versions = [stored_versions] * n if isinstance(stored_versions, int) else list(stored_versions)
    if len(types) != n or len(occurred) != n or len(versions) != n:
        raise ValueError(f"columns of {n} events do not add up")
    return types, split_ids(joined_ids), occurred, payloads, versions


# -- a frame of the log ------------------------------------------------------------------------
#
# A frame's body is one append's record (the 7-array above), or the CBOR array [records,
# checkpoint]: the records of appends to several streams made together (``append_streams``,
# ``append_many``), in position order, and a checkpoint, [name, position] or null. One frame
# is written whole or not at all, so a crash keeps all of those streams' events and the
# checkpoint, or none. A frame may hold a checkpoint and no record.


def joint_body(records: Sequence[bytes], checkpoint: tuple[str, int] | None) -> bytes:
    """The body of one frame holding `records` (each an append's encoded 7-array) and `checkpoint`."""
    mark = b"\xf6" if checkpoint is None else cbor2.dumps(list(checkpoint))
    return b"".join((b"\x82", _bytes_head(len(records), 0x80), *records, mark))


def frame_records(body: object) -> tuple[list[list[Any]], tuple[str, int] | None]:
    """The appends' records (each a 7-array) of a frame's decoded body, and its checkpoint.

    Raises:
        ValueError: the body is neither shape.
    """
    if not isinstance(body, list):
        raise ValueError(f"a frame holds a {type(body).__name__}, not an array")
    if len(body) == 7:
        return [body], None
    if len(body) != 2 or not isinstance(body[0], list):
        raise ValueError(f"a frame of {len(body)} items is neither one append (7) nor several and a checkpoint (2)")
    records, mark = body
    if any(not isinstance(r, list) or len(r) != 7 for r in records):
        raise ValueError("a record of the frame is not an append's 7 items")
    if mark is None:
        return records, None
    if not isinstance(mark, list) or len(mark) != 2 or not isinstance(mark[0], str) or type(mark[1]) is not int:
        raise ValueError(f"the frame's checkpoint is not [name, position]: {mark!r}")
    return records, (mark[0], mark[1])
