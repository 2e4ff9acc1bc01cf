"""What the runner sees of a projection: a driver per kind behind one small interface.

The runner (``eventador.projections.runner``) knows when to move a projection: catch
up, follow live, rebuild on request. A driver knows how: ``SqlDriver`` moves an
SqlProjection by DuckDB transactions, ``PythonDriver`` hands a Projection its events.
Both share a ``Context``: the store, the clock, the batch size, the runner's own
connection, and how blocking work and backoffs run.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import duckdb

from eventador.clock import Clock
from eventador.errors import ProjectionError
from eventador.projections.checkpoints import ensure_tables
from eventador.projections.policies import Retry

if TYPE_CHECKING:
    from eventador.projections.python import Projection
    from eventador.projections.sql import SqlProjection
    from eventador.store.store import EventStore

__all__ = ["Context", "Driver", "Stopped", "maybe"]

R = TypeVar("R")


async def maybe(value: Any) -> Any:
    """`value`, awaited if it is awaitable (projection methods may be sync or async)."""
    return await value if inspect.isawaitable(value) else value


class Stopped(Exception):
    """A projection with policy "stop" (or a final stop) failed; `error` says where and why."""

    def __init__(self, error: ProjectionError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Context:
    """What the drivers of one runner share.

    `threaded`: while the runner runs live, blocking DuckDB work goes to worker
    threads (``call``); otherwise it runs inline. `notify` wakes whoever waits for a
    checkpoint to move.
    """

    store: EventStore
    clock: Clock
    batch_size: int | None
    progress: bool | None
    sleep: Callable[[float], Awaitable[None] | None]
    notify: Callable[[], None]
    threaded: bool = False
    _con: duckdb.DuckDBPyConnection | None = field(default=None, repr=False)

    async def call(self, fn: Callable[[], R]) -> R:
        """Run blocking DuckDB work: on a worker thread while live, inline otherwise."""
        if self.threaded:
            return await asyncio.to_thread(fn)
        return fn()

    async def pause(self, seconds: float) -> None:
        """Wait `seconds` (a retry's backoff) with the runner's sleep."""
        await maybe(self.sleep(seconds))

    def connection(self) -> duckdb.DuckDBPyConnection:
        """The runner's own connection (checkpoints and errors of Python projections), opened once."""
        if self._con is None:
            self._con = self.store.connect()
            ensure_tables(self._con)
        return self._con

    def close(self) -> None:
        if self._con is not None:
            with contextlib.suppress(duckdb.Error):
                self._con.close()
            self._con = None


class Driver(ABC):
    """Moves one projection and holds what the runner shows of it (checkpoint, state, error).

    `state`: "new", "catching up", "rebuilding", "caught up", "live", "failed" or
    "stopped". `requests`: rebuilds asked of the live task; `wake` wakes that task.
    """

    kind: ClassVar[Literal["sql", "python"]]

    def __init__(
        self,
        name: str,
        projection: SqlProjection | Projection[Any],
        policy: Retry | Literal["stop", "skip"],
        ctx: Context,
    ) -> None:
        self.name = name
        self.projection: SqlProjection | Projection[Any] = projection
        self.policy = policy
        self.ctx = ctx
        self.checkpoint = 0
        self.state = "new"
        self.error: str | None = None
        self.requests: list[asyncio.Future[None]] = []
        self.wake: asyncio.Event | None = None

    @abstractmethod
    async def open(self) -> None:
        """Load the stored checkpoint (and, for SQL, the definition); called once per runner."""

    @abstractmethod
    async def batch(self, target: int | None) -> bool:
        """Apply the next batch (up to `target`, or all visible); False when there was nothing to do.

        Raises:
            Stopped: the projection failed and its policy stops it.
        """

    @abstractmethod
    async def rebuild(self) -> None:
        """Start again from the first event (the batches that follow catch up)."""

    @abstractmethod
    async def prepare(self) -> None:
        """Do what is due before the next batch (an SqlProjection builds a new version)."""

    @abstractmethod
    def close(self) -> None:
        """Let go of what the driver holds open."""

    async def catch_up(self, target: int | None) -> None:
        """Apply every event up to `target` (None: all visible)."""
        self.error = None
        await self.prepare()
        while await self.batch(target):
            pass

    def advance(self, position: int) -> None:
        self.checkpoint = position
        self.ctx.notify()

    def failed(self, error: ProjectionError) -> Stopped:
        """Mark this projection failed; returns the exception to raise."""
        self.state = "failed"
        self.error = error.reason
        self.ctx.notify()
        return Stopped(error)
