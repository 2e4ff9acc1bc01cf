"""The store's SQL front: ``sql``, ``connect``, live views, and the store at a past point
(``as_of``, ``diff``); and ``bind_views``, the one way any connection's views are pointed
at the store's events (its own, a view of the past's, a projection's).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb

from eventador.store.core import StoreCore
from eventador.store.live_views import LiveView, LiveViews
from eventador.store.reads import StoreState, run_sql
from eventador.store.segments import SQL_HOLD_SECONDS, FileSegment
from eventador.store.sqlguard import SqlRelation, check_query, fixed_names, restrict
from eventador.store.views import Sources, SqlViews

if TYPE_CHECKING:
    pass

__all__ = ["Querying"]


class Querying(StoreCore):
    """SQL over a store, its live views and its past; see ``EventStore``."""

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> SqlRelation:
        """A DuckDB relation over the views ``events`` and one per event type (flushed or not).

        The relation runs when read: ``.df()``, ``.arrow()``, ``.fetchall()``, ``.show()``.
        What the SQL may do is in the README ("What SQL may do"): it reads everything,
        and never changes the store's own tables and views.

        Raises:
            SqlError: the query does not parse, bind or run, or is refused (also when
                it fails at fetch time); also a ``duckdb.Error``.

        >>> store.sql("SELECT count(*) FROM events").fetchall()
        [(3,)]
        """
        with self._sql_lock:
            views = self._prepare_views(self.state(), position_limit=None, occurred_limit=None, query=query)
            return self._run_user_sql(views, query, params)

    def _run_user_sql(
        self, views: SqlViews, query: str, params: Sequence[Any] | dict[str, Any] | None
    ) -> SqlRelation:
        """Check `query` (sqlguard), then run it on `views`' connection."""
        check_query(query, restricted=not self.allow_external, protected=lambda: self._store_names(views))
        files = [s.path for s in self._segments if isinstance(s, FileSegment)]
        return run_sql(views, query, params, files)

    def _store_names(self, views: SqlViews) -> dict[str, str]:
        """The names user SQL may not write, create or drop (lower case) -> what holds them."""
        names = fixed_names()
        names.update((v.lower(), f"the typed view of event type {t!r}") for t, v in views.view_names.items())
        names.update((v.name.lower(), f"live view {v.name!r}") for v in self._live_views().list())
        with contextlib.suppress(duckdb.Error):  # no projection has been defined yet
            for projection, tables in views.con.execute("SELECT name, tables FROM main.sql_projections").fetchall():
                names.update((str(t).lower(), f"a table of projection {projection!r}") for t in tables)
        return names

    # -- the store's internal API for SQL (docs/architecture.md) ---------------------

    @contextlib.contextmanager
    def bind_views(
        self, state: StoreState, views: SqlViews | None = None, *, position_limit: int | None = None,
        occurred_limit: datetime | None = None, query: str | None = None,
    ) -> Iterator[SqlViews]:
        """Point `views` at the events of `state` and keep them so while the block runs; yields them.

        `views`: a connection's views (a projection's, a view of the past's); by default the
        store's own, which ``sql`` runs on. `position_limit`, `occurred_limit`: only events at
        or below that position, or that occurred at or before that time. `query`: the SQL
        about to run, so that only the empty typed views it names are made. The live views
        are installed on the connection too.

        Holds the store's SQL lock until the block ends: no other thread points the same
        views elsewhere meanwhile (DuckDB binds a relation's views when it is made).
        Costs a registration of the hot tier (Arrow) and, where the files changed, new views.
        """
        with self._sql_lock:
            yield self._prepare_views(
                state, position_limit=position_limit, occurred_limit=occurred_limit, views=views, query=query
            )

    def _prepare_views(
        self, snap: StoreState, *, position_limit: int | None, occurred_limit: datetime | None,
        views: SqlViews | None = None, query: str | None = None,
    ) -> SqlViews:
        classes = self.registry.classes()
        sources = self.sql_sources(snap)
        if views is None:
            if self._views is None:
                self._views = SqlViews(self._user_connection())
            views = self._views
        views.update(
            dataclasses.replace(sources, position_limit=position_limit, occurred_limit=occurred_limit),
            classes,
            query=query,
        )
        self._live_views().install(views)
        return views

    def sql_sources(self, state: StoreState | None = None) -> Sources:
        """What the SQL views read of `state` (by default the store now): its Parquet files with
        their schemas, and its visible hot rows as one Arrow table.

        Part of the store's internal API: a sharded store unites several stores' sources
        under one set of views. Costs the hot tier's conversion to Arrow.
        """
        snap = self.state() if state is None else state
        files, tables, hot = self._arrow_sources(snap, self.registry.classes())
        for f in files:  # DuckDB reads them by name: evicted ones are fetched, and kept while a relation may run
            f.ensure_local(hold_for=SQL_HOLD_SECONDS)
        return Sources(
            files=tuple(f.path for f in files), schemas=tuple(f.schema() for f in files), tables=tables, hot=hot
        )

    # -- live SQL views (live_views.py) -----------------------------------------------

    def create_view(self, name: str, sql: str, *, replace: bool = False) -> LiveView:
        """Make a live SQL view `name` over ``events`` and the typed views; returns it.

        It is kept with the store (present again after reopening, also for read-only
        openers and ``eventador sql``) and always current: a view, not a copy.

        Raises:
            ProjectionNameError: `name` is not an identifier, or names an existing view,
                table or event type (``replace=True`` changes an existing live view).
            ProjectionError: the SQL is not one SELECT or does not run (DuckDB's message
                quoted); nothing is stored.
            ReadOnlyError: the store is read-only.

        >>> store.create_view("big_deposits", "SELECT * FROM Deposited WHERE amount > 1000")
        LiveView(name='big_deposits', ...)
        """
        self._check_writable()
        return self._live_views().create(name, sql, replace=replace)

    def views(self) -> list[LiveView]:
        """The store's live SQL views (name, sql, created_at), oldest first."""
        self._check_open()
        return self._live_views().list()

    def drop_view(self, name: str) -> None:
        """Remove live view `name`. Raises InvalidInputError when there is none."""
        self._check_writable()
        self._live_views().drop(name)

    def _live_views(self) -> LiveViews:
        if self._live is None:
            self._live = LiveViews(self)
        return self._live

    def _new_connection(self) -> duckdb.DuckDBPyConnection:
        """A connection to the store's DuckDB database (the catalog), or a private one when read-only."""
        if self._catalog is not None:
            return self._catalog.cursor()
        return duckdb.connect()

    def _user_connection(self) -> duckdb.DuckDBPyConnection:
        """The connection ``sql`` runs on: the store's database, or for a read-only store a
        private in-memory one that (without `allow_external`) opens no file outside the store."""
        con = self._new_connection()
        if not self.allow_external:  # (and a read-only opener's folder of fetched files)
            dirs = [] if self.path is None else [self._data_dir, *filter(None, [self._cache_dir])]
            restrict(con, dirs)
        return con

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection to the store's own database, for one thread.

        It holds the read models (projection tables) and queues, and lasts as long
        as the store; close it when done. Read-only stores get a private in-memory one.
        Unlike ``sql``, nothing checks what it runs: it is for code that maintains the
        store's tables (projections, queues), not for ad-hoc queries.
        """
        self._check_open()
        return self._new_connection()
