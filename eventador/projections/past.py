"""Read models as of a past point: ``projection.as_of(store, when)``.

    jan = balances.as_of(store, datetime(2026, 1, 31, tzinfo=UTC))
    jan.sql("SELECT * FROM balances ORDER BY balance DESC LIMIT 5").df()

The read model is built afresh, the way a rebuild builds it: `setup_sql` in a scratch
in-memory DuckDB database, then `apply_sql` once, with ``new_events`` and the
``new_<Type>`` views showing every event at or before the point (one columnar pass).
Nothing of the store is written: not the live read model, not its checkpoint, not the
catalog, so a read-only store works too, and so does a projection no runner ever ran.

The point means what it means in ``store.as_of``: a position (the events at or below
it) or an aware datetime (the events recorded, or with ``by="occurred_at"`` that
occurred, at or before it). Since apply_sql folds any batch the same as one pass, the
result is the table a fresh SqlProjection would hold over a store of just those events.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import duckdb

from eventador import progress as _progress
from eventador.errors import InvalidInputError, ProjectionError
from eventador.projections.sql_engine import SqlEngine, WindowFailed
from eventador.store.reads import PastView, run_sql
from eventador.store.sqlguard import SqlRelation
from eventador.store.views import quote

if TYPE_CHECKING:
    import pandas as pd

    from eventador.projections.sql import SqlProjection
    from eventador.store.store import EventStore

__all__ = ["PastReadModel", "read_model_as_of"]


class _PastEngine(SqlEngine):
    """A SqlEngine on a scratch database whose ``events`` and typed views stop at a past point.

    Only the build steps are used (``begin_build``, ``apply_build``): it has no
    checkpoint, and its schemas and tables vanish with its connection.
    """

    def __init__(self, past: PastView, projection: SqlProjection) -> None:
        super().__init__(past.store, projection, clock=past.store.clock, con=duckdb.connect())
        self.past = past

    def visible(self, after: int = 0) -> int:
        """Point the views at the events up to the past point; returns the newest position shown."""
        store, past = self.store, self.past
        snap = past.state()
        with store.bind_views(
            snap, self.views, position_limit=past.position, occurred_limit=past.occurred_before, query=self._mentions()
        ):
            return snap.visible


class PastReadModel:
    """An SqlProjection's read model as it was at a past point (see ``SqlProjection.as_of``).

    ``sql(query)`` runs over its tables (by their plain names, as in the store) and over
    ``events`` and the typed views as of the same point; ``table(name)`` and ``df(name)``
    read one table. It lives in a private in-memory DuckDB database: use it from one
    thread at a time, and ``close()`` it (or use ``with``) to free the memory early.
    """

    def __init__(self, engine: _PastEngine, tables: tuple[str, ...], position: int) -> None:
        self._engine = engine
        self.projection: SqlProjection = engine.projection
        self.tables = tables
        """The read model's tables (and views), as setup_sql names them."""
        self.position = position
        """The newest position the read model may reflect (0: before the first event)."""
        self.occurred_before: datetime | None = engine.past.occurred_before
        """With ``by="occurred_at"``: only events that occurred at or before this time are in it."""
        self._closed = False

    @property
    def name(self) -> str:
        """The projection's name."""
        return self.projection.name

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> SqlRelation:
        """A DuckDB relation over the read model's tables and the store's views as of the point.

        Lazy, like ``store.sql``: ``.df()``, ``.arrow()``, ``.fetchall()`` run it.

        Raises:
            SqlError: the SQL does not run (DuckDB's message quoted; also an InvalidInputError).
            InvalidInputError: the read model is closed.
        """
        self._check_open()
        engine = self._engine
        engine.visible()  # the store's files may have been merged since: point at the current ones
        engine.views.make_empty_views(query)  # the types with no event yet that the query names
        return run_sql(engine.views, query, params)

    def table(self, name: str | None = None) -> SqlRelation:
        """A relation over one of the read model's tables; `name` may be left out when there is one.

        Raises:
            InvalidInputError: no such table, or no `name` while there are several.
        """
        return self.sql(f"SELECT * FROM {quote(self._table_name(name))}")

    def df(self, name: str | None = None) -> pd.DataFrame:
        """One table as a pandas DataFrame, rows sorted by all columns (so the order is stable).

        Raises:
            InvalidInputError: no such table, or no `name` while there are several.
        """
        frame: pd.DataFrame = self.sql(f"SELECT * FROM {quote(self._table_name(name))} ORDER BY ALL").df()
        return frame

    def _table_name(self, name: str | None) -> str:
        if name is None:
            if len(self.tables) != 1:
                raise InvalidInputError(
                    f"projection {self.name!r} has tables {', '.join(self.tables)}: name the one to read"
                )
            return self.tables[0]
        for table in self.tables:
            if table.lower() == str(name).lower():
                return table
        raise InvalidInputError(f"projection {self.name!r} has no table {name!r}; it has {', '.join(self.tables)}")

    def close(self) -> None:
        """Free the read model's database. Idempotent."""
        if not self._closed:
            self._closed = True
            self._engine.close()

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInputError(f"{self!r} is closed")

    def __enter__(self) -> PastReadModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _point(self) -> str:
        if self.occurred_before is not None:
            return f"occurred at or before {self.occurred_before.isoformat()}"
        return f"position <= {self.position}"

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"PastReadModel({self.name!r}, {self._point()}{state})"

    def _repr_html_(self) -> str:
        rows = [
            ("projection", html.escape(self.name)),
            ("as of", html.escape(self._point())),
        ]
        tables = ""
        if not self._closed:
            with contextlib.suppress(duckdb.Error):
                con = self._engine.con
                counts = [
                    (t, int(con.execute(f"SELECT count(*) FROM main.{quote(t)}").fetchall()[0][0]))
                    for t in self.tables
                ]
                tables = "".join(
                    f"<tr><td><code>{html.escape(t)}</code></td><td style='text-align:right'>{n:,}</td></tr>"
                    for t, n in counts
                )
                tables = f"<table><tr><th>table</th><th>rows</th></tr>{tables}</table>"
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in rows)
        return f"<div><b>PastReadModel</b><table>{body}</table>{tables}</div>"


def read_model_as_of(
    projection: SqlProjection,
    store: EventStore,
    when: datetime | int,
    *,
    by: Literal["recorded_at", "occurred_at"] = "recorded_at",
    progress: bool | None = None,
) -> PastReadModel:
    """Returns `projection`'s read model as of `when`; see ``SqlProjection.as_of``."""
    past = store.as_of(when, by=by)  # checks `when` and `by` as the store does
    engine = _PastEngine(past, projection)
    try:
        build = engine.begin_build()
        hi = engine.visible()
        if build.position < hi:
            try:
                engine.apply_build(build, hi, progress=_progress.wanted(progress, hi))
            except WindowFailed as failed:
                raise ProjectionError(
                    projection.name, f"apply_sql failed on the events at positions 1..{hi}: {failed.error}"
                ) from failed.error
        con = engine.con
        # As in the store: the tables answer to their plain names.
        for table in build.tables:
            source = f"{quote(build.schema)}.{quote(table)}"
            con.execute(f"CREATE OR REPLACE VIEW main.{quote(table)} AS SELECT * FROM {source}")
    except BaseException:
        engine.close()
        raise
    return PastReadModel(engine, build.tables, past.position)
