"""Snapshots: when to take one (``SnapshotConfig``), and how a state becomes bytes and back.

A snapshot is a cache of a stream's folded state at one version. It is stored by
``store.snapshots`` (see ``eventador.store.snapshots``) with the state's type name
and a fingerprint of its field layout, so a reader can tell a usable snapshot
from a stale one. A snapshot that cannot be used (undecodable bytes, a changed
class, a type this process does not define) is never trusted: the reader warns
with ``SnapshotWarning`` and rebuilds the state from the events instead.

    config = ev.SnapshotConfig(event_count_threshold=100, max_snapshots_to_keep=3)
    account = BankAccount(persistence_id="acc-1", event_store=store, snapshot_config=config)
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import cbor2

from eventador.clock import Clock, SystemClock
from eventador.codec import (
    class_label,
    decode_value,
    encode_value,
    instance_from_fields,
    is_label_of,
    resolve_class,
    schema_of,
)
from eventador.errors import InvalidInputError, SerializationError
from eventador.store.snapshots import Snapshot

__all__ = [
    "SnapshotConfig",
    "SnapshotWarning",
    "decode_snapshot",
    "encode_snapshot",
    "snapshot_fingerprint",
    "state_type_name",
]

# Plain values (what a PersistentActor's get_snapshot_state may return, as the Dart
# version's {'value': 8} does) have no class layout to hash: their fingerprint is this marker.
_PLAIN = "plain"


class SnapshotWarning(UserWarning):
    """A snapshot could not be used or taken; the state came from the events instead.

    Recovery is still correct: a snapshot is only a cache of the fold.
    """


@dataclass(frozen=True, slots=True)
class SnapshotConfig:
    """Returns a snapshot policy: when to take a snapshot, how many to keep, when to compress.

    - `event_count_threshold`: take one once this many events were persisted since the
      last (None: never by count).
    - `time_threshold`: take one once this long has passed since the last (or since the
      actor started), if events were persisted meanwhile (None: never by time).
    - `max_snapshots_to_keep`: older snapshots of the stream are pruned after each one.
    - `enable_compression`, `compression_threshold`: zlib-compress encoded states of at
      least this many bytes (kept only when it is smaller).
    - `min_time_between_snapshots`: never two snapshots closer than this.

    Presets: ``SnapshotConfig.development`` (every 50 events), ``SnapshotConfig.production``
    (every 200 events).

    Raises:
        InvalidInputError: a threshold is not positive, or a time is not a timedelta.

    >>> SnapshotConfig(event_count_threshold=10).should_snapshot(events_since_snapshot=10)
    True
    """

    event_count_threshold: int | None = 100
    time_threshold: timedelta | None = None
    max_snapshots_to_keep: int = 3
    enable_compression: bool = True
    compression_threshold: int = 2048
    min_time_between_snapshots: timedelta | None = None

    development: ClassVar[SnapshotConfig]
    """Snapshots every 50 events, 3 kept."""
    production: ClassVar[SnapshotConfig]
    """Snapshots every 200 events, 3 kept."""

    def __post_init__(self) -> None:
        count = self.event_count_threshold
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise InvalidInputError(f"event_count_threshold must be an int >= 1 or None, got {count!r}")
        for name in ("time_threshold", "min_time_between_snapshots"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, timedelta) or value <= timedelta(0)):
                raise InvalidInputError(f"{name} must be a positive timedelta or None, got {value!r}")
        keep = self.max_snapshots_to_keep
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise InvalidInputError(f"max_snapshots_to_keep must be an int >= 1, got {keep!r}")
        size = self.compression_threshold
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInputError(f"compression_threshold must be an int >= 0 (bytes), got {size!r}")

    @property
    def uses_time(self) -> bool:
        """Returns whether the policy reads the clock (a time threshold or a minimum gap)."""
        return self.time_threshold is not None or self.min_time_between_snapshots is not None

    def should_snapshot(
        self,
        *,
        events_since_snapshot: int,
        last_snapshot_at: datetime | None = None,
        clock: Clock | None = None,
    ) -> bool:
        """Returns whether to take a snapshot now.

        `events_since_snapshot`: events persisted since the last snapshot (or since the
        stream began); `last_snapshot_at`: when the last one was taken, or when counting
        began (None: unknown, so time rules do not apply); `clock`: where "now" comes
        from (default the system clock; pass the store's for deterministic tests).
        Reads the clock only when the policy has a time rule. Costs no I/O.

        >>> from datetime import UTC
        >>> from eventador.clock import ManualClock
        >>> start = datetime(2026, 1, 1, tzinfo=UTC)
        >>> clock = ManualClock(start)
        >>> hourly = SnapshotConfig(event_count_threshold=None, time_threshold=timedelta(hours=1))
        >>> hourly.should_snapshot(events_since_snapshot=3, last_snapshot_at=start, clock=clock)
        False
        >>> clock.advance(timedelta(hours=1))
        ManualClock(2026-01-01T01:00:00+00:00)
        >>> hourly.should_snapshot(events_since_snapshot=3, last_snapshot_at=start, clock=clock)
        True
        """
        if events_since_snapshot <= 0:
            return False
        now: datetime | None = None
        if self.uses_time and last_snapshot_at is not None:
            now = (clock or SystemClock()).now()
            gap = self.min_time_between_snapshots
            if gap is not None and now - last_snapshot_at < gap:
                return False
        if self.event_count_threshold is not None and events_since_snapshot >= self.event_count_threshold:
            return True
        if self.time_threshold is None or last_snapshot_at is None:
            return False
        if now is None:
            now = (clock or SystemClock()).now()
        return now - last_snapshot_at >= self.time_threshold

    def __repr__(self) -> str:
        defaults = SnapshotConfig.__dataclass_fields__
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != defaults[f.name].default
        ]
        return f"SnapshotConfig({', '.join(changed)})"


SnapshotConfig.development = SnapshotConfig(event_count_threshold=50)
SnapshotConfig.production = SnapshotConfig(event_count_threshold=200)


# -- encoding ------------------------------------------------------------------------------


def state_type_name(cls: type) -> str:
    """Returns the name a snapshot records for states of `cls`: its ``codec.class_label``,
    ``module:QualifiedName`` (snapshots written before it say ``module.QualifiedName``)."""
    return class_label(cls)


def snapshot_fingerprint(cls: type, *, snapshot_version: int = 1) -> str:
    """Returns the fingerprint a snapshot of a `cls` value records (and a reader expects).

    For a dataclass it is the hash of its field layout (``schema_of(cls).fingerprint``):
    adding, removing, renaming or retyping a field makes old snapshots unusable. A
    `snapshot_version` other than 1 is appended, so bumping it retires every snapshot
    taken before (do that when ``apply_event`` changes what a state means).

    Raises:
        SerializationError: a field of `cls` has a type snapshots cannot store.
    """
    base = schema_of(cls).fingerprint if dataclasses.is_dataclass(cls) else _PLAIN
    return base if snapshot_version == 1 else f"{base}/v{snapshot_version}"


def encode_snapshot(
    stream_id: str,
    version: int,
    state: Any,
    *,
    taken_at: datetime,
    config: SnapshotConfig | None = None,
    snapshot_version: int = 1,
) -> Snapshot:
    """Returns the ``Snapshot`` of `state` (the stream folded up to `version`), ready to save.

    A dataclass state is stored as the CBOR map of its fields with its type name and
    fingerprint; any other value (a dict, a list, a number) as plain CBOR. Compressed
    with zlib when `config` says so and it pays. Costs one encode; no I/O.

    Raises:
        SerializationError: a value in `state` cannot be stored (names the field).

    >>> from datetime import UTC
    >>> encode_snapshot("counter-1", 8, {"value": 8}, taken_at=datetime(2026, 1, 1, tzinfo=UTC))
    Snapshot('counter-1', version=8, builtins:dict, 8 B)
    """
    config = config or _DEFAULT
    cls = type(state)
    if dataclasses.is_dataclass(state):
        fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
        data = encode_value(fields, what=cls.__qualname__)
    else:
        data = encode_value(state, what=f"snapshot of {stream_id!r}")
    compressed = False
    if config.enable_compression and len(data) >= config.compression_threshold:
        packed = zlib.compress(data, 1)
        if len(packed) < len(data):
            data, compressed = packed, True
    return Snapshot(
        stream_id=stream_id,
        version=version,
        state_type=state_type_name(cls),
        fingerprint=snapshot_fingerprint(cls, snapshot_version=snapshot_version),
        data=data,
        compressed=compressed,
        taken_at=taken_at,
    )


def decode_snapshot(snapshot: Snapshot, *, expected_type: type | None = None, snapshot_version: int = 1) -> Any:
    """Returns the state stored in `snapshot`, exactly as it was encoded.

    `expected_type`: the class the reader folds into (an aggregate's state class); a
    snapshot of any other type is refused. Without it, the type is found by its label
    (``codec.resolve_class``, which imports its module if need be). Costs one decode.

    Raises:
        SerializationError: the snapshot is not usable: its type is unknown or not the
            expected one, its fingerprint does not match the class as defined now, or
            its bytes do not decode. Callers then replay the events instead.
    """
    cls = expected_type if expected_type is not None else resolve_class(snapshot.state_type)
    if cls is None:
        where = f"snapshot of {snapshot.stream_id!r} at version {snapshot.version}"
        raise SerializationError(where, snapshot.state_type, "its state type is not defined in this process")
    return snapshot_decoder(cls, snapshot_version=snapshot_version)(snapshot)


def snapshot_decoder(cls: type, *, snapshot_version: int = 1) -> Callable[[Snapshot], Any]:
    """Returns ``decode_snapshot`` for snapshots expected to hold a `cls`, with the
    per-class work (name, fingerprint, schema) done once: bulk readers decode thousands."""
    name = state_type_name(cls)
    try:
        expected: str | None = snapshot_fingerprint(cls, snapshot_version=snapshot_version)
        unusable = ""
    except SerializationError as exc:
        expected, unusable = None, f"its class cannot be snapshotted: {exc}"
    schema = schema_of(cls) if dataclasses.is_dataclass(cls) and expected is not None else None
    names = frozenset(schema.names) if schema is not None else frozenset()

    def decode(snapshot: Snapshot) -> Any:
        if snapshot.state_type != name and not is_label_of(snapshot.state_type, cls):
            raise SerializationError(_where(snapshot), snapshot.state_type, f"it holds another type than {name}")
        if expected is None:
            raise SerializationError(_where(snapshot), snapshot.state_type, unusable)
        if snapshot.fingerprint != expected:
            raise SerializationError(
                _where(snapshot), snapshot.fingerprint,
                f"its fingerprint is not {expected}: the class changed since it was taken",
            )
        try:
            raw = zlib.decompress(snapshot.data) if snapshot.compressed else snapshot.data
            value = decode_value(raw)
        except (zlib.error, cbor2.CBORDecodeError, ValueError, TypeError, EOFError, OverflowError) as exc:
            raise SerializationError(_where(snapshot), snapshot.data[:16], f"its bytes do not decode: {exc}") from exc
        if schema is None:
            return _plain(cls, value, _where(snapshot))
        if not isinstance(value, dict) or value.keys() != names:
            raise SerializationError(
                _where(snapshot), type(value).__name__, f"it does not hold the fields of {cls.__qualname__}"
            )
        try:
            return instance_from_fields(schema, value)
        except Exception as exc:  # a converter of the codec refused a value
            raise SerializationError(_where(snapshot), snapshot.state_type, f"its fields do not decode: {exc}") from exc

    return decode


def _where(snapshot: Snapshot) -> str:
    return f"snapshot of {snapshot.stream_id!r} at version {snapshot.version}"


def _plain(cls: type, value: Any, where: str) -> Any:
    if cls in (tuple, frozenset, set) and isinstance(value, (list, tuple, set, frozenset)):
        return cls(value)
    if cls is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, cls):
        raise SerializationError(where, type(value).__name__, f"it does not hold a {cls.__name__}")
    return value


_DEFAULT = SnapshotConfig()
