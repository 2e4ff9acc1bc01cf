"""The durable queue (DuraQ in eventador for Dart): messages in DuckDB tables of the store's own database.

    qm = ev.QueueManager(store)
    qm.enqueue("emails", SendWelcome(user_id="u-1"))
    lease = qm.dequeue("emails", visibility_timeout=30)
    ...                       # do the work
    qm.ack(lease)             # or qm.nack(lease, error=exc): retried after a backoff

Delivery is at least once: a lease that is neither acked nor nacked within its
visibility timeout is delivered again, so consumers must tolerate repeats.
Ready messages come out first in, first out. A message that fails
``RetryPolicy.max_attempts`` deliveries moves to the dead letters, with the
reason; ``requeue`` brings it back.

Leases are honoured: a lease stands for one delivery. Once its message is delivered
again (its visibility timeout ran out), acked, nacked, dead-lettered or cancelled,
the lease is stale: ``ack`` returns False and ``nack`` returns "stale", and neither
changes anything, so a slow consumer never removes or delays a message that another
consumer now holds. Every delivery counts toward ``max_attempts``, whether it ends in
a nack or in a lease that runs out: a consumer that crashes holding a batch from
``dequeue_many`` spends one attempt of each message in it, including those it never
started (``release_orphaned_leases`` redelivers them sooner, still counted).

Cost model. A DuckDB commit costs a WAL fsync plus a few hundred microseconds
per statement, so one commit per message would cap a queue near a thousand
messages a second. Every write therefore goes through one committer thread per
manager, which takes all the operations submitted meanwhile (from any thread or
task) and applies them in one transaction with a fixed number of statements:
one INSERT for all enqueues, one DELETE for all acks, one UPDATE ... RETURNING
per dequeue. ``enqueue_many``, ``dequeue_many`` and ``ack_many`` put a whole
batch in one operation. Operations submitted at the same moment may be applied
in any order; each caller's own operations apply in the order it made them.

Durability: a call returns after its transaction committed to the store's
DuckDB database (``catalog.duckdb``, with its own write-ahead log) -- on disk
for stores on disk, in memory for in-memory stores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import logging
import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import duckdb

from eventador.backoff import backoff_delay, check_backoff, jittered
from eventador.clock import Clock
from eventador.codec import (
    class_label,
    decode_event,
    decode_value,
    encode_event,
    encode_value,
    instance_from_fields,
    resolve_class,
    schema_of,
)
from eventador.errors import (
    InvalidInputError,
    QueueError,
    SerializationError,
)
from eventador.messages import Event, Message, TypeRegistry, redefinitions
from eventador.queue.engine import Ack, Admin, Cancel, Claim, Enqueue, Nack, Op, QueueEngine
from eventador.store.records import datetime_to_micros, micros_to_datetime

if TYPE_CHECKING:
    import pandas as pd

    from eventador.store import EventStore

__all__ = [
    "DeadLetterHook",
    "Lease",
    "NackOutcome",
    "QueueManager",
    "RetryPolicy",
    "UnknownMessage",
    "decode_message",
    "encode_message",
]

log = logging.getLogger("eventador.queue")

T = TypeVar("T")
NackOutcome = Literal["retry", "dead", "stale"]
DeadLetterHook = Callable[["Lease", str], Iterable[tuple[str, Any]]]
"""Called as ``hook(lease, reason)`` when a message of its queue dies; returns
``(queue, message)`` pairs to enqueue in the same transaction as the dead-lettering."""

# -- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A queued message whose class this process cannot find; its fields are kept in `data`."""

    message_type: str
    data: Any


# A message type says what the body holds: "event:" + an event type ("event@N:" for an
# event class of schema version N > 1, so upcasters know what they read), or "class:"
# + a class label.
_CLASS_TAG = "class:"


