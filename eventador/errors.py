"""Every error eventador raises, under one root.

    EventadorError
    ├── InvalidInputError             an argument is wrong (also a ValueError)
    │   ├── CrossShardError           one atomic append names streams of several shards
    │   ├── ShardLayoutError          a sharded store's layout differs from the one asked for
    │   ├── EventLogColumnError       which column of an event log is the case, activity or time
    │   ├── EventLogRowError          a row of an event log cannot be imported (names row, column)
    │   └── SqlError                  a SQL query failed or was refused (also a duckdb.Error)
    │       └── SqlCorruptionError    SQL met a damaged data file (also a CorruptionError)
    ├── MessageError                  the shape of a message is wrong
    │   ├── RegistrationError         two classes claim one event type name
    │   ├── SchemaError               a stored event does not fit today's class (names type, version, field)
    │   └── SerializationError        a value cannot be encoded (names the field)
    │       └── NestingError          containers nested past the limit, or holding themselves
    ├── StoreError                    the event store refused or failed
    │   ├── ConcurrencyError          expected_version did not match: reload, retry
    │   │   └── CheckpointConflict    a checkpoint did not move forward (processed already)
    │   ├── StoreLockedError          another process writes this directory
    │   │   └── ShardLockedError      another process writes this shard of a sharded store
    │   ├── StoreClosedError          the store was closed
    │   ├── ReadOnlyError             a write on a read-only store
    │   │   └── ShardNotWritableError a stream's shard is written by another process
    │   ├── CorruptionError           a file on disk is damaged (names file, offset)
    │   ├── DiskFullError             the disk filled while a file was written (names it)
    │   └── StorePermissionError      the store's directory is not writable (names the file)
    ├── ActorError                    the actor system refused a request
    │   ├── ActorNotFoundError        no actor by that name
    │   ├── ActorStoppedError         the actor stopped before it could answer
    │   ├── ActorNameInUseError       spawn with a name already taken
    │   └── AskTimeoutError           ask() waited too long (also a TimeoutError)
    ├── CommandRejected               a business rule refused a command
    ├── ProjectionError               a projection's SQL or handler failed
    │   └── ProjectionNameError       a projection or view name is not an identifier, or is taken
    └── QueueError                    the durable queue refused an operation
        ├── MessageNotFoundError      no (dead) message with that id
        └── QueueClosedError          the queue manager was closed

Each error keeps its data as attributes, so callers can act on them without
parsing messages.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import duckdb


class EventadorError(Exception):
    """The root of every error eventador raises."""


class InvalidInputError(EventadorError, ValueError):
    """An argument is not acceptable; the message says which and why."""


class EventLogColumnError(InvalidInputError):
    """The column for a role of an event log (case id, activity, timestamp) is missing or unclear.

    `role` is the role, `parameter` the argument of ``import_dataframe`` that names
    its column, `columns` the log's columns, `reason` what is wrong.
    """

    def __init__(self, role: str, parameter: str, reason: str, columns: list[str]) -> None:
        super().__init__(
            f"{reason}; the columns are: {', '.join(map(repr, columns))}; name the {role} column with {parameter}=..."
        )
        self.role, self.parameter, self.reason, self.columns = role, parameter, reason, columns


class EventLogRowError(InvalidInputError):
    """A row of an event log cannot be imported; nothing was written.

    `row` is its 0-based position in the DataFrame, `label` its index label,
    `column` the column at fault, `reason` what is wrong.
    """

    def __init__(self, row: int, label: object, column: str, reason: str) -> None:
        super().__init__(f"df.loc[{label!r}], column {column!r}: {reason}")
        self.row, self.label, self.column, self.reason = row, label, column, reason


class SqlError(InvalidInputError, duckdb.Error):
    """A SQL query failed (parse, bind, run or fetch) or was refused; the message quotes DuckDB's.

    Also a ``duckdb.Error``, so code written against DuckDB catches it too.
    """


# -- messages ------------------------------------------------------------------


class MessageError(EventadorError):
    """A message class or value is not what eventador can store."""


class RegistrationError(MessageError):
    """Two different classes claim the same event type name."""

    def __init__(self, event_type: str, existing: type, new: type) -> None:
        super().__init__(
            f"event type {event_type!r} is already registered to "
            f"{existing.__module__}.{existing.__qualname__}; "
            f"give {new.__module__}.{new.__qualname__} another name with "
            f"class {new.__name__}(Event, event_type='...')"
        )
        self.event_type, self.existing, self.new = event_type, existing, new


class SchemaError(MessageError):
    """A stored event does not fit the class that reads it, and no upcaster makes it fit:
    a required field is missing, or an upcaster failed. Names the event type, the schema
    version it was stored with, the field and, where the reader knows it, the position."""

    def __init__(
        self, event_type: str, version: int, reason: str, *, field: str | None = None, position: int | None = None,
        where: str | None = None,
    ) -> None:
        place = f" at position {position}" if position is not None else f" at {where}" if where else ""
        what = f"field {field!r}: " if field is not None else ""
        super().__init__(f"{event_type} (schema version {version}){place}: {what}{reason}")
        self.event_type, self.version, self.reason, self.field, self.position = (
            event_type, version, reason, field, position
        )

    def at(self, position: int | None = None, *, where: str | None = None) -> SchemaError:
        """The same error, naming where the stored event is: its position, or `where` in words."""
        return SchemaError(
            self.event_type, self.version, self.reason, field=self.field, position=position, where=where
        )


class SerializationError(MessageError):
    """A value cannot be encoded; `path` names the field, as in `Deposited.amount`."""

    def __init__(self, path: str, value: Any, reason: str) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{path}: {reason} (got {shown})")
        self.path, self.value, self.reason = path, value, reason


class NestingError(SerializationError):
    """A value nests containers deeper than `limit` levels, or holds itself: refused, since
    it could be written but not read back. `path` names the field and where inside it."""

    def __init__(self, path: str, value: Any, limit: int) -> None:
        reason = (
            f"containers nested more than {limit} levels deep (the limit; a container that holds itself never ends)"
        )
        # No repr of the value: a deep one cannot be printed.
        MessageError.__init__(self, f"{path}: {reason} (got a {type(value).__name__})")
        self.path, self.value, self.reason, self.limit = path, value, reason, limit


# -- the store ------------------------------------------------------------------


class StoreError(EventadorError):
    """The event store refused a request or failed to carry it out."""


class ConcurrencyError(StoreError):
    """Another writer appended to the stream first: reload and retry."""

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        super().__init__(f"stream {stream_id!r} is at version {actual}, not {expected}")
        self.stream_id, self.expected, self.actual = stream_id, expected, actual


class CheckpointConflict(ConcurrencyError):
    """A checkpoint written with an append did not rise: nothing of the append was written.

    Checkpoint `name` is at `current`, and `position` is not above it: that upstream event
    was processed already, or another writer recorded a later one first.

    As a ``ConcurrencyError``, ``stream_id`` is the checkpoint's name, ``expected`` the
    refused position and ``actual`` the current one.
    """

    def __init__(self, name: str, position: int, current: int) -> None:
        StoreError.__init__(
            self, f"checkpoint {name!r} is at position {current}: {position} is not above it, nothing was written"
        )
        self.name, self.position, self.current = name, position, current
        self.stream_id, self.expected, self.actual = name, position, current


class StoreLockedError(StoreError):
    """Another process holds the store directory open for writing."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(
            f"store {path} is open for writing by {holder}; open it with read_only=True, or stop that process"
        )
        self.path, self.holder = path, holder


