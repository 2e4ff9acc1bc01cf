"""SQL projections: read models kept as DuckDB tables, updated incrementally by SQL.

    balances = ev.SqlProjection(
        "balances",
        setup_sql="CREATE TABLE balances (account_id VARCHAR PRIMARY KEY, balance DECIMAL(38, 2))",
        apply_sql='''
            INSERT INTO balances
            SELECT account_id, sum(amount) FROM new_Deposited GROUP BY account_id
            ON CONFLICT (account_id) DO UPDATE SET balance = balance + excluded.balance
        ''',
    )

What `apply_sql` sees: the events after the checkpoint, up to the batch's end, as
``new_events`` (the columns of ``events``) and per event type as ``new_<Type>`` (the
columns of its typed view). A type name that is not an identifier has each other
character replaced by ``_``: ``bank.MoneyDeposited`` is ``new_bank_MoneyDeposited``
(two types that map to one name get no ``new_`` view). `event_types` narrows
``new_events`` and the ``new_`` views to those types. ``events`` and the typed views
show the whole log. A batch may hold any number of events, so apply_sql must fold
a batch onto the table (upserts, not inserts of totals): applying the log in any
split of batches must give the same table as one pass.

Exactly once: each batch's table change and its checkpoint commit in one DuckDB
transaction. A rebuild runs `setup_sql` and then `apply_sql` over the whole log in
one pass (columnar, in DuckDB) into a new schema ``<name>__v<N+1>``, beside the
live ``<name>__v<N>``; then one transaction points the views named like the tables
(``main.balances``) at it and drops the old schema. Readers see the old complete
table until that commit and the new complete one after it.

Write unqualified table names in the SQL (``balances``, not ``main.balances``): the
tables are made in the version's schema. No BEGIN/COMMIT inside: the runner owns
the transaction. A payload field named ``position`` shadows the envelope column in
a typed view, and then in its ``new_`` view.
"""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import duckdb

from eventador.clock import Clock
from eventador.errors import InvalidInputError, ProjectionError, SqlError, StoreClosedError
from eventador.messages import Event
from eventador.projections.checkpoints import (
    Definition,
    add_checkpoint,
    ensure_tables,
    read_checkpoint,
    read_definition,
    record_error,
    schema_name,
    set_checkpoint,
)
from eventador.projections.errors import ProjectionNameError
from eventador.projections.policies import ErrorPolicy, Retry, check_policy
from eventador.projections.progress import query_progress
from eventador.projections.views import check_identifier, taken_names
from eventador.store.sqlguard import check_query, fixed_names
from eventador.store.views import SqlViews, literal, quote

if TYPE_CHECKING:
    from eventador.projections.past import PastReadModel
    from eventador.store.store import EventStore

__all__ = ["SqlProjection", "batch_view_name"]

# Errors in the SQL itself, not in the data: no event is to blame, so skipping or
# retrying cannot help.
_PERMANENT: tuple[type[duckdb.Error], ...] = (
    duckdb.ParserException,
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.NotImplementedException,
    duckdb.PermissionException,
)


def batch_view_name(event_type: str) -> str:
    """The name of `event_type`'s batch view in apply_sql: ``new_`` + the type, non-word characters as ``_``."""
    return "new_" + re.sub(r"[^A-Za-z0-9_]", "_", event_type)


def _type_name(t: str | type[Event]) -> str:
    if isinstance(t, str) and t:
        return t
    if isinstance(t, type) and issubclass(t, Event):
        return t.event_type
    raise InvalidInputError(f"event_types takes names or Event classes, got {t!r}")


