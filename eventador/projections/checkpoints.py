"""The projection tables of the catalog: checkpoints, SQL projection definitions, errors.

They live in the store's own DuckDB database (``store.connect()``), beside the read
models, so that a read-model change and its checkpoint commit in one transaction:

- ``projection_checkpoints``: one row per projection (``kind`` ``sql`` or ``python``):
  every event at or below ``position`` has been applied (or skipped and recorded).
- ``sql_projections``: each SqlProjection's definition, its live version (the schema
  ``<name>__v<N>`` its tables are in) and the tables it made, so that
  ``eventador projection rebuild DIR NAME`` needs no user code.
- ``projection_errors``: the events a projection skipped or stopped at, with the error;
  ask it with SQL: ``store.sql("SELECT * FROM projection_errors")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from eventador.errors import StoreError
from eventador.store.catalog import table_exists
from eventador.store.live_views import LIVE_VIEWS
from eventador.store.views import literal

__all__ = [
    "CHECKPOINTS",
    "DEFINITIONS",
    "ERRORS",
    "LIVE_VIEWS",
    "Definition",
    "add_checkpoint",
    "ensure_tables",
    "read_checkpoint",
    "read_checkpoints",
    "read_definition",
    "read_definitions",
    "record_error",
    "set_checkpoint",
    "table_exists",
]

CHECKPOINTS = "projection_checkpoints"
DEFINITIONS = "sql_projections"
ERRORS = "projection_errors"

_DDL = (
    f"""
    CREATE TABLE IF NOT EXISTS {CHECKPOINTS} (
        name VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        position BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {DEFINITIONS} (
        name VARCHAR PRIMARY KEY,
        setup_sql VARCHAR NOT NULL,
        apply_sql VARCHAR NOT NULL,
        event_types VARCHAR[],
        version INTEGER NOT NULL,
        tables VARCHAR[] NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        rebuilt_at TIMESTAMPTZ NOT NULL
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {ERRORS} (
        projection VARCHAR NOT NULL,
        position BIGINT,
        stream_id VARCHAR,
        event_type VARCHAR,
        error VARCHAR NOT NULL,
        policy VARCHAR NOT NULL,
        attempts INTEGER NOT NULL,
        recorded_at TIMESTAMPTZ NOT NULL
    )
    """,
)


@dataclass(frozen=True, slots=True)
class Definition:
    """A stored SqlProjection: its SQL, and where its live tables are."""

    name: str
    setup_sql: str
    apply_sql: str
    event_types: tuple[str, ...] | None
    version: int
    tables: tuple[str, ...]
    created_at: datetime
    rebuilt_at: datetime

    @property
    def schema(self) -> str:
        return schema_name(self.name, self.version)


def schema_name(name: str, version: int) -> str:
    """The schema that holds version `version` of projection `name`'s tables."""
    return f"{name}__v{version}"


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the projection tables if missing (idempotent; safe from several connections)."""
    for ddl in _DDL:
        for attempt in range(3):
            try:
                con.execute(ddl)
                break
            except duckdb.TransactionException as exc:
                # Another connection created it at the same moment: look again.
                if attempt == 2:
                    raise StoreError(f"could not create the projection tables: {exc}") from exc
            except duckdb.Error as exc:
                raise StoreError(f"could not create the projection tables: {exc}") from exc


def read_checkpoint(con: duckdb.DuckDBPyConnection, name: str) -> tuple[str, int] | None:
    """(kind, position) of projection `name`, or None when it has none yet."""
    rows = con.execute(f"SELECT kind, position FROM {CHECKPOINTS} WHERE name = ?", [name]).fetchall()
    return (str(rows[0][0]), int(rows[0][1])) if rows else None


def read_checkpoints(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, int, datetime]]:
    """Every projection's (kind, position, updated_at), by name; empty when there are none."""
    if not table_exists(con, CHECKPOINTS):
        return {}
    rows = con.execute(f"SELECT name, kind, position, updated_at FROM {CHECKPOINTS} ORDER BY name").fetchall()
    return {str(r[0]): (str(r[1]), int(r[2]), r[3]) for r in rows}


def add_checkpoint(con: duckdb.DuckDBPyConnection, name: str, kind: str, now: datetime) -> None:
    """Give projection `name` a checkpoint row at 0 unless it has one."""
    con.execute(
        f"INSERT INTO {CHECKPOINTS} (name, kind, position, updated_at) VALUES (?, ?, 0, ?) ON CONFLICT DO NOTHING",
        [name, kind, now],
    )


def set_checkpoint(con: duckdb.DuckDBPyConnection, name: str, position: int, now: datetime) -> None:
    """Move projection `name`'s checkpoint (inside the caller's transaction, if any).

    Literals, not parameters: this runs once per batch and DuckDB prepares a
    parameterised statement anew each time.
    """
    con.execute(
        f"UPDATE {CHECKPOINTS} SET position = {int(position)}, "
        f"updated_at = {literal(now.isoformat())}::TIMESTAMPTZ WHERE name = {literal(name)}"
    )


def record_error(
    con: duckdb.DuckDBPyConnection,
    projection: str,
    *,
    position: int | None,
    stream_id: str | None,
    event_type: str | None,
    error: str,
    policy: str,
    attempts: int,
    now: datetime,
) -> None:
    con.execute(
        f"INSERT INTO {ERRORS} (projection, position, stream_id, event_type, error, policy, attempts, recorded_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [projection, position, stream_id, event_type, error, policy, attempts, now],
    )


def error_counts(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, str | None]]:
    """Per projection: how many errors are recorded, and the newest one's message."""
    if not table_exists(con, ERRORS):
        return {}
    rows = con.execute(
        f"SELECT projection, count(*), arg_max(error, recorded_at) FROM {ERRORS} GROUP BY 1"
    ).fetchall()
    return {str(r[0]): (int(r[1]), r[2]) for r in rows}


_DEF_COLUMNS = "name, setup_sql, apply_sql, event_types, version, tables, created_at, rebuilt_at"


def _definition(row: tuple[Any, ...]) -> Definition:
    name, setup_sql, apply_sql, event_types, version, tables, created_at, rebuilt_at = row
    return Definition(
        str(name), str(setup_sql), str(apply_sql),
        None if event_types is None else tuple(event_types),
        int(version), tuple(tables), created_at, rebuilt_at,
    )


def read_definition(con: duckdb.DuckDBPyConnection, name: str) -> Definition | None:
    if not table_exists(con, DEFINITIONS):
        return None
    rows = con.execute(f"SELECT {_DEF_COLUMNS} FROM {DEFINITIONS} WHERE name = ?", [name]).fetchall()
    return _definition(rows[0]) if rows else None


def read_definitions(con: duckdb.DuckDBPyConnection) -> list[Definition]:
    if not table_exists(con, DEFINITIONS):
        return []
    rows = con.execute(f"SELECT {_DEF_COLUMNS} FROM {DEFINITIONS} ORDER BY name").fetchall()
    return [_definition(r) for r in rows]