class StoreClosedError(StoreError):
    """The store was closed; open it again to use it."""


class ReadOnlyError(StoreError):
    """A write was attempted on a store opened read-only or a view of the past."""


class CorruptionError(StoreError):
    """A file of the store is damaged; `path` and `offset` say where."""

    def __init__(self, path: str, reason: str, offset: int | None = None) -> None:
        where = f"{path} at byte {offset}" if offset is not None else path
        super().__init__(f"{where}: {reason}")
        self.path, self.reason, self.offset = path, reason, offset


class DiskFullError(StoreError):
    """The disk (or the user's quota) filled up while the store wrote `path`; nothing
    acknowledged is lost. Free space; `advice` says what to do then."""

    def __init__(self, path: str, doing: str, advice: str = "") -> None:
        then = f", then {advice}" if advice else ""
        super().__init__(f"the disk is full: could not {doing} {path}; free space{then}")
        self.path, self.doing, self.advice = path, doing, advice


class LakeError(StoreError):
    """A lake table (``open_store(lake=...)``, ``open_lake``) cannot be reached, created or
    written; `uri` names it. The store's own log keeps every acknowledged event."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"lake {uri}: {reason}")
        self.uri, self.reason = uri, reason


class StorePermissionError(StoreError):
    """The store needs to write `path` and may not (permissions, or a read-only file system)."""

    def __init__(self, path: str, doing: str, reason: str) -> None:
        super().__init__(
            f"cannot {doing} {path}: {reason}; to read the store, open it with read_only=True; "
            "to write to it, run as a user who may write to its directory"
        )
        self.path, self.doing, self.reason = path, doing, reason


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_ALLOWED = (errno.EACCES, errno.EPERM, errno.EROFS)


def store_os_error(exc: BaseException, path: str | os.PathLike[str], doing: str, advice: str = "") -> StoreError:
    """The StoreError for `exc`, an OS error met while the store tried to `doing` `path`
    (e.g. "create", "write"): DiskFullError, StorePermissionError, or a StoreError that
    quotes it. Arrow's and DuckDB's I/O errors often carry no errno: their text is read."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in _DISK_FULL or any(os.strerror(c) in text for c in _DISK_FULL):
        return DiskFullError(str(path), doing, advice)
    if code in _NOT_ALLOWED or (code is None and any(os.strerror(c) in text for c in _NOT_ALLOWED)):
        return StorePermissionError(str(path), doing, os.strerror(code) if code else text)
    return StoreError(f"could not {doing} {path}: {text}" + (f"; {advice}" if advice else ""))


