"""The engine under an SqlProjection: its batches, its skips and its blue/green builds in DuckDB.

One ``SqlEngine`` per projection and connection. The runner drives it (``open``, then
``step`` for increments, ``begin_build`` / ``apply_build`` / ``finish_build`` for
rebuilds); a read model as of a past point uses the build steps in a scratch database
(``eventador.projections.past``). What apply_sql sees and how a rebuild swaps is told
in ``eventador.projections.sql``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb

from eventador.clock import Clock
from eventador.errors import ProjectionError, ProjectionNameError
from eventador.progress import query_progress
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
from eventador.store.live_views import check_identifier, taken_names
from eventador.store.views import SqlViews, literal, quote

if TYPE_CHECKING:
    from eventador.projections.sql import SqlProjection
    from eventador.store.store import EventStore

__all__ = ["Build", "SqlEngine", "WindowFailed", "batch_view_name"]

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

