"""ProjectionRunner: feeds SQL and Python projections from a store, exactly once, catch-up then live.

    runner = ev.ProjectionRunner(store, [balances, UserStatisticsProjection()])
    runner.run_until_caught_up()        # synchronous; async projections too
    await runner.run()                  # catch up, then follow appends until `await runner.stop()`
    runner.status()                     # a DataFrame: checkpoint, lag, state, errors

How each kind moves:

- SqlProjection: each batch is one DuckDB transaction: apply_sql over the new events
  and the checkpoint row. A new projection, a changed definition and ``rebuild`` build
  the next version beside the live one and swap (see ``eventador.projections.sql``).
- Projection (Python): events of its interested types are read (and decoded) in
  position order and handed to ``handle``; after every `batch_size` handled events,
  and at the end, ``update_checkpoint(position)`` and the catalog row follow.

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
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import duckdb
import pandas as pd

from eventador.clock import Clock
from eventador.errors import InvalidInputError, ProjectionError, ReadOnlyError, StoreClosedError
from eventador.projections import progress as _progress
from eventador.projections.checkpoints import (
    add_checkpoint,
    ensure_tables,
    error_counts,
    read_checkpoint,
    read_checkpoints,
    read_definition,
    read_definitions,
    record_error,
    set_checkpoint,
)
from eventador.projections.errors import ProjectionNameError
from eventador.projections.policies import ErrorPolicy, Retry, check_policy, describe
from eventador.projections.python import Projection
from eventador.projections.sql import SqlProjection
from eventador.projections.sql_engine import Build, SqlEngine, WindowFailed
from eventador.store.records import RecordedEvent

if TYPE_CHECKING:
    from eventador.store.store import EventStore

__all__ = ["Lag", "ProjectionRunner", "list_projections", "rebuild_projection"]

R = TypeVar("R")
AnyProjection = SqlProjection | Projection[Any]
_PY_BATCH = 16_384
_CATCH_UP_ROUNDS = 3  # a build chases appends this many times before it swaps


@dataclass(frozen=True, slots=True)
class Lag:
    """How far a projection is behind the store: events not yet applied, and how old the oldest is."""

    events: int
    seconds: float


class _Stopped(Exception):
    def __init__(self, error: ProjectionError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _State:
    name: str
    kind: Literal["sql", "python"]
    projection: AnyProjection
    policy: Retry | Literal["stop", "skip"]
    engine: SqlEngine | None = None
    checkpoint: int = 0
    state: str = "new"
    error: str | None = None
    handled: int = 0
    build_reason: str | None = None
    types: list[str] | None = None
    requests: list[asyncio.Future[None]] = field(default_factory=list)
    wake: asyncio.Event | None = None


def _chunks(batches: Iterator[list[RecordedEvent]], size: int) -> Iterator[list[RecordedEvent]]:
    """The store's batches cut to at most `size` events (a checkpoint after each); empty ones dropped."""
    for batch in batches:
        for start in range(0, len(batch), size):
            yield batch[start : start + size] if len(batch) > size else batch


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


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
        self.batch_size = batch_size
        self.progress = progress
        self.clock: Clock = clock or store.clock
        self._sleep = sleep or asyncio.sleep
        overrides = dict(on_error or {})
        self._states: dict[str, _State] = {}
        for p in projections:
            st = self._state_for(p, overrides)
            if st.name in self._states:
                raise ProjectionNameError(st.name, "two projections of this runner have that name")
            self._states[st.name] = st
        unknown = set(overrides) - set(self._states)
        if unknown:
            raise InvalidInputError(f"on_error names projections this runner does not have: {sorted(unknown)}")
        self._con: duckdb.DuckDBPyConnection | None = None
        self._opened = False
        self._threaded = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop: asyncio.Event | None = None
        self._moved = threading.Condition()
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def _state_for(self, p: object, overrides: dict[str, ErrorPolicy]) -> _State:
        if isinstance(p, SqlProjection):
            if self.store.read_only:
                raise ReadOnlyError(f"SqlProjection {p.name!r} needs a writable store; this one is read-only")
            policy = check_policy(overrides.get(p.name, p.on_error))
            return _State(p.name, "sql", p, policy)
        if isinstance(p, Projection):
            name = getattr(p, "projection_id", None)
            if not isinstance(name, str) or not name:
                raise ProjectionNameError(str(name), "a Projection needs a projection_id (a non-empty str)")
            policy = check_policy(overrides.get(name, p.on_error))
            types = [t if isinstance(t, str) else t.event_type for t in p.interested_event_types] or None
            return _State(name, "python", p, policy, types=types)
        raise InvalidInputError(f"a runner takes SqlProjection and Projection objects, got {p!r}")

    # -- the public surface ---------------------------------------------------------------

    @property
    def projections(self) -> dict[str, AnyProjection]:
        """The projections by name."""
        return {name: st.projection for name, st in self._states.items()}

    @property
    def checkpoints(self) -> dict[str, int]:
        """Per projection: every event at or below this position is applied."""
        return {name: st.checkpoint for name, st in self._states.items()}

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
        for st in self._states.values():
            try:
                await self._catch_up_one(st, target)
                st.state = "caught up"
            except _Stopped as stopped:
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
        self._threaded = True
        try:
            await self._open()
            for st in self._states.values():
                st.wake = asyncio.Event()
                self._tasks[st.name] = asyncio.create_task(self._live(st), name=f"projection {st.name}")
            await asyncio.gather(*self._tasks.values())
        finally:
            self._stop.set()
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self._tasks = {}
            self._threaded = False
            self._loop = None
            for st in self._states.values():
                for request in st.requests:
                    if not request.done():
                        request.set_exception(ProjectionError(st.name, "the runner stopped before the rebuild"))
                st.requests.clear()
                if st.state in ("live", "catching up", "rebuilding"):
                    st.state = "stopped"

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
        st = self._get(name)
        if self._tasks:
            loop = asyncio.get_running_loop()
            request: asyncio.Future[None] = loop.create_future()
            st.requests.append(request)
            assert st.wake is not None
            st.wake.set()
            await request
            return
        await self._open()
        saved = self.progress
        if progress is not None:
            self.progress = progress
        try:
            await self._rebuild(st)
            await self._catch_up_one(st, None)
            st.state = "caught up"
        except _Stopped as stopped:
            raise stopped.error from None
        finally:
            self.progress = saved

    @property
    def lag(self) -> dict[str, Lag]:
        """Per projection: events not yet applied, and seconds since the oldest of them was recorded."""
        last = self.store.last_position
        now = self.clock.now()
        out = {}
        for name, st in self._states.items():
            behind = max(0, last - st.checkpoint)
            seconds = 0.0
            if behind:
                first = next(iter(self.store.read_all(from_position=st.checkpoint + 1,
                                                      to_position=st.checkpoint + 1)), None)
                if first is not None:
                    seconds = max(0.0, (now - first.recorded_at).total_seconds())
            out[name] = Lag(behind, seconds)
        return out

    def wait_for_position(self, position: int, timeout: float | None = None) -> bool:
        """Block until every projection has applied the event at `position` (read your writes).

        Returns False on timeout, or as soon as a projection that has not got there
        failed (``status()`` says why). Another thread (or ``run()`` in a loop on one)
        must be moving them.
        """
        def ready() -> bool:
            states = self._states.values()
            return all(st.checkpoint >= position for st in states) or any(
                st.state == "failed" and st.checkpoint < position for st in states
            )

        with self._moved:
            self._moved.wait_for(ready, timeout)
            return all(st.checkpoint >= position for st in self._states.values())

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
                    states = self._states.values()
                    if all(st.checkpoint >= position for st in states):
                        return True
                    if any(st.state == "failed" and st.checkpoint < position for st in states):
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
        lag = self.lag
        con = self.store.connect()
        try:
            ensure_tables(con)
            errors = error_counts(con)
            versions = {d.name: d.version for d in read_definitions(con)}
        finally:
            con.close()
        rows = []
        for name, st in self._states.items():
            count, last_error = errors.get(name, (0, None))
            rows.append({
                "name": name,
                "kind": st.kind,
                "checkpoint": st.checkpoint,
                "lag": lag[name].events,
                "lag_seconds": lag[name].seconds,
                "state": "behind" if st.state == "caught up" and lag[name].events else st.state,
                "errors": count,
                "last_error": st.error or last_error,
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
        for st in self._states.values():
            if st.engine is not None:
                st.engine.close()
                st.engine = None
                assert isinstance(st.projection, SqlProjection)
                st.projection._engine = None
        if self._con is not None:
            with contextlib.suppress(duckdb.Error):
                self._con.close()
            self._con = None
        self._opened = False

    def __enter__(self) -> ProjectionRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(self._states)
        return f"ProjectionRunner({len(self._states)} projections: {names})"

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

    def _get(self, name: str) -> _State:
        st = self._states.get(name)
        if st is None:
            raise InvalidInputError(f"no projection named {name!r} in this runner; it has {sorted(self._states)}")
        return st

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

    async def _call(self, fn: Callable[[], R]) -> R:
        """Run blocking DuckDB work: on a worker thread while live, inline otherwise."""
        if self._threaded:
            return await asyncio.to_thread(fn)
        return fn()

    async def _pause(self, seconds: float) -> None:
        await _maybe(self._sleep(seconds))

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = self.store.connect()
            ensure_tables(self._con)
        return self._con

    async def _open(self) -> None:
        if self._opened:
            return
        con = self._connection()
        for st in self._states.values():
            if st.kind == "sql":
                assert isinstance(st.projection, SqlProjection)
                if st.engine is None:
                    st.engine = SqlEngine(self.store, st.projection, clock=self.clock)
                    st.projection._engine = st.engine
                engine = st.engine
                st.build_reason = await self._call(engine.open)
                self._advance(st, engine.checkpoint)
            else:
                await self._open_python(st, con)
        self._opened = True

    async def _open_python(self, st: _State, con: duckdb.DuckDBPyConnection) -> None:
        p = st.projection
        assert isinstance(p, Projection)
        found = read_checkpoint(con, st.name)
        if found is not None and found[0] != "python":
            raise ProjectionNameError(st.name, f"a {found[0]} projection of that name has a checkpoint here")
        stored = found[1] if found is not None else 0
        if p.persistent:
            p._checkpoint = stored
            st.checkpoint = int(await _maybe(p.get_checkpoint()))
        else:
            await _maybe(p.reset())
            st.checkpoint = 0
            p._checkpoint = 0
        add_checkpoint(con, st.name, "python", self.clock.now())
        set_checkpoint(con, st.name, st.checkpoint, self.clock.now())
        self._notify()

    async def _catch_up_one(self, st: _State, target: int | None) -> None:
        st.error = None
        if st.build_reason is not None:
            await self._build(st)
        while await self._batch(st, target):
            pass

    async def _live(self, st: _State) -> None:
        assert self._stop is not None and st.wake is not None
        stop = self._stop
        while not stop.is_set():
            try:
                if st.requests:
                    await self._serve_requests(st)
                if st.state != "failed":
                    if st.build_reason is not None:
                        await self._build(st)
                    if await self._batch(st, None):
                        continue
                    st.state = "live"
            except _Stopped:
                pass  # recorded in st; this projection waits for a rebuild request or stop()
            except StoreClosedError:
                st.state = "stopped"
                return
            if not await self._wait(st):
                return

    async def _wait(self, st: _State) -> bool:
        """Wait for the next event, a request or stop(); False when the runner should end."""
        assert self._stop is not None and st.wake is not None
        if st.requests:
            return True
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._stop.wait()),
            asyncio.ensure_future(st.wake.wait()),
        ]
        if st.state != "failed":
            waiters.append(asyncio.ensure_future(self._next_position(st.checkpoint + 1)))
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        st.wake.clear()
        if self._stop.is_set():
            return False
        return not (len(waiters) == 3 and waiters[2] in done and waiters[2].result() is False)

    async def _next_position(self, position: int) -> bool:
        return await self.store.wait_for_position_async(position)

    async def _serve_requests(self, st: _State) -> None:
        requests, st.requests = st.requests, []
        try:
            await self._rebuild(st)
            while await self._batch(st, None):
                pass
        except _Stopped as stopped:
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

    async def _rebuild(self, st: _State) -> None:
        st.error = None
        if st.kind == "sql":
            st.build_reason = "rebuild"
            await self._build(st)
            return
        p = st.projection
        assert isinstance(p, Projection)
        st.state = "rebuilding"
        await _maybe(p.rebuild())
        st.checkpoint = 0
        st.handled = 0
        await _maybe(p.update_checkpoint(0))
        set_checkpoint(self._connection(), st.name, 0, self.clock.now())

    # -- one batch ------------------------------------------------------------------------------

    async def _batch(self, st: _State, target: int | None) -> bool:
        """Apply the next batch (up to `target`, or all visible); False when there was nothing to do."""
        if st.kind == "sql":
            return await self._sql_batch(st, target)
        return await self._python_batch(st, target)

    async def _sql_batch(self, st: _State, target: int | None) -> bool:
        engine = st.engine
        assert engine is not None
        lo = engine.checkpoint
        visible = await self._call(partial(engine.visible, lo))
        upto = visible if target is None else min(target, visible)
        if lo >= upto:
            return False
        hi = engine.target(upto, self.batch_size)
        if st.state not in ("live",):
            st.state = "catching up"
        await self._sql_window(st, lambda: engine.step(hi), lo, hi, None)
        self._advance(st, engine.checkpoint)
        return True

    async def _sql_window(self, st: _State, attempt: Callable[[], None], lo: int, hi: int, build: Build | None) -> None:
        engine = st.engine
        assert engine is not None
        policy = st.policy
        failures = 0
        while True:
            try:
                await self._call(attempt)
                return
            except WindowFailed as exc:
                failed = exc
            failures += 1
            if not failed.permanent:
                if isinstance(policy, Retry) and failures < policy.attempts:
                    await self._pause(policy.delay(failures))
                    continue
                final = policy.then if isinstance(policy, Retry) else policy
                if final == "skip":
                    try:
                        await self._call(partial(engine.skip_failing, lo, hi, build=build, policy=describe(policy)))
                        return
                    except WindowFailed as exc:
                        failed = exc
            what = "stop" if failed.permanent else describe(policy)
            await self._call(partial(engine.record_stop, failed, attempts=failures, policy=what))
            raise self._failed(st, ProjectionError(
                st.name, f"apply_sql failed on the events at positions {lo + 1}..{hi}: {failed.error}"
            )) from failed.error

    def _failed(self, st: _State, error: ProjectionError) -> _Stopped:
        st.state = "failed"
        st.error = error.reason
        self._notify()
        return _Stopped(error)

    def _advance(self, st: _State, position: int) -> None:
        st.checkpoint = position
        self._notify()

    def _notify(self) -> None:
        with self._moved:
            self._moved.notify_all()
        for loop, wake in list(self._async_waiters):
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(wake.set)

    async def _build(self, st: _State) -> None:
        engine = st.engine
        assert engine is not None
        st.state = "rebuilding"
        try:
            build = await self._call(engine.begin_build)
        except ProjectionError as exc:
            raise self._failed(st, exc) from exc
        try:
            for _ in range(1 + _CATCH_UP_ROUNDS):
                visible = await self._call(partial(engine.visible, build.position))
                while build.position < visible:
                    lo = build.position
                    hi = visible if self.batch_size is None else min(visible, lo + self.batch_size)
                    show = _progress.wanted(self.progress, hi - lo)

                    def attempt(hi: int = hi, show: bool = show) -> None:
                        engine.apply_build(build, hi, progress=show)

                    await self._sql_window(st, attempt, lo, hi, build)
                if build.position >= self.store.last_position:
                    break
            await self._call(lambda: engine.finish_build(build))
        except BaseException:
            await self._call(lambda: engine.abandon_build(build))
            raise
        st.build_reason = None
        self._advance(st, engine.checkpoint)
        st.state = "catching up"

    async def _python_batch(self, st: _State, target: int | None) -> bool:
        last = self.store.last_position
        upto = last if target is None else min(target, last)
        if st.checkpoint >= upto:
            return False
        if st.state not in ("live", "rebuilding"):
            st.state = "catching up"
        await self._python_run(st, upto)
        return True

    async def _python_run(self, st: _State, upto: int) -> None:
        p = st.projection
        assert isinstance(p, Projection)
        use_recorded = type(p).handle_recorded is not Projection.handle_recorded
        handle: Callable[[Any], Any] = p.handle_recorded if use_recorded else p.handle
        is_async = inspect.iscoroutinefunction(handle)
        chunk_size = self.batch_size or _PY_BATCH
        start = st.checkpoint
        batches = self.store.read_batches(from_position=start + 1, to_position=upto, event_types=st.types)
        shown = _progress.bar(upto - start, f"rebuild {st.name}", _progress.wanted(self.progress, upto - start))
        done = start
        try:
            for chunk in _chunks(batches, chunk_size):
                await self._python_chunk(st, chunk, handle, use_recorded, is_async)
                position = chunk[-1][2]
                if position < upto:
                    await self._python_checkpoint(st, position, final=False)
                shown.update(position - done)
                done = position
            await self._python_checkpoint(st, upto)
            shown.update(upto - done)
        finally:
            shown.close()

    async def _python_chunk(
        self, st: _State, chunk: list[RecordedEvent], handle: Callable[[Any], Any], use_recorded: bool, is_async: bool
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
                if await self._python_failure(st, rec, exc, handle, use_recorded):
                    handled += 1
                i += 1
                rest = chunk[i:]
        st.handled += handled

    async def _python_failure(
        self, st: _State, rec: RecordedEvent, exc: Exception, handle: Callable[[Any], Any], use_recorded: bool
    ) -> bool:
        """Apply the policy to a handler error at `rec`; True if a retry handled it after all."""
        policy = st.policy
        attempts = 1
        if isinstance(policy, Retry):
            while attempts < policy.attempts:
                await self._pause(policy.delay(attempts))
                attempts += 1
                try:
                    return bool(await _maybe(handle(rec if use_recorded else rec[4])))
                except Exception as again:
                    exc = again
            final = policy.then
        else:
            final = policy
        error = f"{type(exc).__name__}: {exc}"
        con = self._connection()
        now = self.clock.now()
        if final == "skip":
            con.execute("BEGIN")
            try:
                record_error(con, st.name, position=rec.position, stream_id=rec.stream_id,
                             event_type=rec.event_type, error=error, policy=describe(policy),
                             attempts=attempts, now=now)
                con.execute("COMMIT")
            except duckdb.Error:
                con.execute("ROLLBACK")
                raise
            return False
        await self._python_checkpoint(st, rec.position - 1)
        with contextlib.suppress(duckdb.Error):
            record_error(con, st.name, position=rec.position, stream_id=rec.stream_id, event_type=rec.event_type,
                         error=error, policy=describe(policy), attempts=attempts, now=now)
        raise self._failed(st, ProjectionError(
            st.name,
            f"handle() failed at position {rec.position} ({rec.event_type} in stream {rec.stream_id!r}): {error}",
        )) from exc

    async def _python_checkpoint(self, st: _State, position: int, *, final: bool = True) -> None:
        """Move a Python projection's checkpoint to `position` (all events up to it handled).

        The projection saves its read model with the position first: a crash between
        the two leaves the catalog behind, never ahead. A projection whose read model
        is in memory starts from 0 anyway, so between batches only the end of a run
        goes to the catalog (for status and the command line).
        """
        if position <= st.checkpoint:
            return
        p = st.projection
        assert isinstance(p, Projection)
        await _maybe(p.update_checkpoint(position))
        if final or p.persistent:
            set_checkpoint(self._connection(), st.name, position, self.clock.now())
        self._advance(st, position)


# -- for the command line and notebooks --------------------------------------------------------


def list_projections(store: EventStore) -> pd.DataFrame:
    """Every projection the store has a checkpoint for: name, kind, checkpoint, lag, version, tables, errors.

    SqlProjections are described from their stored definitions; Python projections
    by their checkpoints only (their code is not in the store).
    """
    con = store.connect()
    try:
        ensure_tables(con)
        checkpoints = read_checkpoints(con)
        definitions = {d.name: d for d in read_definitions(con)}
        errors = error_counts(con)
    finally:
        con.close()
    last = store.last_position
    rows = []
    for name, (kind, position, updated_at) in checkpoints.items():
        d = definitions.get(name)
        rows.append({
            "name": name,
            "kind": kind,
            "checkpoint": position,
            "lag": max(0, last - position),
            "version": d.version if d else None,
            "tables": ", ".join(d.tables) if d else "",
            "event_types": ", ".join(d.event_types) if d and d.event_types else ("all" if d else ""),
            "errors": errors.get(name, (0, None))[0],
            "updated_at": updated_at,
        })
    columns = ["name", "kind", "checkpoint", "lag", "version", "tables", "event_types", "errors", "updated_at"]
    return pd.DataFrame(rows, columns=columns).astype({"version": "Int64"})


def rebuild_projection(store: EventStore, name: str, *, progress: bool | None = None) -> int:
    """Rebuild SqlProjection `name` from its stored definition (no user code needed); returns its checkpoint.

    Raises:
        InvalidInputError: no SqlProjection of that name (a Python projection is rebuilt by its code).
        ProjectionError: the rebuild failed; the old version stays live.
    """
    con = store.connect()
    try:
        ensure_tables(con)
        definition = read_definition(con, name)
        found = read_checkpoint(con, name)
    finally:
        con.close()
    if definition is None:
        if found is not None and found[0] == "python":
            raise InvalidInputError(
                f"{name!r} is a Python projection: its code is not in the store; rebuild it with "
                "ProjectionRunner(store, [projection]).rebuild(name)"
            )
        raise InvalidInputError(f"the store has no SqlProjection named {name!r}")
    with ProjectionRunner(store, [SqlProjection.from_definition(definition)], progress=progress) as runner:
        runner.rebuild(name)
        return runner._states[name].checkpoint


def human_duration(seconds: float) -> str:
    """`seconds` as a reader says it: "0.4 s", "42 s", "3 min 20 s", "2 h 5 min", "1 d 2 h"."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s"
    if seconds < 86400:
        hours, minutes = divmod(round(seconds / 60), 60)
        return f"{hours} h {minutes} min"
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days} d {hours} h"
