"""The queue's storage engine: its DuckDB tables, and one committer thread per manager.

Internal to ``eventador.queue`` (and the sagas built on it). Callers submit
*operations* (enqueue, claim, ack, nack, cancel, admin); the committer thread takes
every operation submitted meanwhile and applies them all in one transaction, with
one statement per kind of operation rather than per message: one INSERT for all
new messages, one DELETE for all acks, one UPDATE for all nacks, one
UPDATE ... RETURNING per claim. A transaction that conflicts with another
connection is retried from scratch; one that fails otherwise is split, so only
the operation at fault fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

import duckdb
import pyarrow as pa

from eventador.clock import Clock
from eventador.errors import MessageNotFoundError, QueueClosedError, QueueError, StoreClosedError
from eventador.store.records import datetime_to_micros

__all__ = ["Ack", "Admin", "Cancel", "Claim", "Enqueue", "Nack", "Op", "QueueEngine"]

log = logging.getLogger("eventador.queue")

T = TypeVar("T")
Row = tuple[Any, ...]
Encoded = tuple[str, str | None, bytes]  # (queue, message_type, body)
EngineHook = Callable[[Any, str], list[Encoded]]
"""Called with (lease, reason) as a message dies; returns messages to enqueue with it."""

# Leases taken by this process carry this token; a lease with another token was
# taken by a process that has since ended (the store's directory lock admits one
# writer process at a time), so ``release_orphaned_leases`` may hand it out again.
_process_token = ""


def _new_process_token() -> None:
    global _process_token
    _process_token = f"{os.getpid()}-{os.urandom(6).hex()}"


_new_process_token()
# A forked child (a forkserver's worker, say) is another process: it gets a token of its own.
os.register_at_fork(after_in_child=_new_process_token)
_ID_BLOCK = 1024  # ids reserved per sequence call (the sequence increments by this)
_SPARE_IDS = 64  # kept in hand before a transaction, for messages that dead-letter hooks add
_CONFLICT_RETRIES = 12
_SMALL = 16  # up to this many values go in an IN list, more in a list_contains
_LITERAL_ROWS = 16  # up to this many new messages go in as SQL text, more as an Arrow table
_US = 1_000_000

_SCHEMA = (
    f"CREATE SEQUENCE IF NOT EXISTS queue_message_ids START 1 INCREMENT BY {_ID_BLOCK}",
    """
    CREATE TABLE IF NOT EXISTS queue_messages (
        id BIGINT NOT NULL,
        queue VARCHAR NOT NULL,
        message_type VARCHAR,
        body BLOB NOT NULL,
        dedupe_key VARCHAR,
        enqueued_at BIGINT NOT NULL,   -- microseconds since the epoch, by the manager's clock
        visible_at BIGINT NOT NULL,    -- ready from then on; while leased, when the lease expires
        attempts INTEGER NOT NULL DEFAULT 0,
        leased BOOLEAN NOT NULL DEFAULT false,
        lease_owner VARCHAR,
        dead BOOLEAN NOT NULL DEFAULT false,
        died_at BIGINT,
        last_error VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS queue_dedupe (
        queue VARCHAR NOT NULL,
        dedupe_key VARCHAR NOT NULL,
        id BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (queue, dedupe_key)
    )
    """,
)

_NEW_ROWS = pa.schema(
    [
        ("id", pa.int64()),
        ("queue", pa.string()),
        ("message_type", pa.string()),
        ("body", pa.binary()),
        ("dedupe_key", pa.string()),
        ("enqueued_at", pa.int64()),
        ("visible_at", pa.int64()),
    ]
)
_NACK_COLUMNS = ("id", "visible_at", "dead", "died_at", "last_error")
_CLAIM_COLUMNS = "id, message_type, body, dedupe_key, enqueued_at, attempts, last_error"


# -- operations: what a caller submits; the committer applies many in one transaction -----------


@dataclass(slots=True)
class Enqueue:
    queue: str
    items: list[tuple[str | None, bytes, str | None, int]]  # (message_type, body, dedupe_key, delay_us)
    fresh: bool = False  # the caller knows its dedupe keys are new: no lookup (a conflict falls back to one)


@dataclass(slots=True)
class Claim:
    queue: str
    n: int
    visibility_us: int


@dataclass(slots=True)
class Ack:
    ids: list[int]
    count: bool = True  # the caller wants to know how many were still there
    # (id, attempts, lease expiry) of each lease: only the delivery that lease was for is
    # removed, never a later one (the lease ran out and another consumer holds the message now).
    leases: list[tuple[int, int, int]] | None = None


@dataclass(slots=True)
class Nack:
    lease: Any  # a Lease: its id, queue and attempts; handed to the dead-letter hook
    error: str | None
    delay_us: int | None


@dataclass(slots=True)
class Cancel:
    queue: str
    ids: list[int]
    keys: list[str]
    count: bool = True


@dataclass(slots=True)
class Admin:
    kind: Literal["requeue", "requeue_all", "purge", "release", "forget"]
    queue: str | None = None
    id: int = 0
    before_us: int = 0


Op = Enqueue | Claim | Ack | Nack | Cancel | Admin


@dataclass(slots=True, eq=False)
class _Job:
    ops: list[Op] | None
    read: Callable[[duckdb.DuckDBPyConnection, int], Any] | None
    future: Future[Any] | asyncio.Future[Any]  # asyncio futures are resolved on their own loop


@dataclass(slots=True)
class _Group:
    """What one transaction did, for the notifications after it commits."""

    now: int
    ready: set[str] = field(default_factory=set)
    follow_ups: list[Enqueue] = field(default_factory=list)


class QueueEngine:
    """The tables and the committer thread behind one ``QueueManager``."""

    def __init__(
        self,
        cur: duckdb.DuckDBPyConnection,
        *,
        clock: Clock,
        max_attempts: Callable[[], int],
        backoff: Callable[[int], float],
        make_lease: Callable[[str, Row, int], Any],
        name: str,
    ) -> None:
        self._cur = cur
        self.clock = clock
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._make_lease = make_lease
        self._name = name
        try:
            for statement in _SCHEMA:
                cur.execute(statement)
        except duckdb.Error as exc:
            cur.close()
            raise QueueError(f"cannot create the queue tables: {exc}") from exc
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._pending: list[_Job] = []
        self._draining = False
        self._closed = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="eventador-queue")
        self._thread_id: int | None = None
        self._ids: list[int] = []  # reserved, unused ids, ascending
        self.hooks: dict[str, EngineHook] = {}
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Finishes the operations already submitted, then releases the connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._executor.shutdown(wait=True)
        with contextlib.suppress(duckdb.Error):
            self._cur.close()

    def set_hook(self, queue: str, hook: EngineHook | None) -> None:
        with self._lock:
            if hook is None:
                self.hooks.pop(queue, None)
            else:
                self.hooks[queue] = hook

    def watch(self, queues: Iterable[str], wake: asyncio.Event) -> None:
        """Sets `wake` (on the running loop) whenever this manager makes a message of `queues` ready."""
        entry = (asyncio.get_running_loop(), wake)
        with self._lock:
            for q in queues:
                self._waiters.setdefault(q, set()).add(entry)

    def unwatch(self, queues: Iterable[str], wake: asyncio.Event) -> None:
        with self._lock:
            for q in queues:
                entries = self._waiters.get(q, set())
                for entry in [e for e in entries if e[1] is wake]:
                    entries.discard(entry)

    # -- submitting ---------------------------------------------------------------------------------

    def submit(self, ops: list[Op]) -> Future[Any]:
        future: Future[Any] = Future()
        self._enqueue_job(_Job(ops, None, future))
        return future

    def submit_read(self, read: Callable[[duckdb.DuckDBPyConnection, int], T]) -> Future[T]:
        future: Future[T] = Future()
        self._enqueue_job(_Job(None, read, future))
        return future

    async def submit_read_async(self, read: Callable[[duckdb.DuckDBPyConnection, int], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue_job(_Job(None, read, future))
        return await future

    def _enqueue_job(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise QueueClosedError(f"{self._name} is closed")
            self._pending.append(job)
            if not self._draining:
                self._draining = True
                self._executor.submit(self._drain)

    def wait(self, future: Future[T]) -> T:
        if threading.get_ident() == self._thread_id:
            raise QueueError("a dead-letter hook must not call its queue manager: return messages instead")
        return future.result()

    async def submit_async(self, ops: list[Op]) -> list[Any]:
        """Applies `ops` in one transaction; returns one result per op, without blocking the loop.

        The committer resolves the futures of one loop with one thread-safe call per
        transaction, not one per caller (wrapping concurrent futures costs more than the work).
        """
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._enqueue_job(_Job(ops, None, future))
        return await future

    # -- the committer thread ---------------------------------------------------------------------------

    def _drain(self) -> None:
        self._thread_id = threading.get_ident()
        while True:
            with self._lock:
                jobs, self._pending = self._pending, []
                if not jobs:
                    self._draining = False
                    return
            done: list[tuple[_Job, Any, BaseException | None]] = []
            writes = [j for j in jobs if j.ops is not None]
            if writes:
                self._commit(writes, done)
            for job in jobs:
                if job.read is not None:
                    try:
                        result = job.read(self._cur, datetime_to_micros(self.clock.now()))
                    except BaseException as exc:
                        done.append((job, None, self._translate(exc)))
                    else:
                        done.append((job, result, None))
            _resolve(done)

    def _commit(self, jobs: list[_Job], done: list[tuple[_Job, Any, BaseException | None]]) -> None:
        ops = [op for job in jobs for op in cast("list[Op]", job.ops)]
        try:
            results, group = self._transaction(ops)
        except BaseException as exc:
            if len(jobs) > 1:
                # One operation spoiled the shared transaction: apply each job alone, so
                # only the guilty one fails.
                for job in jobs:
                    self._commit([job], done)
                return
            fresh = [op for op in ops if isinstance(op, Enqueue) and op.fresh]
            if fresh and isinstance(exc, duckdb.ConstraintException):
                # A dedupe key said to be new was not (a retry of work that did commit):
                # look the keys up after all.
                for op in fresh:
                    op.fresh = False
                self._commit(jobs, done)
                return
            done.append((jobs[0], None, self._translate(exc)))
            return
        start = 0
        for job in jobs:
            count = len(cast("list[Op]", job.ops))
            done.append((job, results[start : start + count], None))
            start += count
        if group.ready:
            self._notify(group.ready)

    def _transaction(self, ops: list[Op]) -> tuple[list[Any], _Group]:
        needed = sum(len(op.items) for op in ops if isinstance(op, Enqueue)) + _SPARE_IDS
        last_conflict: Exception | None = None
        for attempt in range(_CONFLICT_RETRIES):
            self._reserve_ids(needed)
            group = _Group(datetime_to_micros(self.clock.now()))
            script = _Script(self._cur)
            try:
                results = self._apply(ops, group, script)
            except duckdb.TransactionException as exc:
                # Another connection wrote the same rows first: try again from scratch.
                self._rollback()
                last_conflict = exc
                time.sleep(0.0005 * 2**attempt * (1 + self._rng.random()))
                continue
            except BaseException:
                self._rollback()
                raise
            finally:
                script.unregister()
            return results, group
        raise QueueError(f"the queue kept conflicting with another connection: {last_conflict}")

    def _rollback(self) -> None:
        with contextlib.suppress(duckdb.Error):  # a failed COMMIT has already ended the transaction
            self._cur.execute("ROLLBACK")

    def _reserve_ids(self, needed: int) -> None:
        # Reserved in their own (committed) statement, never inside the group's
        # transaction: a rolled-back reservation could otherwise be handed out twice.
        while len(self._ids) < needed:
            blocks = -(-(needed - len(self._ids)) // _ID_BLOCK)
            rows = self._cur.execute("SELECT nextval('queue_message_ids') FROM range(?)", [blocks]).fetchall()
            for (start,) in sorted(rows):
                self._ids.extend(range(start, start + _ID_BLOCK))

    def _take_ids(self, n: int) -> list[int]:
        if n > len(self._ids):
            raise QueueError("internal: ran out of reserved message ids")  # _SPARE_IDS too small for the hooks
        taken, self._ids = self._ids[:n], self._ids[n:]
        return taken

    def _apply(self, ops: list[Op], group: _Group, script: _Script) -> list[Any]:
        """Applies `ops` in one transaction, in as few calls into DuckDB as it can.

        Each call into DuckDB gives up the GIL and must win it back, which costs up to
        the interpreter's switch interval while other threads run Python: statements
        whose results are not needed are batched into one call (``_Script``).
        Claims go first (their results are needed), then what needs reading (dedupe
        lookups, nacks, counted cancels, admin), then all the writes and the COMMIT.
        """
        results: list[Any] = [None] * len(ops)
        for i, op in enumerate(ops):
            if isinstance(op, Claim):
                results[i] = self._claim(op, group, script)
        nacks = [(i, op) for i, op in enumerate(ops) if isinstance(op, Nack)]
        if nacks:
            outcomes = self._apply_nacks([nack for _, nack in nacks], group, script)
            for (i, _), outcome in zip(nacks, outcomes, strict=True):
                results[i] = outcome
        for i, op in enumerate(ops):
            if isinstance(op, Cancel):
                results[i] = self._cancel(op, script)
            elif isinstance(op, Admin):
                results[i] = self._admin(op, group, script)
        enqueues = [(i, op) for i, op in enumerate(ops) if isinstance(op, Enqueue)]
        while group.follow_ups:  # messages dead-letter hooks asked for
            follow_ups, group.follow_ups = group.follow_ups, []
            self._insert(follow_ups, group, script)
        if enqueues:
            for (i, _), ids in zip(enqueues, self._insert([op for _, op in enqueues], group, script), strict=True):
                results[i] = ids
        while group.follow_ups:
            follow_ups, group.follow_ups = group.follow_ups, []
            self._insert(follow_ups, group, script)
        acks = [(i, op) for i, op in enumerate(ops) if isinstance(op, Ack)]
        silent = [ack for _, ack in acks if not ack.count]
        if silent:
            script.add(f"DELETE FROM queue_messages WHERE {_acked(silent)}")
        counted = [ack for _, ack in acks if ack.count]
        if counted:
            rows = script.query(
                f"DELETE FROM queue_messages WHERE {_acked(counted)} RETURNING id, attempts, visible_at"
            )
            gone = {r[0] for r in rows}
            gone_leases = set(rows)
            for i, ack in acks:
                if not ack.count:
                    results[i] = len(ack.ids)
                elif ack.leases is None:
                    results[i] = sum(1 for mid in ack.ids if mid in gone)
                else:
                    results[i] = sum(1 for lease in ack.leases if lease in gone_leases)
        else:
            for i, ack in acks:
                results[i] = len(ack.ids)
        script.commit()
        return results

    def _insert(self, ops: list[Enqueue], group: _Group, script: _Script) -> list[list[int]]:
        now = group.now
        known: dict[tuple[str, str], int] = {}
        wanted: dict[str, list[str]] = {}
        for op in ops:
            if op.fresh:
                continue  # keys the caller knows are new (a saga's sends): no lookup
            for item in op.items:
                if item[2] is not None:
                    wanted.setdefault(op.queue, []).append(item[2])
        for queue, keys in wanted.items():
            rows = script.query(
                f"SELECT dedupe_key, id FROM queue_dedupe WHERE queue = {_text(queue)} AND {_among('dedupe_key', keys)}"
            )
            for key, mid in rows:
                known[(queue, key)] = mid
        fresh = sum(len(op.items) for op in ops)
        pool = self._take_ids(fresh)
        rows_out: list[tuple[int, str, str | None, bytes, str | None, int, int]] = []
        out: list[list[int]] = []
        used = 0
        for op in ops:
            ids = []
            for message_type, body, key, delay_us in op.items:
                if key is not None and (op.queue, key) in known:
                    ids.append(known[(op.queue, key)])
                    continue
                mid = pool[used]
                used += 1
                if key is not None:
                    known[(op.queue, key)] = mid
                ids.append(mid)
                rows_out.append((mid, op.queue, message_type, body, key, now, now + delay_us))
                if delay_us <= 0:
                    group.ready.add(op.queue)
            out.append(ids)
        self._ids = pool[used:] + self._ids  # unused ids go back: this transaction did not take them
        if not rows_out:
            return out
        columns = ", ".join(_NEW_ROWS.names)
        keyed = [r for r in rows_out if r[4] is not None]
        if len(rows_out) <= _LITERAL_ROWS:
            values = ", ".join(
                f"({mid}, {_text(q)}, {_text(t)}, unhex('{b.hex()}'), {_text(k)}, {e}, {v})"
                for mid, q, t, b, k, e, v in rows_out
            )
            script.add(f"INSERT INTO queue_messages ({columns}) VALUES {values}")
            if keyed:
                dedupe = ", ".join(f"({_text(q)}, {_text(k)}, {mid}, {e})" for mid, q, _, _, k, e, _ in keyed)
                script.add(f"INSERT INTO queue_dedupe VALUES {dedupe}")
            return out
        # Many rows: an Arrow table is cheaper than parsing them from SQL text.
        name = script.register(
            pa.table(dict(zip(_NEW_ROWS.names, zip(*rows_out, strict=True), strict=True)), schema=_NEW_ROWS)
        )
        script.add(f"INSERT INTO queue_messages ({columns}) SELECT * FROM {name}")
        if keyed:
            script.add(
                f"INSERT INTO queue_dedupe SELECT queue, dedupe_key, id, enqueued_at FROM {name} "
                "WHERE dedupe_key IS NOT NULL"
            )
        return out

    def _apply_nacks(self, ops: list[Nack], group: _Group, script: _Script) -> list[str]:
        now = group.now
        current = {
            r[0]: (r[1], r[2], r[3] or not r[4])  # (attempts, lease expiry, no longer leased)
            for r in script.query(
                "SELECT id, attempts, visible_at, dead, leased FROM queue_messages WHERE "
                + _among("id", [op.lease.id for op in ops])
            )
        }
        updates: list[str] = []
        outcomes: list[str] = []
        dying: list[tuple[Any, str]] = []
        for op in ops:
            lease = op.lease
            row = current.get(lease.id)
            if row is None or row[2] or row[:2] != (lease.attempts, datetime_to_micros(lease.expires_at)):
                outcomes.append("stale")  # gone, or delivered again since: that delivery is not this lease's
                continue
            current[lease.id] = (*row[:2], True)  # a second nack of the same lease in this group is stale
            if lease.attempts >= self._max_attempts():
                reason = f"failed {lease.attempts} deliveries; last error: {op.error or 'unknown'}"
                dying.append((lease, reason))
                updates.append(f"({lease.id}, {now}, true, {now}, {_text(reason)})")
                outcomes.append("dead")
            else:
                delay = op.delay_us if op.delay_us is not None else int(self._backoff(lease.attempts) * _US)
                updates.append(f"({lease.id}, {now + max(0, delay)}, false, NULL::BIGINT, {_text(op.error)})")
                if delay <= 0:
                    group.ready.add(lease.queue)
                outcomes.append("retry")
        if updates:
            script.add(
                "UPDATE queue_messages SET visible_at = n.visible_at, leased = false, lease_owner = NULL, "
                "dead = n.dead, died_at = n.died_at, last_error = n.last_error "
                f"FROM (VALUES {', '.join(updates)}) AS n(id, visible_at, dead, died_at, last_error) "
                "WHERE queue_messages.id = n.id"
            )
        for lease, reason in dying:
            self._run_hook(lease, reason, group)
        return outcomes

    def _claim(self, op: Claim, group: _Group, script: _Script) -> tuple[list[tuple[Any, ...]], int]:
        now = group.now
        until = now + op.visibility_us
        limit = self._max_attempts()
        claimed: list[tuple[Any, ...]] = []
        wanted = op.n
        while wanted > 0:
            rows = script.query(
                f"""
                UPDATE queue_messages
                SET attempts = attempts + 1, leased = true, lease_owner = {_text(_process_token)}, visible_at = {until}
                WHERE id IN (
                    SELECT id FROM queue_messages
                    WHERE queue = {_text(op.queue)} AND NOT dead AND visible_at <= {now}
                    ORDER BY enqueued_at, id LIMIT {int(wanted)}
                )
                RETURNING {_CLAIM_COLUMNS}
                """
            )
            worn = [r for r in rows if r[5] > limit]
            claimed.extend(r for r in rows if r[5] <= limit)
            if not worn:
                break
            # Their leases ran out max_attempts times (a consumer that dies on them): they
            # go to the dead letters, and others are claimed in their place.
            self._bury_worn(op.queue, worn, now, until, group, script)
            wanted = op.n - len(claimed)
        claimed.sort(key=lambda r: (r[4], r[0]))
        return claimed, until

    def _bury_worn(self, queue: str, worn: list[Row], now: int, until: int, group: _Group, script: _Script) -> None:
        script.add(
            "UPDATE queue_messages SET dead = true, leased = false, lease_owner = NULL, attempts = attempts - 1, "
            f"died_at = {now}, last_error = 'lease expired after ' || (attempts - 1) || ' deliveries' "
            f"|| coalesce('; last error: ' || last_error, '') WHERE {_among('id', [r[0] for r in worn])}"
        )
        if queue in self.hooks:
            for r in worn:
                reason = f"lease expired after {r[5] - 1} deliveries" + (f"; last error: {r[6]}" if r[6] else "")
                self._run_hook(self._make_lease(queue, (*r[:5], r[5] - 1, r[6]), until), reason, group)

    def _run_hook(self, lease: Any, reason: str, group: _Group) -> None:
        hook = self.hooks.get(lease.queue)
        if hook is None:
            return
        try:
            for queue, message_type, body in hook(lease, reason):
                group.follow_ups.append(Enqueue(queue, [(message_type, body, None, 0)]))
        except Exception:
            log.exception("the dead-letter hook of queue %r failed for message %d", lease.queue, lease.id)

    def _cancel(self, op: Cancel, script: _Script) -> int:
        if not op.ids and not op.keys:
            return 0
        matches = f"{_among('id', op.ids)} OR {_among('dedupe_key', op.keys)}"
        where = f"queue = {_text(op.queue)} AND NOT dead AND ({matches})"
        if not op.count:
            script.add(f"DELETE FROM queue_messages WHERE {where}")
            return 0
        return len(script.query(f"DELETE FROM queue_messages WHERE {where} RETURNING id"))

    def _admin(self, op: Admin, group: _Group, script: _Script) -> Any:
        now = group.now
        queue_filter = "" if op.queue is None else f" AND queue = {_text(op.queue)}"
        if op.kind == "requeue":
            rows = script.query(
                "UPDATE queue_messages SET dead = false, leased = false, lease_owner = NULL, attempts = 0, "
                f"visible_at = {now}, died_at = NULL WHERE id = {int(op.id)} AND dead RETURNING queue"
            )
            if not rows:
                return MessageNotFoundError(op.id, "among the dead letters")
            group.ready.add(rows[0][0])
            return None
        if op.kind == "requeue_all":
            rows = script.query(
                "UPDATE queue_messages SET dead = false, leased = false, lease_owner = NULL, attempts = 0, "
                f"visible_at = {now}, died_at = NULL WHERE dead{queue_filter} RETURNING queue"
            )
            group.ready.update(r[0] for r in rows)
            return len(rows)
        if op.kind == "purge":
            return len(script.query(f"DELETE FROM queue_messages WHERE dead{queue_filter} RETURNING id"))
        if op.kind == "release":
            rows = script.query(
                f"UPDATE queue_messages SET leased = false, lease_owner = NULL, visible_at = {now} "
                f"WHERE leased AND NOT dead AND visible_at > {now} "
                f"AND lease_owner IS DISTINCT FROM {_text(_process_token)} RETURNING queue"
            )
            group.ready.update(r[0] for r in rows)
            return len(rows)
        return len(
            script.query(
                f"DELETE FROM queue_dedupe WHERE created_at < {int(op.before_us)}{queue_filter} "
                "AND id NOT IN (SELECT id FROM queue_messages) RETURNING id"
            )
        )

    def _notify(self, queues: set[str]) -> None:
        with self._lock:
            entries = {entry for q in queues for entry in self._waiters.get(q, ())}
        for loop, event in entries:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, duckdb.ConnectionException) or (
            isinstance(exc, duckdb.Error) and "closed" in str(exc).lower()
        ):
            return StoreClosedError(f"the store of {self._name} is closed: {exc}")
        if isinstance(exc, duckdb.Error):
            return QueueError(f"the queue database failed: {exc}")
        return exc


# -- helpers ------------------------------------------------------------------------------------------


class _Script:
    """Statements of one transaction, sent to DuckDB in as few calls as their results allow.

    ``add`` queues a statement whose result is not needed; ``query`` sends everything
    queued plus one statement and returns that statement's rows; ``commit`` sends the
    rest with the COMMIT. The transaction begins with the first call. Statements carry
    their values as SQL literals (``_text``, ``unhex``): several statements in one call
    cannot take parameters.
    """

    __slots__ = ("_begun", "_cur", "_pending", "_registered")

    def __init__(self, cur: duckdb.DuckDBPyConnection) -> None:
        self._cur = cur
        self._pending: list[str] = []
        self._begun = False
        self._registered: list[str] = []

    def add(self, sql: str) -> None:
        self._pending.append(sql)

    def query(self, sql: str) -> list[Row]:
        return self._cur.execute(self._flush(sql)).fetchall()

    def commit(self) -> None:
        self._cur.execute(self._flush("COMMIT"))

    def register(self, table: pa.Table) -> str:
        name = f"_queue_rows_{len(self._registered)}"
        self._cur.register(name, table)
        self._registered.append(name)
        return name

    def unregister(self) -> None:
        for name in self._registered:
            with contextlib.suppress(duckdb.Error):
                self._cur.unregister(name)
        self._registered = []

    def _flush(self, last: str) -> str:
        parts = self._pending
        if not self._begun:
            parts.insert(0, "BEGIN TRANSACTION")
            self._begun = True
        parts.append(last)
        self._pending = []
        return ";\n".join(parts)


def _text(value: str | None) -> str:
    """`value` as a SQL literal: NULL, a quoted string, or hex for one with NUL characters."""
    if value is None:
        return "NULL"
    if "\x00" in value:
        return f"decode(unhex('{value.encode().hex()}'))"
    return "'" + value.replace("'", "''") + "'"


def _acked(acks: list[Ack]) -> str:
    """A WHERE condition: the messages `acks` remove. An ack by lease removes the message
    only while that lease's delivery is its latest (same attempts, same expiry)."""
    ids = [mid for ack in acks if ack.leases is None for mid in ack.ids]
    held = [lease for ack in acks if ack.leases is not None for lease in ack.leases]
    parts = [_among("id", ids)] if ids else []
    if held:
        values = ", ".join(f"({int(mid)}, {int(attempts)}, {int(until)})" for mid, attempts, until in held)
        parts.append(f"(leased AND (id, attempts, visible_at) IN (VALUES {values}))")
    return f"NOT dead AND ({' OR '.join(parts) or 'false'})"


def _among(column: str, values: list[Any]) -> str:
    """A WHERE condition: `column` is one of `values` (ints or strings), as literals."""
    if not values:
        return "false"
    literals = ", ".join(str(int(v)) if isinstance(v, int) else _text(v) for v in values)
    if len(values) <= _SMALL:
        return f"{column} IN ({literals})"
    return f"list_contains([{literals}], {column})"


def _resolve(done: list[tuple[_Job, Any, BaseException | None]]) -> None:
    """Hands results to their callers: concurrent futures at once, asyncio ones per loop in one call."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
    for job, result, exc in done:
        future = job.future
        if isinstance(future, asyncio.Future):
            by_loop.setdefault(future.get_loop(), []).append((future, result, exc))
        else:
            _settle(future, result, exc)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits any more
            loop.call_soon_threadsafe(_settle_all, items)


def _settle_all(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in items:
        _settle(future, result, exc)


def _settle(future: Future[Any] | asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    # The caller may have given up (cancelled); the work is done either way, and the
    # committer thread must live on.
    if future.cancelled() or future.done():
        return
    with contextlib.suppress(Exception):
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)