class SqlCorruptionError(CorruptionError, SqlError):
    """A SQL query met a damaged data file of the store; `path` names it."""


# -- sharded stores ---------------------------------------------------------------


class CrossShardError(InvalidInputError):
    """One atomic append (``append_many``, ``append_streams``) names streams that live in
    different shards; nothing was written. `shards` maps each shard to its streams there."""

    def __init__(self, shards: dict[int, list[str]]) -> None:
        parts = "; ".join(f"shard {s}: {', '.join(map(repr, ids))}" for s, ids in sorted(shards.items()))
        super().__init__(
            f"an atomic append cannot span shards ({parts}); nothing was written: append to each shard's "
            "streams separately, or keep streams that change together in one shard"
        )
        self.shards = shards


class ShardLayoutError(InvalidInputError):
    """A sharded store's recorded layout (`path`, its ``shards.json``) is not the one asked
    for, or cannot be read: a layout is fixed when the store is made."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class ShardLockedError(StoreLockedError):
    """Another process writes shard `shard` of a sharded store (`path` is its directory)."""

    def __init__(self, shard: int, path: str, holder: str) -> None:
        StoreError.__init__(
            self,
            f"shard {shard} ({path}) is open for writing by {holder}: each shard has one writer; "
            "open it read-only, or stop that process",
        )
        self.shard, self.path, self.holder = shard, path, holder


class ShardNotWritableError(ReadOnlyError):
    """An append to `stream_id`, whose shard `shard` this process opened read-only."""

    def __init__(self, stream_id: str, shard: int, root: str) -> None:
        super().__init__(
            f"stream {stream_id!r} lives in shard {shard} of {root}, which this process opened read-only; "
            f"append through the process that writes it (ev.open_shard({root!r}, {shard}))"
        )
        self.stream_id, self.shard, self.root = stream_id, shard, root


# -- actors ---------------------------------------------------------------------


class ActorError(EventadorError):
    """The actor system refused a request."""


class ActorNotFoundError(ActorError):
    """No live actor has that name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no actor named {name!r}")
        self.name = name


class ActorStoppedError(ActorError):
    """The actor is stopped (or stopped while the message waited)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"actor {name!r} is stopped")
        self.name = name


class ActorNameInUseError(ActorError):
    """spawn() was given a name a live actor already has."""

    def __init__(self, name: str) -> None:
        super().__init__(f"an actor named {name!r} is already running")
        self.name = name


class AskTimeoutError(ActorError, TimeoutError):
    """ask() got no answer within its timeout."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"actor {name!r} did not answer within {timeout:g} s")
        self.name, self.timeout = name, timeout


# -- domain, projections, queue --------------------------------------------------


class CommandRejected(EventadorError):
    """A business rule refused the command; nothing was persisted."""


class ProjectionError(EventadorError):
    """A projection's SQL or handler failed; `projection` names it."""

    def __init__(self, projection: str, reason: str) -> None:
        super().__init__(f"projection {projection!r}: {reason}")
        self.projection, self.reason = projection, reason


class ProjectionNameError(ProjectionError, InvalidInputError):
    """A projection or live view name is not an identifier, or is taken: choose another.

    `projection` is the name, `reason` says what it collides with; `kind` is
    ``"projection"`` or ``"view"``. Also a ``ValueError``.
    """

    def __init__(self, name: str, reason: str, *, kind: str = "projection") -> None:
        super().__init__(name, reason)
        self.args = (f"{kind} {name!r}: {reason}",)
        self.kind = kind


class QueueError(EventadorError):
    """The durable queue refused an operation."""


class MessageNotFoundError(QueueError):
    """No message with that id is where the operation needs it (e.g. among the dead letters)."""

    def __init__(self, message_id: int, where: str = "in the queue") -> None:
        super().__init__(f"no message with id {message_id} {where}")
        self.message_id, self.where = message_id, where


class QueueClosedError(QueueError):
    """The queue manager was closed (or its store was); make a new one."""
