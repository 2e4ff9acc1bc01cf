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
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Literal

import duckdb

from eventador.errors import InvalidInputError, ProjectionError, SqlError, StoreClosedError
from eventador.messages import Event
from eventador.projections.checkpoints import Definition
from eventador.projections.past import PastReadModel, read_model_as_of
from eventador.projections.policies import ErrorPolicy, Retry, check_policy
from eventador.projections.sql_engine import SqlEngine, batch_view_name
from eventador.store.live_views import check_identifier
from eventador.store.sqlguard import check_query, fixed_names

if TYPE_CHECKING:
    from eventador.store.store import EventStore

__all__ = ["SqlProjection", "batch_view_name"]


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

        For example, for a read model ``balances`` with a table of the same name::

            jan = balances.as_of(store, datetime(2026, 1, 31, tzinfo=UTC))
            jan.sql("SELECT sum(balance) FROM balances").fetchall()  # [(Decimal('1234.50'),)]
        """
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