def _checked_sql(name: str, what: str, sql: object) -> str:
    if not isinstance(sql, str) or not sql.strip():
        raise ProjectionError(name, f"{what} must be SQL text")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise ProjectionError(name, f"{what} does not parse: {exc}") from exc
    if not statements:
        raise ProjectionError(name, f"{what} holds no statement")
    if any(s.type == duckdb.StatementType.TRANSACTION for s in statements):
        raise ProjectionError(name, f"{what} must not BEGIN or COMMIT: each batch runs in the runner's transaction")
    try:  # it runs in the store's own database: it may not change the store's tables and views
        # (a table it makes lands in the projection's own schema; the build checks its name)
        check_query(sql, restricted=False, protected=fixed_names, own_schema=True)
    except SqlError as exc:
        raise ProjectionError(name, f"{what}: {exc}") from exc
    return sql.strip()


class SqlProjection:
    """An incremental read model in DuckDB tables (see the module docs).

    `name`: an identifier, unique among the store's projections. `setup_sql` makes
    the tables; `apply_sql` folds ``new_events`` / ``new_<Type>`` onto them.
    `event_types`: names or classes; None: every type. `on_error`: "stop",
    "skip" (the failing events are found by halving the batch, recorded in
    ``projection_errors`` and left out) or "retry" / ``ev.Retry(...)``. Errors in the
    SQL itself (a typo, a missing table) always stop.

    Raises:
        ProjectionNameError: `name` is not an identifier.
        ProjectionError: the SQL does not parse, or it holds BEGIN/COMMIT.
    """

    kind: ClassVar[str] = "sql"

    def __init__(
        self,
        name: str,
        *,
        setup_sql: str,
        apply_sql: str,
        event_types: Iterable[str | type[Event]] | None = None,
        on_error: ErrorPolicy = "stop",
    ) -> None:
        self.name = check_identifier(name, "projection")
        self.setup_sql = _checked_sql(name, "setup_sql", setup_sql)
        self.apply_sql = _checked_sql(name, "apply_sql", apply_sql)
        self.event_types = None if event_types is None else tuple(_type_name(t) for t in event_types)
        self.on_error: Retry | str = check_policy(on_error)
        self._engine: SqlEngine | None = None  # set while a runner holds this projection

    @property
    def projection_id(self) -> str:
        """The same as `name` (the name Python projections use)."""
        return self.name

    @classmethod
    def from_definition(cls, definition: Definition) -> SqlProjection:
        """The projection a store holds the definition of (for rebuilding without the code)."""
        return cls(
            definition.name,
            setup_sql=definition.setup_sql,
            apply_sql=definition.apply_sql,
            event_types=definition.event_types,
        )

    def same_definition(self, definition: Definition) -> bool:
        """True when `definition` has this projection's SQL and event types."""
        return (self.setup_sql, self.apply_sql, self.event_types) == (
            definition.setup_sql,
            definition.apply_sql,
            definition.event_types,
        )

    def as_of(
        self,
        store: EventStore,
        when: datetime | int,
        *,
        by: Literal["recorded_at", "occurred_at"] = "recorded_at",
        progress: bool | None = None,
    ) -> PastReadModel:
        """Returns this read model as it was at a past point, built afresh: a ``PastReadModel``.

        `when` and `by` mean what they mean in ``store.as_of``: a position (the events
        at or below it) or an aware datetime (the events recorded, or with
        ``by="occurred_at"`` that occurred, at or before it). A point before the first
        event gives the empty tables of `setup_sql`.

        Costs what a rebuild costs over those events: `setup_sql`, then `apply_sql`
        once over all of them (one columnar pass, a bar if `progress`), in a private
        in-memory DuckDB database. The live read model, its checkpoint and the store's
        catalog are not touched; the store may be read-only, and no runner is needed.

        Raises:
            InvalidInputError: a naive datetime, or `by` is not one of the two.
            ProjectionError: `setup_sql` or `apply_sql` failed (DuckDB's message quoted).
            ProjectionNameError: a table setup_sql makes is named like an event type or a view.

        >>> jan = balances.as_of(store, datetime(2026, 1, 31, tzinfo=UTC))  # doctest: +SKIP
        >>> jan.sql("SELECT sum(balance) FROM balances").fetchall()  # doctest: +SKIP
        [(Decimal('1234.50'),)]
        """
        from eventador.projections.past import read_model_as_of  # past.py builds on this module

        return read_model_as_of(self, store, when, by=by, progress=progress)

    def __repr__(self) -> str:
        where = ""
        engine = self._engine
        if engine is not None and engine.definition is not None:
            where = f", v{engine.definition.version}, checkpoint {engine.checkpoint}"
        return f"SqlProjection({self.name!r}{where})"

    def _repr_html_(self) -> str:
        rows = [("name", html.escape(self.name)),
                ("event types", html.escape(", ".join(self.event_types) if self.event_types else "all"))]
        engine = self._engine
        tables = ""
        if engine is not None and engine.definition is not None:
            with contextlib.suppress(duckdb.Error, StoreClosedError):
                status = engine.describe()
                rows += [
                    ("version", f"{status['version']} (schema <code>{html.escape(status['schema'])}</code>)"),
                    ("checkpoint", f"{status['checkpoint']:,}"),
                    ("lag", f"{status['lag']:,} events"),
                ]
                tables = "".join(
                    f"<tr><td><code>{html.escape(t)}</code></td><td style='text-align:right'>{n:,}</td></tr>"
                    for t, n in status["tables"].items()
                )
                tables = f"<table><tr><th>table</th><th>rows</th></tr>{tables}</table>"
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in rows)
        sql = (
            f"<details><summary>SQL</summary><pre>{html.escape(self.setup_sql)}</pre>"
            f"<pre>{html.escape(self.apply_sql)}</pre></details>"
        )
        return f"<div><b>SqlProjection</b><table>{body}</table>{tables}{sql}</div>"


