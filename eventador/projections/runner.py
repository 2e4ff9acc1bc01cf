"""ProjectionRunner: feeds SQL and Python projections from a store, exactly once, catch-up then live.

    runner = ev.ProjectionRunner(store, [balances, UserStatisticsProjection()])
    runner.run_until_caught_up()        # synchronous; async projections too
    await runner.run()                  # catch up, then follow appends until `await runner.stop()`
    runner.status()                     # a DataFrame: checkpoint, lag, state, errors

The runner decides when each projection moves; a driver per kind decides how
(``eventador.projections.driver``):

- SqlProjection (``SqlDriver``): each batch is one DuckDB transaction: apply_sql over
  the new events and the checkpoint row. A new projection, a changed definition and
  ``rebuild`` build the next version beside the live one and swap (see
  ``eventador.projections.sql``).
- Projection (``PythonDriver``): events of its interested types are read (and decoded)
  in position order and handed to ``handle``; after every `batch_size` handled events,
  and at the end, ``update_checkpoint(position)`` and the catalog row follow.

``list_projections`` and ``rebuild_projection`` (for the command line) are in
``eventador.projections.admin``.

Live: each projection waits for the next position (``store.wait_for_position_async``:
woken by the append itself, no polling), then takes every visible event in one
batch. SQL batches run on worker threads, one connection per projection.

Errors, per projection (``on_error``): "stop" (the default: the checkpoint stays
before the failing event; ``run_until_caught_up`` raises ProjectionError, ``run``
leaves the others running and ``status()`` shows it), "skip" (the event and the
error go to the table ``projection_errors``), "retry" / ``ev.Retry(...)`` (again
after a backoff, then stop or skip). The runner's `sleep` and `clock` can be
replaced in tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import html
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import duckdb

from eventador._moved import forward
from eventador.clock import Clock
from eventador.errors import InvalidInputError, ProjectionError, ProjectionNameError, ReadOnlyError, StoreClosedError
from eventador.projections.checkpoints import ensure_tables, error_counts, read_definitions
from eventador.projections.driver import Context, Driver, Stopped
from eventador.projections.lag import Lag, human_duration, lag_behind
from eventador.projections.policies import ErrorPolicy, check_policy
from eventador.projections.python import Projection
from eventador.projections.python_driver import PythonDriver
from eventador.projections.sql import SqlProjection
from eventador.projections.sql_driver import SqlDriver

if TYPE_CHECKING:
    import pandas as pd

    from eventador.store.store import EventStore

__all__ = ["Lag", "ProjectionRunner", "human_duration"]

# list_projections and rebuild_projection moved to eventador.projections.admin (they use the runner).
__getattr__ = forward(__name__, "eventador.projections.admin")

R = TypeVar("R")
AnyProjection = SqlProjection | Projection[Any]


class ProjectionRunner:
    """Runs `projections` (SqlProjection and Projection objects) over `store`.

    `batch_size`: the most events in one batch: one transaction of a SQL projection
    (None: every new event at once, the fastest), or the events a Python projection
    handles between checkpoints (None: 16,384). `on_error`: per projection name, a
    policy that overrides the projection's own. `progress`: bars on long rebuilds
    (None: in a terminal or notebook, for 100k events or more). `sleep` (sync or
    async) and `clock`: for tests (defaults: asyncio.sleep, the store's clock).

    Raises:
        ProjectionNameError: two projections share a name.
        ReadOnlyError: a SqlProjection on a read-only store.
    """

    def __init__(
        self,
        store: EventStore,
        projections: Iterable[AnyProjection] | AnyProjection,
        *,
        batch_size: int | None = None,
        on_error: Mapping[str, ErrorPolicy] | None = None,
        progress: bool | None = None,
        sleep: Callable[[float], Awaitable[None] | None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(projections, (SqlProjection, Projection)):
            projections = [projections]
        if batch_size is not None and batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1 (or None), got {batch_size}")
        self.store = store
        self._ctx = Context(store, clock or store.clock, batch_size, progress, sleep or asyncio.sleep, self._notify)
        overrides = dict(on_error or {})
        self._drivers: dict[str, Driver] = {}
        for p in projections:
            driver = self._driver_for(p, overrides)
            if driver.name in self._drivers:
                raise ProjectionNameError(driver.name, "two projections of this runner have that name")
            self._drivers[driver.name] = driver
        unknown = set(overrides) - set(self._drivers)
        if unknown:
            raise InvalidInputError(f"on_error names projections this runner does not have: {sorted(unknown)}")
        self._opened = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop: asyncio.Event | None = None
        self._moved = threading.Condition()
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def _driver_for(self, p: object, overrides: dict[str, ErrorPolicy]) -> Driver:
        if isinstance(p, SqlProjection):
            if self.store.read_only:
                raise ReadOnlyError(f"SqlProjection {p.name!r} needs a writable store; this one is read-only")
            return SqlDriver(p, check_policy(overrides.get(p.name, p.on_error)), self._ctx)
        if isinstance(p, Projection):
            name = getattr(p, "projection_id", None)
            if not isinstance(name, str) or not name:
                raise ProjectionNameError(str(name), "a Projection needs a projection_id (a non-empty str)")
            return PythonDriver(name, p, check_policy(overrides.get(name, p.on_error)), self._ctx)
        raise InvalidInputError(f"a runner takes SqlProjection and Projection objects, got {p!r}")

    # -- the public surface ---------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        """The clock of checkpoint times and lag (the store's, unless one was given)."""
        return self._ctx.clock

    @property
    def batch_size(self) -> int | None:
        """The most events in one batch (see the class docs)."""
        return self._ctx.batch_size

    @batch_size.setter
    def batch_size(self, value: int | None) -> None:
        self._ctx.batch_size = value

    @property
    def progress(self) -> bool | None:
        """Bars on long rebuilds: True, False, or None (in a terminal or notebook, for 100k events or more)."""
        return self._ctx.progress

    @progress.setter
    def progress(self, value: bool | None) -> None:
        self._ctx.progress = value

    @property
    def projections(self) -> dict[str, AnyProjection]:
        """The projections by name."""
        return {name: d.projection for name, d in self._drivers.items()}

    @property
    def checkpoints(self) -> dict[str, int]:
        """Per projection: every event at or below this position is applied."""
        return {name: d.checkpoint for name, d in self._drivers.items()}

    def run_until_caught_up(self) -> None:
        """Apply every event up to the store's last position now; returns when all are there.

        Synchronous, for sync and async projections alike (async ones run on a private
        event loop; in a notebook cell that loop runs on a helper thread).

        Raises:
            ProjectionError: a projection with policy "stop" failed (the others went on);
                its checkpoint is before the failing event and ``status()`` shows the error.
        """
        self._refuse_in_own_loop("run_until_caught_up", "await runner.catch_up()")
        self._drive(self.catch_up())

    async def catch_up(self) -> None:
        """The async form of ``run_until_caught_up``."""
        if self._tasks:
            raise InvalidInputError("the runner is running live: it keeps up by itself")
        await self._open()
        target = self.store.last_position
        failures: list[ProjectionError] = []
        for d in self._drivers.values():
            try:
                await d.catch_up(target)
                d.state = "caught up"
            except Stopped as stopped:
                failures.append(stopped.error)
        if failures:
            raise failures[0]

    async def run(self) -> None:
        """Catch up, then apply new events as they are appended, until ``await stop()``.

        A projection that fails with policy "stop" stops alone; ``status()`` shows it.
        """
        if self._tasks:
            raise InvalidInputError("the runner is already running")
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ctx.threaded = True
        try:
            await self._open()
            for d in self._drivers.values():
                d.wake = asyncio.Event()
                self._tasks[d.name] = asyncio.create_task(self._live(d), name=f"projection {d.name}")
            await asyncio.gather(*self._tasks.values())
        finally:
            self._stop.set()
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self._tasks = {}
            self._ctx.threaded = False
            self._loop = None
            for d in self._drivers.values():
                for request in d.requests:
                    if not request.done():
                        request.set_exception(ProjectionError(d.name, "the runner stopped before the rebuild"))
                d.requests.clear()
                if d.state in ("live", "catching up", "rebuilding"):
                    d.state = "stopped"

    async def stop(self) -> None:
        """Stop ``run()``: batches under way finish (and commit) first."""
        if self._stop is not None:
            self._stop.set()
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def rebuild(self, name: str, *, progress: bool | None = None) -> None:
        """Rebuild projection `name` from the first event; returns when it has caught up.

        A SqlProjection is built beside the live version and swapped in one
        transaction: readers see the old table until then. A Python projection is
        ``rebuild()``-reset and replayed. While ``run()`` runs (in another thread's
        loop) the live task does it; in the same loop use ``await rebuild_async(name)``.

        Raises:
            ProjectionError: the rebuild failed; a SqlProjection keeps its old version.
        """
        self._refuse_in_own_loop("rebuild", "await runner.rebuild_async(name)")
        if self._tasks and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self.rebuild_async(name, progress=progress), self._loop).result()
            return
        self._drive(self.rebuild_async(name, progress=progress))

    async def rebuild_async(self, name: str, *, progress: bool | None = None) -> None:
        """The async form of ``rebuild``."""
        d = self._get(name)
        if self._tasks:
            loop = asyncio.get_running_loop()
            request: asyncio.Future[None] = loop.create_future()
            d.requests.append(request)
            assert d.wake is not None
            d.wake.set()
            await request
            return
        await self._open()
        saved = self.progress
        if progress is not None:
            self.progress = progress
        try:
            await d.rebuild()
            await d.catch_up(None)
            d.state = "caught up"
        except Stopped as stopped:
            raise stopped.error from None
        finally:
            self.progress = saved

    @property
    def lag(self) -> dict[str, Lag]:
        """Per projection: events not yet applied, and seconds since the oldest of them was recorded."""
        last = self.store.last_position
        now = self.clock.now()
        return {name: lag_behind(self.store, d.checkpoint, now, last) for name, d in self._drivers.items()}

    def wait_for_position(self, position: int, timeout: float | None = None) -> bool:
        """Block until every projection has applied the event at `position` (read your writes).

        Returns False on timeout, or as soon as a projection that has not got there
        failed (``status()`` says why). Another thread (or ``run()`` in a loop on one)
        must be moving them.
        """
        def ready() -> bool:
            drivers = self._drivers.values()
            return all(d.checkpoint >= position for d in drivers) or any(
                d.state == "failed" and d.checkpoint < position for d in drivers
            )

        with self._moved:
            self._moved.wait_for(ready, timeout)
            return all(d.checkpoint >= position for d in self._drivers.values())

    async def wait_for_position_async(self, position: int, timeout: float | None = None) -> bool:
        """The async form of ``wait_for_position``, for code in the loop ``run()`` runs in."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        waiter = (loop, wake)
        self._async_waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    wake.clear()
                    drivers = self._drivers.values()
                    if all(d.checkpoint >= position for d in drivers):
                        return True
                    if any(d.state == "failed" and d.checkpoint < position for d in drivers):
                        return False
                    await wake.wait()
        except TimeoutError:
            return False
        finally:
            self._async_waiters.discard(waiter)

    def status(self) -> pd.DataFrame:
        """One row per projection: name, kind, checkpoint, lag, lag_seconds, state, errors, last_error, version.

        A projection that caught up and has not been run since new events came is "behind".
        """
        import pandas as pd

        lag = self.lag
        con = self.store.connect()
        try:
            ensure_tables(con)
            errors = error_counts(con)
            versions = {d.name: d.version for d in read_definitions(con)}
        finally:
            con.close()
        rows = []
        for name, d in self._drivers.items():
            count, last_error = errors.get(name, (0, None))
            rows.append({
                "name": name,
                "kind": d.kind,
                "checkpoint": d.checkpoint,
                "lag": lag[name].events,
                "lag_seconds": lag[name].seconds,
                "state": "behind" if d.state == "caught up" and lag[name].events else d.state,
                "errors": count,
                "last_error": d.error or last_error,
                "version": versions.get(name),
            })
        columns = ["name", "kind", "checkpoint", "lag", "lag_seconds", "state", "errors", "last_error", "version"]
        return pd.DataFrame(rows, columns=columns).astype({"version": "Int64"})

    def close(self) -> None:
        """Close the runner's DuckDB connections (the read models stay in the store).

        Raises:
            InvalidInputError: ``run()`` is running; ``await stop()`` first.
        """
        if self._tasks:
            raise InvalidInputError("the runner is running: await runner.stop() before close()")
        for d in self._drivers.values():
            d.close()
        self._ctx.close()
        self._opened = False

    def __enter__(self) -> ProjectionRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(self._drivers)
        return f"ProjectionRunner({len(self._drivers)} projections: {names})"

    def _repr_html_(self) -> str:
        try:
            df = self.status()
        except (duckdb.Error, StoreClosedError) as exc:
            return f"<p>{html.escape(repr(self))}: {html.escape(str(exc))}</p>"
        head = "".join(f"<th>{c}</th>" for c in ("projection", "kind", "checkpoint", "lag", "state", "errors"))
        body = []
        for r in df.itertuples(index=False):
            lag = f"{r.lag:,} events" + (f" ({human_duration(cast(float, r.lag_seconds))})" if r.lag else "")
            color = "#b00" if r.state == "failed" else ("#080" if r.lag == 0 else "#a60")
            body.append(
                f"<tr><td><b>{html.escape(str(r.name))}</b></td><td>{r.kind}</td>"
                f"<td style='text-align:right'>{r.checkpoint:,}</td>"
                f"<td style='text-align:right;color:{color}'>{lag}</td><td>{html.escape(str(r.state))}</td>"
                f"<td style='text-align:right'>{r.errors}</td></tr>"
            )
        return f"<div><b>ProjectionRunner</b><table><tr>{head}</tr>{''.join(body)}</table></div>"

    # -- driving ------------------------------------------------------------------------------

    def _get(self, name: str) -> Driver:
        d = self._drivers.get(name)
        if d is None:
            raise InvalidInputError(f"no projection named {name!r} in this runner; it has {sorted(self._drivers)}")
        return d

    def _refuse_in_own_loop(self, what: str, instead: str) -> None:
        with contextlib.suppress(RuntimeError):
            if self._tasks and asyncio.get_running_loop() is self._loop:
                raise InvalidInputError(f"{what}() would block the loop run() runs in; use {instead}")

    @staticmethod
    def _drive(coro: Coroutine[Any, Any, R]) -> R:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        # Called from code a loop is running (a notebook cell): a loop of our own, on a helper thread.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="eventador-projections") as pool:
            return pool.submit(asyncio.run, coro).result()

    def _notify(self) -> None:
        """A checkpoint moved (or a projection failed): wake the waiters of both kinds."""
        with self._moved:
            self._moved.notify_all()
        for loop, wake in list(self._async_waiters):
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(wake.set)

    async def _open(self) -> None:
        if self._opened:
            return
        self._ctx.connection()  # makes the checkpoint tables, once, before any driver reads them
        for d in self._drivers.values():
            await d.open()
        self._opened = True

    async def _live(self, d: Driver) -> None:
        assert self._stop is not None and d.wake is not None
        stop = self._stop
        while not stop.is_set():
            try:
                if d.requests:
                    await self._serve_requests(d)
                if d.state != "failed":
                    await d.prepare()
                    if await d.batch(None):
                        continue
                    d.state = "live"
            except Stopped:
                pass  # recorded in the driver; this projection waits for a rebuild request or stop()
            except StoreClosedError:
                d.state = "stopped"
                return
            if not await self._wait(d):
                return

    async def _wait(self, d: Driver) -> bool:
        """Wait for the next event, a request or stop(); False when the runner should end."""
        assert self._stop is not None and d.wake is not None
        if d.requests:
            return True
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._stop.wait()),
            asyncio.ensure_future(d.wake.wait()),
        ]
        if d.state != "failed":
            waiters.append(asyncio.ensure_future(self.store.wait_for_position_async(d.checkpoint + 1)))
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        d.wake.clear()
        if self._stop.is_set():
            return False
        return not (len(waiters) == 3 and waiters[2] in done and waiters[2].result() is False)

    async def _serve_requests(self, d: Driver) -> None:
        requests, d.requests = d.requests, []
        try:
            await d.rebuild()
            while await d.batch(None):
                pass
        except Stopped as stopped:
            for r in requests:
                r.set_exception(stopped.error)
            raise
        except BaseException as exc:
            for r in requests:
                if not r.done():
                    r.set_exception(exc)
            raise
        for r in requests:
            r.set_result(None)
