"""Projections seen from outside their code: list what a store holds, rebuild an SqlProjection by name.

For the command line and notebooks: both need only the store, since an SqlProjection's
definition is stored with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventador.errors import InvalidInputError
from eventador.projections.checkpoints import (
    ensure_tables,
    error_counts,
    read_checkpoint,
    read_checkpoints,
    read_definition,
    read_definitions,
)
from eventador.projections.runner import ProjectionRunner
from eventador.projections.sql import SqlProjection

if TYPE_CHECKING:
    import pandas as pd

    from eventador.store.store import EventStore

__all__ = ["list_projections", "rebuild_projection"]


def list_projections(store: EventStore) -> pd.DataFrame:
    """Every projection the store has a checkpoint for: name, kind, checkpoint, lag, version, tables, errors.

    SqlProjections are described from their stored definitions; Python projections
    by their checkpoints only (their code is not in the store).
    """
    import pandas as pd

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
        return runner.checkpoints[name]