def encode_message(message: Any, *, classes: dict[str, type] | None = None) -> tuple[str | None, bytes]:
    """Returns ``(message_type, body)``: how a queue stores `message`.

    Events are stored under ``event:`` and their registered type name, other
    dataclasses (commands) under ``class:`` and their ``codec.class_label``
    (``module:QualifiedName``), plain values (dicts, lists, str, ...) as they are.
    `classes`, when given, remembers the class under its type label (so classes
    that cannot be imported by name, e.g. defined in a function, decode in this process).

    Raises:
        SerializationError: a field or value cannot be stored (names the path).
    """
    if isinstance(message, Event):
        version = message.schema_version
        return ("event:" if version == 1 else f"event@{version}:") + message.event_type, encode_event(message)
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        cls = type(message)
        schema = schema_of(cls)
        values = {name: getattr(message, name) for name in schema.names}
        for name, check, expected in schema.checkers:
            if not check(values[name]):
                raise SerializationError(
                    f"{cls.__qualname__}.{name}",
                    values[name],
                    f"expected {expected}, got {type(values[name]).__name__}",
                )
        label = _CLASS_TAG + class_label(cls)
        if classes is not None:
            classes[label] = cls
        return label, encode_value(values, what=cls.__qualname__)
    return None, encode_value(message, what="message")


def decode_message(
    message_type: str | None, body: bytes, registry: TypeRegistry, *, classes: dict[str, type] | None = None
) -> Any:
    """Returns the message `encode_message` stored; an ``UnknownMessage`` when its class is not found."""
    if message_type is None:
        return decode_value(body)
    if message_type.startswith("event:"):
        return decode_event(message_type[6:], body, registry)
    if message_type.startswith("event@"):
        version, _, event_type = message_type[6:].partition(":")
        return decode_event(event_type, body, registry, int(version))
    data = decode_value(body)
    cls = classes.get(message_type) if classes is not None else None
    if cls is None or redefinitions.replaced(cls):  # not resolved yet, or its class was redefined since
        cls = _resolve(message_type)
        if cls is not None and classes is not None:
            classes[message_type] = cls  # resolved once per manager, not per message
    if cls is None or not isinstance(data, dict):
        return UnknownMessage(message_type.removeprefix(_CLASS_TAG), data)
    try:
        if issubclass(cls, Message):
            return instance_from_fields(schema_of(cls), data)
        schema = schema_of(cls)
        known = {k: v for k, v in data.items() if k in schema.names}
        for name, conv in schema.converters:
            if name in known:
                known[name] = conv(known[name])
        return cls(**known)
    except Exception:
        return UnknownMessage(message_type.removeprefix(_CLASS_TAG), data)


def _resolve(message_type: str) -> type | None:
    """The dataclass a ``class:`` message type names, imported if need be; None if not found."""
    cls = resolve_class(message_type.removeprefix(_CLASS_TAG))
    return cls if cls is not None and dataclasses.is_dataclass(cls) else None


# -- values ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed deliveries are retried: exponential backoff, capped, with jitter.

    After the n-th failed delivery the message waits ``initial_delay * multiplier**(n-1)``
    seconds (at most ``max_delay``); with `jitter` a uniformly random time between half
    of that and all of it, so consumers that failed together do not retry together.
    A message that failed ``max_attempts`` deliveries goes to the dead letters. The
    projections' ``ev.Retry`` speaks the same words.

    >>> RetryPolicy(jitter=False).delay(3)
    2.0
    """

    max_attempts: int = 5
    initial_delay: float = 0.5
    max_delay: float = 60.0
    jitter: bool = True
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        check_backoff(
            "RetryPolicy",
            max_attempts=self.max_attempts,
            initial_delay=self.initial_delay,
            max_delay=self.max_delay,
            multiplier=self.multiplier,
        )

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Returns the seconds to wait after the `failures`-th failed delivery (1 for the first);
        with `jitter`, drawn from `rng` (default: the ``random`` module)."""
        base = backoff_delay(
            failures, initial_delay=self.initial_delay, max_delay=self.max_delay, multiplier=self.multiplier
        )
        return jittered(base, rng) if self.jitter else base

    def backoff(self, failed: int, rng: random.Random | None = None) -> float:
        """The former name of ``delay`` (warns)."""
        warnings.warn("RetryPolicy.backoff() is now RetryPolicy.delay()", DeprecationWarning, stacklevel=2)
        return self.delay(failed, rng)


@dataclass(frozen=True, slots=True)
class Lease:
    """One delivery of a message: hand it back with ``ack`` (done) or ``nack`` (failed).

    `attempts` counts deliveries so far, this one included (1 the first time).
    """

    id: int
    queue: str
    message: Any
    attempts: int
    enqueued_at: datetime
    expires_at: datetime
    dedupe_key: str | None = None
    message_type: str | None = None
    last_error: str | None = None
    """Why the previous delivery failed (None on the first delivery)."""

    def __repr__(self) -> str:
        return f"Lease(id={self.id}, queue={self.queue!r}, attempts={self.attempts}, message={self.message!r:.120})"


