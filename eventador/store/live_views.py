"""Live SQL views: named queries over the store's events, kept with the store.

``store.create_view("balances", "SELECT account_id, sum(amount) ... FROM Deposited GROUP BY 1")``
makes a read model that is always current: it is a DuckDB view over ``events`` and
the typed views, so every query sees every event, flushed or not. Nothing is
materialised; a query costs a scan (columnar, in DuckDB).

Where they live: the definitions are rows of the catalog table ``live_views`` (and,
for read-only openers, which cannot open the catalog while a writer has it, the
file ``views.json`` beside it, replaced atomically after every change). The views
themselves are TEMP views, made on each DuckDB connection the store's SQL runs on
(``store.sql``, views of the past, projection connections) and made again when that
connection's views are rebuilt, because ``events`` is a TEMP view of each connection.
"""

from __future__ import annotations

import json
import os
import re
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb

from eventador.errors import EventadorError, InvalidInputError, ProjectionError, ProjectionNameError, StoreError
from eventador.store.catalog import table_exists
from eventador.store.views import SqlViews, quote
from eventador.store.wal import fsync_directory

if TYPE_CHECKING:
    from eventador.store.querying import Querying

__all__ = ["LIVE_VIEWS", "VIEWS_FILE", "LiveView", "LiveViews", "check_identifier", "taken_names"]

LIVE_VIEWS = "live_views"
"""The catalog table of the live views' definitions."""
VIEWS_FILE = "views.json"
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_RESERVED_PREFIXES = ("new_", "_")
_BUILTIN = frozenset({"events"})


@dataclass(frozen=True, slots=True)
class LiveView:
    """A live SQL view of a store: its name, its SELECT, and when it was made."""

    name: str
    sql: str
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sql": self.sql, "created_at": self.created_at.isoformat()}


