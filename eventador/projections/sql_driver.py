"""The driver of an SqlProjection: each batch one DuckDB transaction, rebuilds blue/green.

A new projection, a changed definition and ``rebuild`` build the next version beside
the live one and swap (see ``eventador.projections.sql``); the work itself is the
``SqlEngine``'s, on the projection's own connection.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

from eventador import progress as _progress
from eventador.errors import ProjectionError
from eventador.projections.driver import Context, Driver
from eventador.projections.policies import Retry, describe
from eventador.projections.sql import SqlProjection
from eventador.projections.sql_engine import Build, SqlEngine, WindowFailed

__all__ = ["SqlDriver"]

CATCH_UP_ROUNDS = 3  # a build chases appends this many times before it swaps


class SqlDriver(Driver):
    """Moves one SqlProjection; `build_reason` says why a build is due (None: none is)."""

    kind = "sql"
    projection: SqlProjection

    def __init__(self, projection: SqlProjection, policy: Retry | Literal["stop", "skip"], ctx: Context) -> None:
        super().__init__(projection.name, projection, policy, ctx)
        self.engine: SqlEngine | None = None
        self.build_reason: str | None = None

    async def open(self) -> None:
        if self.engine is None:
            self.engine = SqlEngine(self.ctx.store, self.projection, clock=self.ctx.clock)
            self.projection._engine = self.engine
        self.build_reason = await self.ctx.call(self.engine.open)
        self.advance(self.engine.checkpoint)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
            self.projection._engine = None

    async def prepare(self) -> None:
        if self.build_reason is not None:
            await self._build()

    async def rebuild(self) -> None:
        self.error = None
        self.build_reason = "rebuild"
        await self._build()

    async def batch(self, target: int | None) -> bool:
        engine = self._engine()
        lo = engine.checkpoint
        visible = await self.ctx.call(partial(engine.visible, lo))
        upto = visible if target is None else min(target, visible)
        if lo >= upto:
            return False
        hi = engine.target(upto, self.ctx.batch_size)
        if self.state != "live":
            self.state = "catching up"
        await self._window(lambda: engine.step(hi), lo, hi, None)
        self.advance(engine.checkpoint)
        return True

    def _engine(self) -> SqlEngine:
        assert self.engine is not None, "open() first"
        return self.engine

    async def _window(self, attempt: Callable[[], None], lo: int, hi: int, build: Build | None) -> None:
        """Run `attempt` over (lo, hi] under the policy: retry, skip the failing events, or stop."""
        engine = self._engine()
        policy = self.policy
        failures = 0
        while True:
            try:
                await self.ctx.call(attempt)
                return
            except WindowFailed as exc:
                failed = exc
            failures += 1
            if not failed.permanent:
                if isinstance(policy, Retry) and failures < policy.max_attempts:
                    await self.ctx.pause(policy.delay(failures))
                    continue
                final = policy.then if isinstance(policy, Retry) else policy
                if final == "skip":
                    try:
                        await self.ctx.call(partial(engine.skip_failing, lo, hi, build=build, policy=describe(policy)))
                        return
                    except WindowFailed as exc:
                        failed = exc
            what = "stop" if failed.permanent else describe(policy)
            await self.ctx.call(partial(engine.record_stop, failed, attempts=failures, policy=what))
            raise self.failed(ProjectionError(
                self.name, f"apply_sql failed on the events at positions {lo + 1}..{hi}: {failed.error}"
            )) from failed.error

    async def _build(self) -> None:
        """Build the next version beside the live one, chase the appends, then swap."""
        engine = self._engine()
        ctx = self.ctx
        self.state = "rebuilding"
        try:
            build = await ctx.call(engine.begin_build)
        except ProjectionError as exc:
            raise self.failed(exc) from exc
        try:
            for _ in range(1 + CATCH_UP_ROUNDS):
                visible = await ctx.call(partial(engine.visible, build.position))
                while build.position < visible:
                    lo = build.position
                    hi = visible if ctx.batch_size is None else min(visible, lo + ctx.batch_size)
                    show = _progress.wanted(ctx.progress, hi - lo)

                    def attempt(hi: int = hi, show: bool = show) -> None:
                        engine.apply_build(build, hi, progress=show)

                    await self._window(attempt, lo, hi, build)
                if build.position >= ctx.store.last_position:
                    break
            await ctx.call(lambda: engine.finish_build(build))
        except BaseException:
            await ctx.call(lambda: engine.abandon_build(build))
            raise
        self.build_reason = None
        self.advance(engine.checkpoint)
        self.state = "catching up"
