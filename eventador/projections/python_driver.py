"""The driver of a Python Projection: its events, decoded, handed to ``handle`` in position order.

Events of its interested types are read in position order; after every `batch_size`
handled events (16,384 by default), and at the end, ``update_checkpoint(position)``
and the catalog row follow. Sync and async handlers alike.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Literal

import duckdb

from eventador import progress as _progress
from eventador.errors import ProjectionError, ProjectionNameError
from eventador.projections.checkpoints import add_checkpoint, read_checkpoint, record_error, set_checkpoint
from eventador.projections.driver import Context, Driver, maybe
from eventador.projections.policies import Retry, describe
from eventador.projections.python import Projection
from eventador.store.records import RecordedEvent

__all__ = ["PythonDriver"]

BATCH = 16_384


def _chunks(batches: Iterator[list[RecordedEvent]], size: int) -> Iterator[list[RecordedEvent]]:
    """The store's batches cut to at most `size` events (a checkpoint after each); empty ones dropped."""
    for batch in batches:
        for start in range(0, len(batch), size):
            yield batch[start : start + size] if len(batch) > size else batch


class PythonDriver(Driver):
    """Moves one Projection; `types`: the event types it reads (None: all); `handled`: events it took."""

    kind = "python"
    projection: Projection[Any]

    def __init__(
        self, name: str, projection: Projection[Any], policy: Retry | Literal["stop", "skip"], ctx: Context
    ) -> None:
        super().__init__(name, projection, policy, ctx)
        self.types = [t if isinstance(t, str) else t.event_type for t in projection.interested_event_types] or None
        self.handled = 0

    async def open(self) -> None:
        p = self.projection
        ctx = self.ctx
        con = ctx.connection()
        found = read_checkpoint(con, self.name)
        if found is not None and found[0] != "python":
            raise ProjectionNameError(self.name, f"a {found[0]} projection of that name has a checkpoint here")
        stored = found[1] if found is not None else 0
        if p.persistent:
            p._checkpoint = stored
            self.checkpoint = int(await maybe(p.get_checkpoint()))
        else:
            await maybe(p.reset())
            self.checkpoint = 0
            p._checkpoint = 0
        add_checkpoint(con, self.name, "python", ctx.clock.now())
        set_checkpoint(con, self.name, self.checkpoint, ctx.clock.now())
        ctx.notify()

    async def prepare(self) -> None:
        """Nothing: a Python projection has no build step."""

    def close(self) -> None:
        """Nothing: its checkpoints go through the runner's connection."""

    async def rebuild(self) -> None:
        p = self.projection
        self.error = None
        self.state = "rebuilding"
        await maybe(p.rebuild())
        self.checkpoint = 0
        self.handled = 0
        await maybe(p.update_checkpoint(0))
        set_checkpoint(self.ctx.connection(), self.name, 0, self.ctx.clock.now())

    async def batch(self, target: int | None) -> bool:
        last = self.ctx.store.last_position
        upto = last if target is None else min(target, last)
        if self.checkpoint >= upto:
            return False
        if self.state not in ("live", "rebuilding"):
            self.state = "catching up"
        await self._run(upto)
        return True

    async def _run(self, upto: int) -> None:
        p = self.projection
        ctx = self.ctx
        use_recorded = type(p).handle_recorded is not Projection.handle_recorded
        handle: Callable[[Any], Any] = p.handle_recorded if use_recorded else p.handle
        is_async = inspect.iscoroutinefunction(handle)
        chunk_size = ctx.batch_size or BATCH
        start = self.checkpoint
        batches = ctx.store.read_batches(from_position=start + 1, to_position=upto, event_types=self.types)
        shown = _progress.bar(upto - start, f"rebuild {self.name}", _progress.wanted(ctx.progress, upto - start))
        done = start
        try:
            for chunk in _chunks(batches, chunk_size):
                await self._chunk(chunk, handle, use_recorded, is_async)
                position = chunk[-1][2]
                if position < upto:
                    await self._checkpoint(position, final=False)
                shown.update(position - done)
                done = position
            await self._checkpoint(upto)
            shown.update(upto - done)
        finally:
            shown.close()

    async def _chunk(
        self, chunk: list[RecordedEvent], handle: Callable[[Any], Any], use_recorded: bool, is_async: bool
    ) -> None:
        i = 0
        n = len(chunk)
        handled = 0
        rest = chunk
        while i < n:
            rec = rest[0]
            try:
                if is_async:
                    for rec in rest:
                        result = handle(rec if use_recorded else rec[4])
                        if inspect.isawaitable(result):
                            result = await result
                        if result:
                            handled += 1
                elif use_recorded:
                    for rec in rest:
                        if handle(rec):
                            handled += 1
                else:
                    for rec in rest:
                        if handle(rec[4]):
                            handled += 1
                break
            except Exception as exc:
                i = chunk.index(rec, i)
                if await self._failure(rec, exc, handle, use_recorded):
                    handled += 1
                i += 1
                rest = chunk[i:]
        self.handled += handled

    async def _failure(
        self, rec: RecordedEvent, exc: Exception, handle: Callable[[Any], Any], use_recorded: bool
    ) -> bool:
        """Apply the policy to a handler error at `rec`; True if a retry handled it after all."""
        policy = self.policy
        attempts = 1
        if isinstance(policy, Retry):
            while attempts < policy.max_attempts:
                await self.ctx.pause(policy.delay(attempts))
                attempts += 1
                try:
                    return bool(await maybe(handle(rec if use_recorded else rec[4])))
                except Exception as again:
                    exc = again
            final = policy.then
        else:
            final = policy
        error = f"{type(exc).__name__}: {exc}"
        con = self.ctx.connection()
        now = self.ctx.clock.now()
        if final == "skip":
            con.execute("BEGIN")
            try:
                record_error(con, self.name, position=rec.position, stream_id=rec.stream_id,
                             event_type=rec.event_type, error=error, policy=describe(policy),
                             attempts=attempts, now=now)
                con.execute("COMMIT")
            except duckdb.Error:
                con.execute("ROLLBACK")
                raise
            return False
        await self._checkpoint(rec.position - 1)
        with contextlib.suppress(duckdb.Error):
            record_error(con, self.name, position=rec.position, stream_id=rec.stream_id, event_type=rec.event_type,
                         error=error, policy=describe(policy), attempts=attempts, now=now)
        raise self.failed(ProjectionError(
            self.name,
            f"handle() failed at position {rec.position} ({rec.event_type} in stream {rec.stream_id!r}): {error}",
        )) from exc

    async def _checkpoint(self, position: int, *, final: bool = True) -> None:
        """Move the checkpoint to `position` (all events up to it handled).

        The projection saves its read model with the position first: a crash between
        the two leaves the catalog behind, never ahead. A projection whose read model
        is in memory starts from 0 anyway, so between batches only the end of a run
        goes to the catalog (for status and the command line).
        """
        if position <= self.checkpoint:
            return
        p = self.projection
        await maybe(p.update_checkpoint(position))
        if final or p.persistent:
            set_checkpoint(self.ctx.connection(), self.name, position, self.ctx.clock.now())
        self.advance(position)