# -- the manager ------------------------------------------------------------------------------------


class QueueManager:
    """Durable queues in the store's DuckDB database (see the module docstring for costs).

    `retry_policy` governs nacked deliveries; `clock` (default: the store's) decides
    delays, leases and backoffs, so a ``ManualClock`` makes them testable without
    sleeping; `rng` draws the jitter. Thread-safe; usable from asyncio through the
    ``*_async`` methods. Close it (or use ``with``) when done; closing the store
    closes it too.

    Raises:
        StoreClosedError: the store is closed.
        QueueError: the store is read-only (its queues live in the writer's database).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        retry_policy: RetryPolicy | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if getattr(store, "read_only", False):
            raise QueueError(
                "a read-only store has no queues: they live in the writer's database; "
                "open the store for writing (no other process may have it open)"
            )
        self.store = store
        self.retry_policy = retry_policy if retry_policy is not None else RetryPolicy()
        if not isinstance(self.retry_policy, RetryPolicy):
            raise InvalidInputError(f"retry_policy must be an ev.RetryPolicy, got {retry_policy!r}")
        self.clock: Clock = clock or store.clock
        self._rng = rng or random.Random()
        self._classes: dict[str, type] = {}
        self._engine = QueueEngine(
            store.connect(),
            clock=self.clock,
            max_attempts=lambda: self.retry_policy.max_attempts,
            backoff=lambda failed: self.retry_policy.delay(failed, self._rng),
            make_lease=self._lease,
            name=repr(self),
        )

    # -- enqueue ------------------------------------------------------------------------------

    def enqueue(
        self,
        queue: str,
        message: Any,
        *,
        delay: float | timedelta | None = None,
        dedupe_key: str | None = None,
    ) -> int:
        """Returns the id of the stored message, once it is committed.

        `delay` (seconds or a timedelta): not delivered before then. `dedupe_key`: if a
        message was ever enqueued on this queue with that key (even one since acked),
        nothing is added and its id is returned; keys are kept until
        ``forget_dedupe_keys``.

        Raises:
            SerializationError: `message` cannot be stored; nothing was enqueued.
            InvalidInputError: a bad queue name, delay or key.
        """
        keys = None if dedupe_key is None else [dedupe_key]
        return self.enqueue_many(queue, [message], delay=delay, dedupe_keys=keys)[0]

    def enqueue_many(
        self,
        queue: str,
        messages: Iterable[Any],
        *,
        delay: float | timedelta | None = None,
        dedupe_keys: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Returns the ids of the stored messages, in order, after one commit for all of them.

        Every message is encoded before anything is written: one that cannot be stored
        raises ``SerializationError`` and none is enqueued. `dedupe_keys`, when given,
        has one key (or None) per message; see ``enqueue``.
        """
        op = self._enqueue_op(queue, messages, delay=delay, dedupe_keys=dedupe_keys)
        return cast("list[int]", self._run([op])[0])

    async def enqueue_many_async(
        self,
        queue: str,
        messages: Iterable[Any],
        *,
        delay: float | timedelta | None = None,
        dedupe_keys: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Like ``enqueue_many``, without blocking the event loop."""
        op = self._enqueue_op(queue, messages, delay=delay, dedupe_keys=dedupe_keys)
        return cast("list[int]", (await self._run_async([op]))[0])

    def _enqueue_op(
        self,
        queue: str,
        messages: Iterable[Any],
        *,
        delay: float | timedelta | None,
        dedupe_keys: Sequence[str | None] | None,
    ) -> Enqueue:
        _check_queue(queue)
        batch = list(messages)
        keys: Sequence[str | None] = [None] * len(batch) if dedupe_keys is None else list(dedupe_keys)
        if len(keys) != len(batch):
            raise InvalidInputError(f"dedupe_keys has {len(keys)} keys for {len(batch)} messages")
        for key in keys:
            if key is not None and (not isinstance(key, str) or not key):
                raise InvalidInputError(f"a dedupe key must be a non-empty str or None, got {key!r}")
        delay_us = _micros_of(delay, "delay")
        items = []
        for message, key in zip(batch, keys, strict=True):
            message_type, body = self.encode(message)
            items.append((message_type, body, key, delay_us))
        return Enqueue(queue, items)

    # -- dequeue, ack, nack -------------------------------------------------------------------------

    def dequeue(self, queue: str, *, visibility_timeout: float | timedelta = 30.0) -> Lease | None:
        """Returns a lease on the oldest ready message of `queue`, or None when none is ready.

        The message stays invisible to other consumers for `visibility_timeout`; not
        acked or nacked by then, it is delivered again (``attempts`` one higher).
        A message whose leases expired ``max_attempts`` times goes to the dead letters
        instead of being delivered again (a consumer that crashes on it every time).
        """
        leases = self.dequeue_many(queue, 1, visibility_timeout=visibility_timeout)
        return leases[0] if leases else None

    def dequeue_many(self, queue: str, n: int, *, visibility_timeout: float | timedelta = 30.0) -> list[Lease]:
        """Returns leases on up to `n` ready messages, oldest first, claimed in one statement."""
        op = self._claim_op(queue, n, visibility_timeout)
        rows, until = self._run([op])[0]
        return [self._lease(queue, row, until) for row in rows]

    async def dequeue_many_async(
        self, queue: str, n: int, *, visibility_timeout: float | timedelta = 30.0
    ) -> list[Lease]:
        """Like ``dequeue_many``, without blocking the event loop."""
        op = self._claim_op(queue, n, visibility_timeout)
        rows, until = (await self._run_async([op]))[0]
        return [self._lease(queue, row, until) for row in rows]

    def _claim_op(self, queue: str, n: int, visibility_timeout: float | timedelta) -> Claim:
        _check_queue(queue)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInputError(f"n must be an int >= 1, got {n!r}")
        visibility_us = _micros_of(visibility_timeout, "visibility_timeout")
        if visibility_us <= 0:
            raise InvalidInputError(f"visibility_timeout must be positive, got {visibility_timeout!r}")
        return Claim(queue, n, visibility_us)

    def ack(self, lease: Lease) -> bool:
        """Returns True when the message was removed: done.

        False when the lease is stale and nothing changed: the message was acked, nacked,
        dead-lettered or cancelled meanwhile, or its lease ran out and it was delivered
        again (the new delivery's consumer may still be working on it, and its ack counts).
        A lease that ran out but whose message was not delivered again still acks.
        """
        return self.ack_many([lease]) == 1

    def ack_many(self, leases: Iterable[Lease]) -> int:
        """Returns how many of the leased messages were removed (stale leases do not count; see
        ``ack``), in one statement for all."""
        op = _ack_op(leases)
        return 0 if op is None else cast(int, self._run([op])[0])

    async def ack_many_async(self, leases: Iterable[Lease]) -> int:
        """Like ``ack_many``, without blocking the event loop."""
        op = _ack_op(leases)
        return 0 if op is None else cast(int, (await self._run_async([op]))[0])

    def nack(
        self, lease: Lease, error: BaseException | str | None = None, *, delay: float | timedelta | None = None
    ) -> NackOutcome:
        """Returns "retry" (delivered again after the backoff), "dead" or "stale".

        The delivery failed: after ``max_attempts`` failed deliveries the message moves
        to the dead letters with `error` as the reason; before that it is retried after
        the retry policy's backoff (or after `delay`, when given). "stale": the lease
        was superseded (delivered again after it ran out, acked, nacked, dead-lettered
        or cancelled meanwhile) and nothing changed.
        """
        return cast(NackOutcome, self._run([self._nack_op(lease, error, delay)])[0])

    async def nack_async(
        self, lease: Lease, error: BaseException | str | None = None, *, delay: float | timedelta | None = None
    ) -> NackOutcome:
        """Like ``nack``, without blocking the event loop."""
        return cast(NackOutcome, (await self._run_async([self._nack_op(lease, error, delay)]))[0])

    def _nack_op(self, lease: Lease, error: BaseException | str | None, delay: float | timedelta | None) -> Nack:
        if not isinstance(lease, Lease):
            raise InvalidInputError(f"nack takes a Lease from dequeue, got {lease!r}")
        return Nack(lease, _describe(error), None if delay is None else _micros_of(delay, "delay"))

    def cancel(self, queue: str, *, ids: Iterable[int] = (), dedupe_keys: Iterable[str] = ()) -> int:
        """Returns how many waiting or leased messages of `queue` it removed (by id or by dedupe key).

        Dead letters are kept; dedupe keys stay remembered.
        """
        _check_queue(queue)
        return cast(int, self._run([Cancel(queue, list(ids), list(dedupe_keys))])[0])

    # -- dead letters and housekeeping --------------------------------------------------------------

    def dead_letters(self, queue: str | None = None) -> pd.DataFrame:
        """Returns the dead letters (of `queue`, or of every queue), oldest first, as a DataFrame.

        Columns: id, queue, message_type, message (decoded), attempts, error,
        enqueued_at, died_at.
        """

        def read(cur: duckdb.DuckDBPyConnection, now: int) -> list[tuple[Any, ...]]:
            where = "dead" if queue is None else "dead AND queue = ?"
            return cur.execute(
                "SELECT id, queue, message_type, body, attempts, last_error, enqueued_at, died_at "
                f"FROM queue_messages WHERE {where} ORDER BY died_at, id",
                [] if queue is None else [queue],
            ).fetchall()

        rows = self._read(read)
        import pandas as pd

        return pd.DataFrame(
            {
                "id": pd.Series([r[0] for r in rows], dtype="int64"),
                "queue": pd.Series([r[1] for r in rows], dtype=object),
                "message_type": pd.Series([_type_label(r[2]) for r in rows], dtype=object),
                "message": pd.Series([self.decode(r[2], r[3]) for r in rows], dtype=object),
                "attempts": pd.Series([r[4] for r in rows], dtype="int64"),
                "error": pd.Series([r[5] for r in rows], dtype=object),
                "enqueued_at": pd.Series([micros_to_datetime(r[6]) for r in rows], dtype="datetime64[us, UTC]"),
                "died_at": pd.Series([micros_to_datetime(r[7]) for r in rows], dtype="datetime64[us, UTC]"),
            }
        )

    def requeue(self, message_id: int) -> None:
        """Returns once the dead letter `message_id` is ready again, with its attempts reset to 0.

        Raises:
            MessageNotFoundError: no dead letter has that id.
        """
        result = self._run([Admin("requeue", id=int(message_id))])[0]
        if isinstance(result, Exception):
            raise result

    def requeue_dead_letters(self, queue: str | None = None) -> int:
        """Returns how many dead letters (of `queue`, or all) it made ready again."""
        return cast(int, self._run([Admin("requeue_all", queue=queue)])[0])

    def purge_dead_letters(self, queue: str | None = None) -> int:
        """Returns how many dead letters (of `queue`, or all) it deleted for good."""
        return cast(int, self._run([Admin("purge", queue=queue)])[0])

    def release_orphaned_leases(self) -> int:
        """Returns how many leases of ended processes it released, so their messages are ready now.

        A process that died holding leases leaves its messages invisible until their
        visibility timeouts run out. Only one process at a time writes a store (its
        directory lock), so a lease taken by another process is an orphan: call this
        after opening the store to redeliver at once. ``attempts`` stays counted.
        """
        return cast(int, self._run([Admin("release")])[0])

    def forget_dedupe_keys(self, queue: str | None = None, *, older_than: float | timedelta) -> int:
        """Returns how many dedupe keys it forgot: those older than `older_than` whose message is gone.

        After that, enqueueing with such a key adds a new message.
        """
        before = datetime_to_micros(self.clock.now()) - _micros_of(older_than, "older_than")
        return cast(int, self._run([Admin("forget", queue=queue, before_us=before)])[0])

    def on_dead_letter(self, queue: str, hook: DeadLetterHook | None) -> None:
        """Calls ``hook(lease, reason)`` whenever a message of `queue` moves to the dead letters.

        The ``(queue, message)`` pairs the hook returns are enqueued in the same
        transaction, so a notification about a dead letter is never lost. Runs on the
        committer thread: keep it quick and free of other queue calls. None removes it.
        """
        _check_queue(queue)
        if hook is None:
            self._engine.set_hook(queue, None)
            return
        user_hook = hook

        def engine_hook(lease: Any, reason: str) -> list[tuple[str, str | None, bytes]]:
            out = []
            for target, message in user_hook(lease, reason):
                _check_queue(target)
                message_type, body = self.encode(message)
                out.append((target, message_type, body))
            return out

        self._engine.set_hook(queue, engine_hook)

    # -- looking at the queues --------------------------------------------------------------------

    def stats(self) -> pd.DataFrame:
        """Returns one row per queue: depth, delayed, in_flight, dead, oldest_age_seconds.

        depth: messages waiting (ready or delayed); delayed: those not ready yet;
        in_flight: leased and not expired; dead: dead letters; oldest_age_seconds:
        the age of the oldest message that is not dead (0 when there is none).
        """

        def read(cur: duckdb.DuckDBPyConnection, now: int) -> list[tuple[Any, ...]]:
            return cur.execute(
                """
                SELECT queue,
                    count(*) FILTER (WHERE NOT dead AND NOT (leased AND visible_at > $now)),
                    count(*) FILTER (WHERE NOT dead AND NOT leased AND visible_at > $now),
                    count(*) FILTER (WHERE NOT dead AND leased AND visible_at > $now),
                    count(*) FILTER (WHERE dead),
                    coalesce(($now - min(enqueued_at) FILTER (WHERE NOT dead)) / 1e6, 0.0)
                FROM queue_messages GROUP BY queue ORDER BY queue
                """,
                {"now": now},
            ).fetchall()

        rows = self._read(read)
        import pandas as pd

        return pd.DataFrame(
            {
                "queue": pd.Series([r[0] for r in rows], dtype=object),
                "depth": pd.Series([r[1] for r in rows], dtype="int64"),
                "delayed": pd.Series([r[2] for r in rows], dtype="int64"),
                "in_flight": pd.Series([r[3] for r in rows], dtype="int64"),
                "dead": pd.Series([r[4] for r in rows], dtype="int64"),
                "oldest_age_seconds": pd.Series([max(0.0, float(r[5])) for r in rows], dtype="float64"),
            }
        )

    def messages(self, queue: str | None = None) -> pd.DataFrame:
        """Returns the messages that are not dead (of `queue`, or all), in delivery order.

        Columns: id, queue, message_type, message, dedupe_key, attempts, state
        ("ready", "delayed" or "in_flight"), enqueued_at, visible_at.
        """

        def read(cur: duckdb.DuckDBPyConnection, now: int) -> tuple[int, list[tuple[Any, ...]]]:
            where = "NOT dead" if queue is None else "NOT dead AND queue = ?"
            rows = cur.execute(
                "SELECT id, queue, message_type, body, dedupe_key, attempts, leased, enqueued_at, visible_at "
                f"FROM queue_messages WHERE {where} ORDER BY queue, enqueued_at, id",
                [] if queue is None else [queue],
            ).fetchall()
            return now, rows

        now, rows = self._read(read)
        import pandas as pd

        def state(leased: bool, visible_at: int) -> str:
            if visible_at <= now:
                return "ready"
            return "in_flight" if leased else "delayed"

        return pd.DataFrame(
            {
                "id": pd.Series([r[0] for r in rows], dtype="int64"),
                "queue": pd.Series([r[1] for r in rows], dtype=object),
                "message_type": pd.Series([_type_label(r[2]) for r in rows], dtype=object),
                "message": pd.Series([self.decode(r[2], r[3]) for r in rows], dtype=object),
                "dedupe_key": pd.Series([r[4] for r in rows], dtype=object),
                "attempts": pd.Series([r[5] for r in rows], dtype="int64"),
                "state": pd.Series([state(r[6], r[8]) for r in rows], dtype=object),
                "enqueued_at": pd.Series([micros_to_datetime(r[7]) for r in rows], dtype="datetime64[us, UTC]"),
                "visible_at": pd.Series([micros_to_datetime(r[8]) for r in rows], dtype="datetime64[us, UTC]"),
            }
        )

    async def next_ready_in_async(self, queues: Sequence[str]) -> float | None:
        """Returns the seconds until a message of `queues` is ready (0: now), or None when they are empty."""
        wanted = list(queues)

        def read(cur: duckdb.DuckDBPyConnection, now: int) -> float | None:
            rows = cur.execute(
                "SELECT min(visible_at) FROM queue_messages WHERE NOT dead AND queue IN (SELECT unnest(?::VARCHAR[]))",
                [wanted],
            ).fetchall()
            first = rows[0][0] if rows else None
            return None if first is None else max(0.0, (first - now) / 1_000_000)

        return cast("float | None", await self._engine.submit_read_async(read))

    async def wait_for_messages(self, queues: Sequence[str], *, timeout: float) -> bool:
        """Returns True when this manager enqueued a ready message on one of `queues`, False after `timeout` s.

        Messages that others enqueue, and delayed ones coming due, do not wake it: poll
        with a timeout (``next_ready_in_async`` says how long to wait at most).
        """
        wake = asyncio.Event()
        self._engine.watch(queues, wake)
        try:
            await asyncio.wait_for(wake.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._engine.unwatch(queues, wake)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Finishes the operations already submitted, then releases the connection. Idempotent."""
        self._engine.close()

    @property
    def closed(self) -> bool:
        """Returns whether ``close()`` was called."""
        return self._engine.closed

    # -- for what is built on the queue (sagas): its operations, wake-ups and message encoding --

    async def submit_async(self, ops: list[Op]) -> list[Any]:
        """Returns one result per op, once `ops` (``eventador.queue.engine`` operations) are
        applied in one transaction with whatever else was submitted meanwhile."""
        return await self._engine.submit_async(ops)

    def watch(self, queues: Iterable[str], wake: asyncio.Event) -> None:
        """Sets `wake` whenever a message in one of `queues` may have become ready."""
        self._engine.watch(queues, wake)

    def unwatch(self, queues: Iterable[str], wake: asyncio.Event) -> None:
        """Stops setting `wake` for `queues`."""
        self._engine.unwatch(queues, wake)

    def encode(self, message: Any) -> tuple[str | None, bytes]:
        """Returns ``(message_type, body)`` as ``enqueue`` stores `message`; its class is
        remembered, so that one defined in a function decodes in this process too."""
        return encode_message(message, classes=self._classes)

    def decode(self, message_type: str | None, body: bytes, registry: TypeRegistry | None = None) -> Any:
        """Returns the message ``encode`` stored (event types looked up in `registry`,
        default the store's); an ``UnknownMessage`` when its class is not found."""
        return decode_message(message_type, bytes(body), registry or self.store.registry, classes=self._classes)

    def _run(self, ops: list[Op]) -> list[Any]:
        return cast("list[Any]", self._engine.wait(self._engine.submit(ops)))

    async def _run_async(self, ops: list[Op]) -> list[Any]:
        return await self._engine.submit_async(ops)

    def _read(self, read: Callable[[duckdb.DuckDBPyConnection, int], T]) -> T:
        return self._engine.wait(self._engine.submit_read(read))

    def __enter__(self) -> QueueManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = str(self.store.path) if getattr(self.store, "path", None) else "memory"
        closed = ", closed" if getattr(self, "_engine", None) is not None and self._engine.closed else ""
        return f"QueueManager({where}{closed})"

    def _repr_html_(self) -> str:
        if self.closed:
            return f"<p>{html.escape(repr(self))}</p>"
        stats = self.stats()
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
            for row in stats.itertuples(index=False)
        )
        head = "".join(f"<th>{html.escape(c)}</th>" for c in stats.columns)
        return f"<div><b>{html.escape(repr(self))}</b><table><tr>{head}</tr>{rows}</table></div>"

    def _lease(self, queue: str, row: tuple[Any, ...], until: int) -> Lease:
        mid, message_type, body, key, enqueued_at, attempts, last_error = row
        return Lease(
            id=mid,
            queue=queue,
            message=self.decode(message_type, body),
            attempts=attempts,
            enqueued_at=micros_to_datetime(enqueued_at),
            expires_at=micros_to_datetime(until),
            dedupe_key=key,
            message_type=_type_label(message_type),
            last_error=last_error,
        )


def _check_queue(queue: object) -> None:
    if not isinstance(queue, str) or not queue:
        raise InvalidInputError(f"a queue name must be a non-empty str, got {queue!r}")


def _micros_of(value: float | timedelta | None, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidInputError(f"{what} must be seconds (a number) or a timedelta, got {value!r}")
    if seconds < 0 or seconds != seconds:
        raise InvalidInputError(f"{what} must not be negative, got {value!r}")
    return round(seconds * 1_000_000)


def _ack_op(leases: Iterable[Lease]) -> Ack | None:
    """The ack of `leases`, each only while its delivery is the message's latest (None: no leases)."""
    held = []
    for lease in leases:
        if not isinstance(lease, Lease):
            raise InvalidInputError(f"expected a Lease from dequeue, got {lease!r}")
        held.append((lease.id, lease.attempts, datetime_to_micros(lease.expires_at)))
    return Ack([mid for mid, _, _ in held], leases=held) if held else None


def _describe(error: BaseException | str | None) -> str | None:
    if error is None or isinstance(error, str):
        return error
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _type_label(message_type: str | None) -> str | None:
    if message_type is None:
        return None
    return message_type.split(":", 1)[1] if ":" in message_type else message_type