def check_identifier(name: object, kind: str) -> str:
    """`name` when it is a plain SQL identifier that eventador does not reserve.

    Raises:
        ProjectionNameError: not a str, not an identifier, or reserved (``new_...``, ``_...``).
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ProjectionNameError(
            str(name),
            "a name must be a SQL identifier: a letter, then letters, digits or _ (e.g. 'balances')",
            kind=kind,
        )
    if name.lower().startswith(_RESERVED_PREFIXES):
        raise ProjectionNameError(
            name, "names starting with 'new_' or '_' are reserved (projection batches, internals)", kind=kind
        )
    return name


def taken_names(store: Querying, con: duckdb.DuckDBPyConnection, views: SqlViews) -> dict[str, str]:
    """Every name a new view or table would collide with, lower-cased, with what holds it."""
    taken: dict[str, str] = {n: "the built-in view of all events" for n in _BUILTIN}
    for event_type in (*views.typed, *store.registry.names()):
        taken[event_type.lower()] = f"the typed view of event type {event_type!r}"
    for event_type, view in views.view_names.items():  # event_files for type files, say
        taken[view.lower()] = f"the typed view of event type {event_type!r}"
    rows = con.execute(
        "SELECT table_name, 'table' FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' UNION ALL "
        "SELECT view_name, 'view' FROM duckdb_views() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND NOT internal"
    ).fetchall()
    for name, what in rows:
        taken.setdefault(str(name).lower(), f"a {what} in the store's database")
    return taken


class LiveViews:
    """The live views of one store: ``store.create_view``, ``store.views``, ``store.drop_view``.

    Thread-safe. Loading the definitions costs one catalog query (or one small
    file read for read-only stores) the first time; installing them on a
    connection costs one ``CREATE VIEW`` each, only when that connection's views
    were rebuilt or the definitions changed.
    """

    def __init__(self, store: Querying) -> None:
        self._store = store
        self._lock = threading.RLock()
        self._defs: dict[str, LiveView] | None = None
        self._file_stamp: int | None = None
        self._generation = 0
        self._installed: weakref.WeakKeyDictionary[SqlViews, tuple[tuple[int, int], frozenset[str]]] = (
            weakref.WeakKeyDictionary()
        )

    # -- reading ------------------------------------------------------------------------

    def list(self) -> list[LiveView]:
        """The live views, oldest first."""
        with self._lock:
            return list(self._definitions().values())

    def _definitions(self) -> dict[str, LiveView]:
        store = self._store
        if store.read_only:
            self._load_file()
        elif self._defs is None:
            self._defs = self._load_catalog()
            self._publish()  # heal a crash between the catalog commit and the file
        assert self._defs is not None
        return self._defs

    def _load_catalog(self) -> dict[str, LiveView]:
        con = self._store.connect()
        try:
            if not table_exists(con, LIVE_VIEWS):
                return {}
            rows = con.execute(f"SELECT name, sql, created_at FROM {LIVE_VIEWS} ORDER BY created_at, name").fetchall()
        finally:
            con.close()
        return {str(n): LiveView(str(n), str(s), c) for n, s, c in rows}

    def _load_file(self) -> None:
        path = self._store.path
        if path is None:
            self._defs = {}
            return
        try:
            stamp = (path / VIEWS_FILE).stat().st_mtime_ns
        except FileNotFoundError:
            self._defs, self._file_stamp = {}, None
            return
        if self._defs is not None and stamp == self._file_stamp:
            return
        data = json.loads((path / VIEWS_FILE).read_bytes())
        self._defs = {
            v["name"]: LiveView(v["name"], v["sql"], datetime.fromisoformat(v["created_at"])) for v in data["views"]
        }
        self._file_stamp = stamp
        self._generation += 1

    def _publish(self) -> None:
        """Replace views.json (on-disk writers only) when it differs from the definitions."""
        path = self._store.path
        if path is None or self._store.read_only or self._defs is None:
            return
        body = json.dumps({"format": 1, "views": [v.as_dict() for v in self._defs.values()]}, indent=1).encode()
        target = path / VIEWS_FILE
        try:
            if target.read_bytes() == body:
                return
        except FileNotFoundError:
            if not self._defs:
                return
        temp = path / f".tmp-{VIEWS_FILE}"
        with open(temp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
        fsync_directory(path)

    # -- installing on a connection -------------------------------------------------------

    def install(self, views: SqlViews) -> None:
        """Make the live views on `views`' connection, if its views changed since the last time.

        Never raises: a view that cannot be made on this connection (its event type
        has no view yet in this process, say) is left out until the views change.
        """
        try:
            with self._lock:
                defs = self._definitions()
                key = (self._generation, views.generation)
                state = self._installed.get(views)
                if state is not None and state[0] == key:
                    return
                previous = state[1] if state is not None else frozenset()
                if defs:  # the typed views they read must exist, even if still empty
                    views.make_empty_views(" ".join(view.sql for view in defs.values()))
                shadowed = {t.lower() for t in views.typed} | _BUILTIN
                made: set[str] = set()
                for view in defs.values():
                    if view.name.lower() in shadowed:
                        continue
                    try:
                        views.con.execute(f"CREATE OR REPLACE TEMP VIEW {quote(view.name)} AS {view.sql}")
                    except duckdb.Error:
                        continue
                    made.add(view.name)
                for name in previous - made:
                    if name.lower() not in shadowed:
                        views.con.execute(f"DROP VIEW IF EXISTS temp.main.{quote(name)}")
                self._installed[views] = (key, frozenset(made))
        except (duckdb.Error, OSError, ValueError, KeyError, EventadorError):
            return

    # -- changing -------------------------------------------------------------------------

    def create(self, name: str, sql: str, *, replace: bool = False) -> LiveView:
        """Make (or with `replace`, change) live view `name`; see ``EventStore.create_view`` (which
        checks that the store is writable)."""
        store = self._store
        check_identifier(name, "view")
        text = _one_select(name, sql)
        # The SQL lock first, then ours: the order ``store.sql`` takes them in (it installs the views).
        with store.bind_views(store.state(), query=text) as views, self._lock:
            defs = self._definitions()
            existing = next((v for v in defs.values() if v.name.lower() == name.lower()), None)
            if existing is not None and not replace:
                raise ProjectionNameError(
                    name, "a live view of that name exists; pass replace=True to change it", kind="view"
                )
            con = store.connect()
            try:
                if existing is None:
                    holder = taken_names(store, con, views).get(name.lower())
                    if holder is not None:
                        raise ProjectionNameError(name, f"the name is taken by {holder}", kind="view")
                try:
                    # Binding checks the SQL; a failed CREATE OR REPLACE leaves the old view as it was.
                    views.con.execute(f"CREATE OR REPLACE TEMP VIEW {quote(name)} AS {text}")
                except duckdb.Error as exc:
                    raise _view_error(name, f"the SQL does not run: {exc}") from exc
                view = LiveView(name, text, store.clock.now())
                try:
                    self._save(con, view, existing)
                except duckdb.Error as exc:
                    self._restore(views, name, existing)
                    raise StoreError(f"could not save live view {name!r}: {exc}") from exc
            finally:
                con.close()
            if existing is not None:
                del defs[existing.name]
            defs[name] = view
            self._generation += 1
            self._installed[views] = ((self._generation, views.generation), frozenset(defs))
            self._publish()
        return view

    def drop(self, name: str) -> None:
        """Remove live view `name`.

        Raises:
            InvalidInputError: there is no live view of that name.
        """
        store = self._store
        with self._lock:
            defs = self._definitions()
            existing = next((v for v in defs.values() if v.name.lower() == str(name).lower()), None)
            if existing is None:
                raise InvalidInputError(f"no live view named {name!r}; store.views() lists them")
            con = store.connect()
            try:
                con.execute(f"DELETE FROM {LIVE_VIEWS} WHERE name = ?", [existing.name])
            except duckdb.Error as exc:
                raise StoreError(f"could not drop live view {name!r}: {exc}") from exc
            finally:
                con.close()
            del defs[existing.name]
            self._generation += 1
            self._publish()
        # Binding the store's own views again installs the live views there, without this one.
        with store.bind_views(store.state(), query=""):
            pass

    def _save(self, con: duckdb.DuckDBPyConnection, view: LiveView, existing: LiveView | None) -> None:
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {LIVE_VIEWS} "
            "(name VARCHAR PRIMARY KEY, sql VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL)"
        )
        con.execute("BEGIN")
        try:
            if existing is not None:
                con.execute(f"DELETE FROM {LIVE_VIEWS} WHERE name = ?", [existing.name])
            con.execute(
                f"INSERT INTO {LIVE_VIEWS} (name, sql, created_at) VALUES (?, ?, ?)",
                [view.name, view.sql, view.created_at],
            )
            con.execute("COMMIT")
        except duckdb.Error:
            con.execute("ROLLBACK")
            raise

    @staticmethod
    def _restore(views: SqlViews, name: str, existing: LiveView | None) -> None:
        try:
            if existing is None:
                views.con.execute(f"DROP VIEW IF EXISTS temp.main.{quote(name)}")
            else:
                views.con.execute(f"CREATE OR REPLACE TEMP VIEW {quote(existing.name)} AS {existing.sql}")
        except duckdb.Error:
            pass


def _one_select(name: str, sql: object) -> str:
    """`sql` without a trailing semicolon, when it is exactly one SELECT statement."""
    if not isinstance(sql, str) or not sql.strip():
        raise _view_error(name, "a view needs a SELECT query, e.g. 'SELECT * FROM events'")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise _view_error(name, f"the SQL does not parse: {exc}") from exc
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        kinds = ", ".join(str(s.type).rsplit(".", 1)[-1] for s in statements) or "nothing"
        raise _view_error(name, f"a view is one SELECT query; got {kinds}")
    return sql.strip().rstrip(";").strip()


def _view_error(name: str, reason: str) -> ProjectionError:
    """A ProjectionError about a live view (``projection`` holds the view's name)."""
    error = ProjectionError(name, reason)
    error.args = (f"view {name!r}: {reason}",)
    return error
