"""What user SQL may do: the checks run before ``store.sql``, and one error for every failure.

DuckDB has no permissions, and the store's own tables (the catalog of data files,
snapshots, checkpoints, queues) share a database with the read models users query.
So every statement is parsed (by DuckDB) before it runs:

- reading (SELECT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) is always allowed;
- a restricted connection (read-only openers and ``eventador sql`` without
  ``allow_external``) allows nothing else, and its DuckDB database may open no file
  outside the store's data directory;
- otherwise a statement may write anything except the store's own objects: no
  INSERT, UPDATE, DELETE, COPY FROM, CREATE, DROP or ALTER may name a store table,
  a store view (``events``, the typed and live views, projection tables) or a
  projection's schema, and no macro may replace a built-in function; PREPARE,
  EXECUTE, IMPORT DATABASE and COPY FROM DATABASE, whose effect the check cannot
  see, are refused.

``SqlRelation`` wraps the lazy DuckDB relation ``store.sql`` returns, so that an error
at fetch time (``.df()``, ``.fetchall()``...) is a ``SqlError`` too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from eventador.errors import SqlCorruptionError, SqlError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["STORE_TABLES", "STORE_VIEWS", "SqlRelation", "check_query", "fixed_names", "restrict", "sql_error"]

STORE_TABLES = {
    "files": "the catalog of the store's data files",
    "store_meta": "the store's id and where its log goes on",
    "store_checkpoints": "the checkpoints written with appends, as at the last flush",
    "snapshots": "the store's snapshots",
    "projection_checkpoints": "the projections' checkpoints",
    "sql_projections": "the SQL projections' definitions",
    "projection_errors": "the projections' error log",
    "live_views": "the live views' definitions",
    "queue_messages": "the durable queues' messages",
    "queue_dedupe": "the durable queues' deduplication keys",
}
"""The store's own tables (store/catalog.py, projections/checkpoints.py, store/live_views.py,
queue_engine.py), by name: user SQL reads them, never writes them."""

STORE_VIEWS = ("events", "new_events", "_all", "_hot", "_memory")
"""The views the store makes on each connection (``new_events``: a projection's batch)."""


def fixed_names() -> dict[str, str]:
    """The store's names that never change (tables and views) -> what they are."""
    names = dict(STORE_TABLES)
    names.update((view, "a view of the store's events") for view in STORE_VIEWS)
    return names


_SYSTEM_SCHEMAS = ("main", "temp", "information_schema", "pg_catalog")
_PROJECTION_SCHEMA = re.compile(r".+__v\d+\Z")
_READING = frozenset({duckdb.StatementType.SELECT})
_HIDDEN_EFFECT = frozenset({duckdb.StatementType.PREPARE, duckdb.StatementType.EXECUTE})
# Settings that would keep DuckDB from reading the store's own files for the rest of the process.
_LOCKOUT = frozenset({
    "enable_external_access", "lock_configuration", "allowed_directories", "allowed_paths", "disabled_filesystems",
})
_ALLOW_HINT = "open the store with allow_external=True (eventador sql --allow-external) to lift this"


def restrict(con: duckdb.DuckDBPyConnection, data_dir: Path | Sequence[Path] | None) -> None:
    """Lock `con`'s (private, in-memory) database out of every file but the store's data files.

    DuckDB still reads the Parquet files under `data_dir` (the views need them; several
    directories for a sharded store); COPY, ATTACH, INSTALL, LOAD and every read_* of
    another path fail, and the configuration is locked so that no statement can lift it.
    """
    con.execute("SET TimeZone = 'UTC'")  # before the lock: the views print times in UTC
    dirs = [] if data_dir is None else [data_dir] if isinstance(data_dir, Path) else list(data_dir)
    if dirs:
        con.execute("SET allowed_directories = ?", [[str(d.resolve()) + "/" for d in dirs]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def check_query(
    query: object, *, restricted: bool, protected: Callable[[], Mapping[str, str]], own_schema: bool = False
) -> None:
    """Refuse `query` unless every statement in it is allowed (see the module's docstring).

    `protected`: the store's object names (lower case) -> what they are, asked only
    when a statement writes. `own_schema`: the query runs in a schema of its own (a
    projection's setup_sql), so an unqualified CREATE hides nothing of the store's.

    Raises:
        SqlError: the query is empty, does not parse, or a statement is refused.
    """
    if not isinstance(query, str):
        raise SqlError(f"SQL error: a query is a str, got {type(query).__name__}")
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise SqlError(f"SQL error: {exc}") from exc
    if not statements:
        raise SqlError("SQL error: the query is empty")
    names: dict[str, Mapping[str, str]] = {}

    def store_names() -> Mapping[str, str]:
        if "names" not in names:
            names["names"] = protected()
        return names["names"]

    for statement in statements:
        _check_statement(statement, restricted=restricted, protected=store_names, own_schema=own_schema)


def _check_statement(
    statement: duckdb.Statement, *, restricted: bool, protected: Callable[[], Mapping[str, str]], own_schema: bool
) -> None:
    kind = statement.type
    if kind in _READING:
        return
    text = statement.query.strip().rstrip(";").strip()
    words = _words(text)
    if kind == duckdb.StatementType.EXPLAIN:
        inner = _explained(text, words)
        if inner is not None:  # EXPLAIN ANALYZE runs the statement
            for explained in duckdb.extract_statements(inner):
                _check_statement(explained, restricted=restricted, protected=protected, own_schema=own_schema)
        return
    shown = str(kind).rsplit(".", 1)[-1].replace("_", " ")
    if restricted:
        raise SqlError(
            f"SQL error: refused {shown}: this store's SQL only reads (a read-only opener or eventador sql); "
            f"{_ALLOW_HINT}"
        )
    first = words[0][0].lower() if words else ""
    if kind in _HIDDEN_EFFECT or (kind == duckdb.StatementType.PRAGMA and first != "pragma"):
        raise SqlError(
            f"SQL error: refused {' '.join(w for w, _ in words[:2]).upper()}: "
            "store.sql does not run PREPARE, EXECUTE, IMPORT or COPY DATABASE (their effect cannot be checked)"
        )
    if kind == duckdb.StatementType.SET:
        option = _skip([w.lower() for w, _ in words], 1, "global", "session", "local")
        if option < len(words) and words[option][0].lower() in _LOCKOUT:
            raise SqlError(
                f"SQL error: refused SET {words[option][0]}: it would lock the store's views out of its files"
            )
    for what, parts in _targets(kind, words):
        if own_schema and kind == duckdb.StatementType.CREATE and len(parts) == 1 and what != "schema":
            continue
        name = parts[-1].lower()
        names = protected()
        if what == "schema":
            if name in _SYSTEM_SCHEMAS or _PROJECTION_SCHEMA.match(name):
                raise SqlError(f"SQL error: refused {shown}: schema {parts[-1]!r} belongs to the store")
        elif what in ("macro", "function") and name in _builtin_functions():
            # A macro named like a built-in function replaces it in every view and projection.
            raise SqlError(f"SQL error: refused {shown}: {parts[-1]!r} is a built-in function the store's views use")
        elif name in names:
            raise SqlError(
                f"SQL error: refused {shown}: {parts[-1]!r} is {names[name]}, which user SQL may read "
                "but not change; name your own tables otherwise"
            )


@functools.cache
def _builtin_functions() -> frozenset[str]:
    con = duckdb.connect()
    try:
        rows = con.execute("SELECT DISTINCT lower(function_name) FROM duckdb_functions() WHERE internal").fetchall()
    finally:
        con.close()
    return frozenset(str(name) for (name,) in rows)


def _words(text: str) -> list[tuple[str, bool]]:
    """`text`'s tokens (comments left out): (text, is a name), quoted names unquoted."""
    tokens = duckdb.tokenize(text)
    words: list[tuple[str, bool]] = []
    for i, (start, kind) in enumerate(tokens):
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(text)
        word = text[start:end].strip()
        if kind == duckdb.token_type.comment or not word:
            continue
        is_name = kind in (duckdb.token_type.identifier, duckdb.token_type.keyword)
        if is_name and len(word) >= 2 and word[0] == word[-1] == '"':
            word = word[1:-1].replace('""', '"')
        elif kind == duckdb.token_type.operator and len(word) > 1 and word not in ("::", "->", "->>"):
            # The tokenizer may glue operators ("(*)", ");"): split into single characters.
            words.extend((c, False) for c in word if not c.isspace())
            continue
        words.append((word, is_name))
    return words


def _explained(text: str, words: list[tuple[str, bool]]) -> str | None:
    """The statement EXPLAIN ANALYZE runs (None for a plain EXPLAIN, which runs nothing)."""
    lowered = [w.lower() for w, _ in words]
    analyze = "analyze" in lowered[1:2] or (lowered[1:2] == ["("] and "analyze" in lowered[: lowered.index(")") + 1])
    if not analyze:
        return None
    match = re.match(r"\s*explain\s+(analyze\b|\([^)]*\))\s*", text, re.IGNORECASE)
    return text[match.end():] if match else text


def _qualified(words: list[tuple[str, bool]], i: int) -> tuple[list[str], int]:
    """The dotted name at `words[i]` and the index after it."""
    parts: list[str] = []
    while i < len(words) and words[i][1]:
        parts.append(words[i][0])
        if i + 2 < len(words) and words[i + 1][0] == "." and words[i + 2][1]:
            i += 2
        else:
            i += 1
            break
    return parts, i


def _skip(lowered: list[str], i: int, *optional: str) -> int:
    while i < len(lowered) and lowered[i] in optional:
        i += 1
    return i


def _top_level(lowered: list[str], wanted: tuple[str, ...], start: int = 0) -> int:
    """The index of the first of `wanted` outside parentheses, or -1."""
    depth = 0
    for i in range(start, len(lowered)):
        w = lowered[i]
        depth += (w == "(") - (w == ")")
        if depth == 0 and w in wanted:
            return i
    return -1


_CREATE_MODIFIERS = ("or", "replace", "temp", "temporary", "persistent", "unique", "internal")


def _targets(kind: duckdb.StatementType, words: list[tuple[str, bool]]) -> list[tuple[str, list[str]]]:
    """What the statement writes, creates, drops or alters: (object kind, dotted name)."""
    lowered = [w.lower() for w, _ in words]
    found: list[tuple[str, list[str]]] = []
    T = duckdb.StatementType
    if kind in (T.INSERT, T.UPDATE, T.DELETE, T.MERGE_INTO):
        i = _top_level(lowered, ("insert", "update", "delete", "truncate", "merge"))
        if i >= 0:
            verb = lowered[i]
            if verb in ("insert", "merge"):
                i = _top_level(lowered, ("into",), i)
            elif verb == "delete":
                i = _top_level(lowered, ("from",), i)
            elif verb == "truncate":
                i = _skip(lowered, i + 1, "table") - 1
            found.append(("table", _qualified(words, i + 1)[0]))
    elif kind == T.COPY and lowered[1:2] != ["("]:
        name, i = _qualified(words, 1)
        if _top_level(lowered, ("from", "to"), i) >= 0 and lowered[_top_level(lowered, ("from", "to"), i)] == "from":
            found.append(("table", name))
    elif kind == T.CREATE:
        i = _skip(lowered, 1, *_CREATE_MODIFIERS)
        what = lowered[i] if i < len(lowered) else ""
        i = _skip(lowered, i + 1, "table", "if", "not", "exists")
        found.append((what, _qualified(words, i)[0]))
        if what == "index":
            on = _top_level(lowered, ("on",), i)
            if on >= 0:
                found.append(("table", _qualified(words, on + 1)[0]))
    elif kind == T.DROP:
        what = lowered[1] if len(lowered) > 1 else ""
        i = _skip(lowered, 2, "table", "if", "exists")
        while i < len(words):
            name, i = _qualified(words, i)
            if not name:
                break
            found.append((what, name))
            if i < len(words) and words[i][0] == ",":
                i += 1
    elif kind == T.ALTER and lowered[:1] == ["alter"]:
        what = lowered[1] if len(lowered) > 1 else ""
        name, i = _qualified(words, _skip(lowered, 2, "if", "exists"))
        found.append((what, name))
        rename = _top_level(lowered, ("rename",), i)
        if rename >= 0 and lowered[rename + 1 : rename + 2] == ["to"]:
            found.append((what, _qualified(words, rename + 2)[0]))
    return [(what, name) for what, name in found if name]


# -- errors, also at fetch time -----------------------------------------------------------


# What DuckDB says when a Parquet file is damaged (a thrift or page decode error is a bare
# duckdb.Error); a user's own mistake (a typo, a bad cast, a malformed CSV) says none of these.
_DAMAGE_WORDS = ("parquet", "thrift", "decompress", "corrupt", "checksum", "page")


def sql_error(exc: duckdb.Error, files: Sequence[Path] = ()) -> SqlError:
    """The eventador error for DuckDB's `exc`: a SqlCorruptionError when one of the store's
    data `files` is unreadable, else a SqlError quoting DuckDB.

    DuckDB's message often does not name the file: on an error a damaged file can cause,
    the files are read once more with pyarrow to find it (only on this error path).
    """
    if isinstance(exc, SqlError):
        return exc
    text = str(exc)
    named = [path for path in files if str(path) in text]
    lowered = text.lower()
    if named or type(exc) is duckdb.Error or any(word in lowered for word in _DAMAGE_WORDS):
        for path in named or files:
            reason = _unreadable(path)
            if reason is not None:
                return SqlCorruptionError(str(path), f"SQL could not read it ({text}): {reason}")
    return SqlError(f"SQL error: {text}")


def _unreadable(path: Path) -> str | None:
    """Why the Parquet file at `path` cannot be read whole (None: it can, or it is gone)."""
    try:
        pq.read_table(path, page_checksum_verification=True)
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowException) as exc:
        return str(exc)
    return None


class SqlRelation:
    """A DuckDB relation whose every failure, when it is built and when it runs, is a ``SqlError``.

    It has the relation's methods (``.df()``, ``.arrow()``, ``.fetchall()``, ``.show()``,
    ``.filter()``...); ones that return a relation return a ``SqlRelation`` again, and an
    Arrow reader is wrapped so that an error while reading it is translated too.
    ``.relation`` is the DuckDB relation itself.
    """

    __slots__ = ("_files", "relation")

    def __init__(self, relation: duckdb.DuckDBPyRelation, files: Sequence[Path] = ()) -> None:
        self.relation = relation
        self._files = tuple(files)

    def _run(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        args = tuple(a.relation if isinstance(a, SqlRelation) else a for a in args)
        try:
            result = call(*args, **kwargs)
        except duckdb.Error as exc:
            raise sql_error(exc, self._files) from exc
        if isinstance(result, duckdb.DuckDBPyRelation):
            return SqlRelation(result, self._files)
        if isinstance(result, pa.RecordBatchReader):
            return pa.RecordBatchReader.from_batches(result.schema, self._batches(result))
        return result

    def _batches(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except (duckdb.Error, pa.ArrowException) as exc:
            raise sql_error(duckdb.Error(str(exc)), self._files) from exc

    def __getattr__(self, name: str) -> Any:
        try:
            attr = getattr(self.relation, name)
        except duckdb.Error as exc:
            raise sql_error(exc, self._files) from exc
        if isinstance(attr, duckdb.DuckDBPyRelation):  # rel.amount: one column
            return SqlRelation(attr, self._files)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: self._run(attr, *args, **kwargs)

    # The common ones, typed (the rest go through __getattr__).
    def df(self, **kwargs: Any) -> pd.DataFrame:
        """The result as a pandas DataFrame."""
        frame: pd.DataFrame = self._run(self.relation.df, **kwargs)
        return frame

    def fetchall(self) -> list[tuple[Any, ...]]:
        """The result rows as tuples."""
        rows: list[tuple[Any, ...]] = self._run(self.relation.fetchall)
        return rows

    def arrow(self) -> pa.RecordBatchReader:
        """The result as an Arrow record batch reader (``.read_all()`` makes a table)."""
        reader: pa.RecordBatchReader = self._run(self.relation.arrow)
        return reader

    def fetch_arrow_table(self) -> pa.Table:
        """The result as an Arrow table."""
        table: pa.Table = self._run(self.relation.fetch_arrow_table)
        return table

    def show(self, **kwargs: Any) -> None:
        """Print the first rows."""
        self._run(self.relation.show, **kwargs)

    @property
    def columns(self) -> list[str]:
        """The result's column names (known without running the query)."""
        return list(self.relation.columns)

    def __getitem__(self, item: Any) -> Any:
        return self._run(self.relation.__getitem__, item)

    def __len__(self) -> int:
        return int(self._run(self.relation.__len__))

    def __contains__(self, item: object) -> bool:
        return bool(self._run(self.relation.__contains__, item))

    def __repr__(self) -> str:
        return str(self._run(self.relation.__repr__))

    def __str__(self) -> str:
        return str(self._run(self.relation.__str__))

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        # pandas, polars and pyarrow read the result through this without a copy.
        return self.arrow().__arrow_c_stream__(requested_schema)