class WindowFailed(Exception):
    """apply_sql failed on the events in (lo, hi]; nothing of the batch was kept."""

    def __init__(self, lo: int, hi: int, error: duckdb.Error) -> None:
        super().__init__(str(error))
        self.lo, self.hi, self.error = lo, hi, error

    @property
    def permanent(self) -> bool:
        return isinstance(self.error, _PERMANENT)


@dataclass
class Build:
    """A version being built beside the live one; `position`: applied up to here."""

    version: int
    schema: str
    tables: tuple[str, ...]
    position: int = 0


class SqlEngine:
    """Runs one SqlProjection on a store, on its own DuckDB connection (one thread at a time).

    The runner drives it: ``open``, then ``step`` for increments and
    ``begin_build`` / ``apply_build`` / ``finish_build`` for (re)builds.
    """

    def __init__(
        self,
        store: EventStore,
        projection: SqlProjection,
        *,
        clock: Clock,
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> None:
        self.store = store
        self.projection = projection
        self.name = projection.name
        self.clock = clock
        # `con`: another database to build in (a read model as of a past point builds in a
        # scratch in-memory one); by default the store's own.
        self.con = store.connect() if con is None else con
        # Footers of the store's Parquet files, cached for this connection: a batch's views
        # are bound afresh each time, and the files never change once written.
        with contextlib.suppress(duckdb.Error):
            self.con.execute("SET parquet_metadata_cache = true")
        self.views = SqlViews(self.con)
        self.definition: Definition | None = None
        self.checkpoint = 0
        self._window_made: tuple[int, int, int] | None = None
        self._mentioned: tuple[int, str] | None = None

    def close(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self.con.close()

    # -- opening ----------------------------------------------------------------------

    def open(self) -> str | None:
        """Load the stored definition and checkpoint; returns why a build is due, or None."""
        con = self.con
        ensure_tables(con)
        found = read_checkpoint(con, self.name)
        if found is not None and found[0] != "sql":
            raise ProjectionNameError(self.name, f"a {found[0]} projection of that name has a checkpoint here")
        add_checkpoint(con, self.name, "sql", self.clock.now())
        self.definition = read_definition(con, self.name)
        self._drop_other_versions()
        if self.definition is None:
            return "new"
        self.checkpoint = found[1] if found is not None else 0
        if not self.projection.same_definition(self.definition):
            return "definition changed"
        return None

    def _versions(self) -> list[tuple[int, str]]:
        pattern = re.compile(re.escape(self.name) + r"__v(\d+)\Z")
        rows = self.con.execute(
            "SELECT schema_name FROM duckdb_schemas() WHERE database_name = current_database()"
        ).fetchall()
        found = []
        for (schema,) in rows:
            match = pattern.match(str(schema))
            if match:
                found.append((int(match.group(1)), str(schema)))
        return sorted(found)

    def _drop_other_versions(self) -> None:
        # Left by a build that a crash (or an error) cut short: never visible, so just drop.
        live = None if self.definition is None else self.definition.version
        for version, schema in self._versions():
            if version != live:
                self.con.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")

    # -- the views of a batch -----------------------------------------------------------

    def visible(self, after: int = 0) -> int:
        """Point this connection's views at the visible events (those in files wholly at or below
        `after` left out); returns the newest visible position."""
        state = self.store.state().after(after)
        with self.store.bind_views(state, self.views, query=self._mentions()):
            return state.visible

    def _mentions(self) -> str:
        """The projection's SQL, plus the type names its ``new_`` views stand for (so that a
        type with no event yet gets its empty typed view)."""
        names = self.store.registry.names()
        if self._mentioned is None or self._mentioned[0] != len(names):
            p = self.projection
            text = f"{p.setup_sql}\n{p.apply_sql}"
            lowered = text.lower()
            extra = [t for t in names if batch_view_name(t).lower() in lowered]
            self._mentioned = (len(names), "\n".join([text, *extra]))
        return self._mentioned[1]

    def _point(self, lo: int, hi: int) -> None:
        """Make ``new_events`` and the ``new_<Type>`` views show the events in (lo, hi]."""
        key = (lo, hi, self.views.generation)
        if self._window_made == key:
            return
        types = self.projection.event_types
        window = f"position > {int(lo)} AND position <= {int(hi)}"
        only = "" if types is None else f" AND event_type IN ({', '.join(literal(t) for t in types)})"
        con = self.con
        con.execute(f"CREATE OR REPLACE TEMP VIEW new_events AS SELECT * FROM events WHERE {window}{only}")
        # Only the new_ views apply_sql names: each costs a bind of the typed view it narrows.
        text = self.projection.apply_sql.lower()
        wanted = [
            t for t in self.views.typed
            if (types is None or t in types) and batch_view_name(t).lower() in text
        ]
        names: dict[str, list[str]] = {}
        for t in wanted:
            names.setdefault(batch_view_name(t).lower(), []).append(t)
        for t in wanted:
            if len(names[batch_view_name(t).lower()]) == 1:
                view = quote(batch_view_name(t))
                con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {quote(t)} WHERE {window}")
        self._window_made = key

    def _apply(self, schema: str, lo: int, hi: int, also: Callable[[], None] | None) -> None:
        """Run apply_sql over (lo, hi] into `schema`'s tables, and `also`, in one transaction."""
        self._point(lo, hi)
        con = self.con
        con.execute(f"SET schema = {literal(schema)}")
        try:
            con.execute("BEGIN")
            try:
                con.execute(self.projection.apply_sql)
                if also is not None:
                    also()
                con.execute("COMMIT")
            except duckdb.Error as exc:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise WindowFailed(lo, hi, exc) from exc
        finally:
            with contextlib.suppress(duckdb.Error):
                con.execute("SET schema = 'main'")

    # -- increments -------------------------------------------------------------------------

    def target(self, visible: int, limit: int | None) -> int:
        return visible if limit is None else min(visible, self.checkpoint + limit)

    def step(self, hi: int) -> None:
        """Apply (checkpoint, hi] to the live tables; table change and checkpoint in one transaction.

        Raises:
            WindowFailed: apply_sql failed; nothing changed.
        """
        assert self.definition is not None
        lo = self.checkpoint
        self._apply(self.definition.schema, lo, hi, lambda: self._move_checkpoint(hi))
        self.checkpoint = hi

    def _move_checkpoint(self, position: int) -> None:
        set_checkpoint(self.con, self.name, position, self.clock.now())

    def skip_failing(self, lo: int, hi: int, *, build: Build | None, policy: str) -> int:
        """Apply (lo, hi] in halves, skipping and recording the single events that fail; returns how many.

        Each half commits on its own (with the checkpoint, when live), so a crash
        in the middle keeps what was done and repeats nothing.
        """
        if hi - lo <= 1:
            try:
                self._apply_once(lo, hi, build)
            except WindowFailed as failed:
                if failed.permanent:
                    raise
                self._skip(hi, failed.error, build, policy)
                return 1
            return 0
        mid = (lo + hi) // 2
        skipped = 0
        for a, b in ((lo, mid), (mid, hi)):
            try:
                self._apply_once(a, b, build)
            except WindowFailed as failed:
                if failed.permanent:
                    raise
                skipped += self.skip_failing(a, b, build=build, policy=policy)
        return skipped

    def _apply_once(self, lo: int, hi: int, build: Build | None) -> None:
        if build is None:
            assert self.definition is not None and self.checkpoint == lo
            self.step(hi)
        else:
            self._apply(build.schema, lo, hi, None)
            build.position = hi

    def _skip(self, position: int, error: duckdb.Error, build: Build | None, policy: str) -> None:
        rows = self.con.execute(
            "SELECT stream_id, event_type FROM events WHERE position = ?", [position]
        ).fetchall()
        stream_id, event_type = rows[0] if rows else (None, None)
        con = self.con
        con.execute("BEGIN")
        try:
            record_error(
                con, self.name, position=position, stream_id=stream_id, event_type=event_type,
                error=f"{type(error).__name__}: {error}", policy=policy, attempts=1, now=self.clock.now(),
            )
            if build is None:
                self._move_checkpoint(position)
            con.execute("COMMIT")
        except duckdb.Error:
            con.execute("ROLLBACK")
            raise
        if build is None:
            self.checkpoint = position
        else:
            build.position = position

    def record_stop(self, failed: WindowFailed, *, attempts: int, policy: str) -> None:
        """Record the error a batch stopped at (the batch's first position names where)."""
        with contextlib.suppress(duckdb.Error):
            record_error(
                self.con, self.name, position=failed.lo + 1, stream_id=None, event_type=None,
                error=f"{type(failed.error).__name__}: {failed.error}", policy=policy, attempts=attempts,
                now=self.clock.now(),
            )

    # -- builds -------------------------------------------------------------------------------

    def begin_build(self) -> Build:
        """Make the next version's schema and run setup_sql in it (committed, not yet visible).

        Raises:
            ProjectionError: setup_sql failed (DuckDB's message quoted); nothing is left behind.
            ProjectionNameError: a table it makes is named like an event type, a view or another table.
        """
        old = self.definition
        version = max([old.version if old else 0, *(v for v, _ in self._versions())]) + 1
        schema = schema_name(self.name, version)
        self.visible()  # setup_sql may read events (CREATE TABLE t AS SELECT ... FROM events LIMIT 0)
        con = self.con
        con.execute("BEGIN")
        try:
            con.execute(f"CREATE SCHEMA {quote(schema)}")
            con.execute(f"SET schema = {literal(schema)}")
            try:
                con.execute(self.projection.setup_sql)
            except duckdb.Error as exc:
                raise ProjectionError(self.name, f"setup_sql failed: {exc}") from exc
            tables = tuple(
                str(r[0])
                for r in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                    "AND schema_name = ? UNION ALL SELECT view_name FROM duckdb_views() "
                    "WHERE database_name = current_database() AND schema_name = ? ORDER BY 1",
                    [schema, schema],
                ).fetchall()
            )
            if not tables:
                raise ProjectionError(
                    self.name,
                    "setup_sql made no table; write plain names (CREATE TABLE balances ...), not main.balances",
                )
            self._check_table_names(tables)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        finally:
            with contextlib.suppress(duckdb.Error):
                con.execute("SET schema = 'main'")
        return Build(version, schema, tables)

    def _check_table_names(self, tables: tuple[str, ...]) -> None:
        own = {t.lower() for t in self.definition.tables} if self.definition else set()
        taken = taken_names(self.store, self.con, self.views)
        for view in self.store.views():
            taken.setdefault(view.name.lower(), "a live view")
        for table in tables:
            check_identifier(table, "projection table")
            holder = taken.get(table.lower())
            if holder is not None and table.lower() not in own:
                raise ProjectionNameError(
                    self.name, f"setup_sql makes table {table!r}, but the name is taken by {holder}"
                )

    def apply_build(self, build: Build, hi: int, *, progress: bool = False) -> None:
        """Apply (build.position, hi] to the version being built, in one pass (a bar if `progress`).

        Raises:
            WindowFailed: apply_sql failed; the build's tables are as before.
        """
        with query_progress(self.con, hi - build.position, f"rebuild {self.name}", progress):
            self._apply(build.schema, build.position, hi, None)
        build.position = hi

    def finish_build(self, build: Build) -> None:
        """Swap: point the views at the new version, move the checkpoint, drop the old version; one transaction."""
        old = self.definition
        now = self.clock.now()
        p = self.projection
        con = self.con
        con.execute("BEGIN")
        try:
            for table in build.tables:
                source = f"{quote(build.schema)}.{quote(table)}"
                con.execute(f"CREATE OR REPLACE VIEW main.{quote(table)} AS SELECT * FROM {source}")
            if old is not None:
                for table in set(old.tables) - set(build.tables):
                    con.execute(f"DROP VIEW IF EXISTS main.{quote(table)}")
                con.execute("DELETE FROM sql_projections WHERE name = ?", [self.name])
            con.execute(
                "INSERT INTO sql_projections (name, setup_sql, apply_sql, event_types, version, tables, "
                "created_at, rebuilt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [self.name, p.setup_sql, p.apply_sql, None if p.event_types is None else list(p.event_types),
                 build.version, list(build.tables), old.created_at if old else now, now],
            )
            set_checkpoint(con, self.name, build.position, now)
            if old is not None:
                con.execute(f"DROP SCHEMA IF EXISTS {quote(old.schema)} CASCADE")
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        self.definition = Definition(
            self.name, p.setup_sql, p.apply_sql, p.event_types, build.version, build.tables,
            old.created_at if old else now, now,
        )
        self.checkpoint = build.position

    def abandon_build(self, build: Build) -> None:
        with contextlib.suppress(duckdb.Error):
            self.con.execute(f"DROP SCHEMA IF EXISTS {quote(build.schema)} CASCADE")

    # -- describing ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Version, schema, checkpoint, lag and row counts of the live tables (small queries)."""
        d = self.definition
        if d is None:
            return {"version": None, "schema": None, "checkpoint": self.checkpoint, "lag": 0, "tables": {}}
        con = self.store.connect()
        try:
            counts = {
                t: int(con.execute(f"SELECT count(*) FROM {quote(d.schema)}.{quote(t)}").fetchall()[0][0])
                for t in d.tables
            }
        finally:
            con.close()
        return {
            "version": d.version,
            "schema": d.schema,
            "checkpoint": self.checkpoint,
            "lag": max(0, self.store.last_position - self.checkpoint),
            "tables": counts,
        }

