"""The catalog: which Parquet files hold which positions (a DuckDB file), and a manifest for readers.

The same DuckDB database holds snapshots, projection tables and checkpoints, and
queues; the in-memory store keeps an in-memory one.

The writer keeps ``catalog.duckdb`` open; DuckDB allows no second process on a
file that is open for writing, so after every change the writer also replaces
``manifest.json`` atomically. Read-only openers read only the manifest.

The catalog is not the only record of what exists: every data file carries, in
its Parquet key-value metadata, what the catalog says about it (``FileFacts``:
the store's id, its positions and rows), so the files can be checked against the
catalog and the catalog rebuilt from them (``store/repair.py``). The catalog
also records the log segment the writer appends to, so that a missing newest
segment is noticed instead of read as a shorter log.

Checkpoints written with appends (``append_streams``) live in the log until a flush
retires its segments: each flush records them here (``store_checkpoints``, and in the
manifest) in the transaction that names its file, before the segments go.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from eventador.errors import CorruptionError, store_os_error
from eventador.store.snapshots import Snapshot
from eventador.store.wal import WriteAheadLog, fsync_directory

__all__ = [
    "SUMMARIES", "Catalog", "ColdSummary", "FileEntry", "FileFacts", "Manifest", "holds_store", "read_catalog",
    "read_facts", "read_manifest", "table_exists",
]

MANIFEST = "manifest.json"
CHECKPOINTS = "store_checkpoints"  # the checkpoints of the log segments already retired (and later ones)
CATALOG = "catalog.duckdb"
UPLOADED = "uploaded_files"
UPLOADED_HEADS = "uploaded_heads"  # each uploaded file's stream heads, so that opening need not fetch it
SUMMARIES = "summaries"  # the folder of the uploaded files' summaries, for read-only openers (ColdSummary.write)
DISCARDED = "discarded_copies"  # copies in the cold tier of files merged away: deleted after a grace period
FILE_FORMAT = 1  # the layout of the data files' own description (and of their columns)
_FACTS_KEY = b"eventador"


@dataclass(frozen=True, slots=True)
class FileEntry:
    name: str
    first_position: int
    last_position: int
    rows: int
    bytes: int


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What a data file says about itself, in its Parquet key-value metadata.

    `store_id` is None for a file written before files described themselves; its
    positions then come from the footer's statistics of the ``position`` column.
    """

    store_id: str | None
    first_position: int
    last_position: int
    rows: int
    format: int = FILE_FORMAT

    def metadata(self) -> dict[str, str]:
        """The key-value pairs to write into the file's metadata."""
        body = {
            "store_id": self.store_id,
            "first_position": self.first_position,
            "last_position": self.last_position,
            "rows": self.rows,
            "format": self.format,
        }
        return {_FACTS_KEY.decode(): json.dumps(body)}

    @staticmethod
    def from_schema(schema: pa.Schema) -> FileFacts | None:
        """The facts a file's Arrow schema carries (None for a file written before they existed)."""
        raw = (schema.metadata or {}).get(_FACTS_KEY)
        if raw is None:
            return None
        data = json.loads(raw)
        return FileFacts(
            data["store_id"], data["first_position"], data["last_position"], data["rows"], data["format"]
        )

    def disagreement(self, entry: FileEntry, store_id: str | None) -> str | None:
        """Why this file is not the one `entry` names in the store `store_id`; None when it is."""
        if store_id is not None and self.store_id is not None and self.store_id != store_id:
            return f"belongs to store {self.store_id}, not to this store ({store_id})"
        if (self.first_position, self.last_position, self.rows) != (
            entry.first_position, entry.last_position, entry.rows
        ):
            return (
                f"holds positions {self.first_position}-{self.last_position} ({self.rows} events), "
                f"the catalog says {entry.first_position}-{entry.last_position} ({entry.rows} events)"
            )
        return None


@dataclass(frozen=True, slots=True)
class ColdSummary:
    """What opening needs of a data file that may be evicted to the cold tier, kept in the
    catalog from its upload on: each stream's newest version in it, and its newest recorded_at
    (µs since the epoch). The rest (positions, rows, bytes) is the file's catalog entry.

    Read-only openers cannot open the catalog: the writer also leaves a copy of each in
    ``summaries/<file name>`` (``write``), which they read instead of fetching the file.
    """

    heads: dict[str, int]
    max_recorded_us: int

    def write(self, path: Path) -> None:
        """Write this summary to `path`, whole or not at all (a temporary name, then renamed;
        not fsynced: a reader that finds it missing or damaged fetches the file instead).

        Raises:
            OSError: it could not be written.
        """
        table = pa.table({
            "stream_id": pa.array(list(self.heads), pa.string()),
            "version": pa.array(list(self.heads.values()), pa.int64()),
        }).replace_schema_metadata({"max_recorded_us": str(self.max_recorded_us)})
        path.parent.mkdir(exist_ok=True)
        temp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:8]}")
        try:
            with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)

    @staticmethod
    def read(path: Path) -> ColdSummary | None:
        """The summary written to `path`; None when it is missing or unreadable."""
        try:
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_file(source).read_all()
            recorded = int((table.schema.metadata or {})[b"max_recorded_us"])
            ids, versions = table.column("stream_id").to_pylist(), table.column("version").to_pylist()
            return ColdSummary(dict(zip(ids, versions, strict=True)), recorded)
        except (OSError, KeyError, ValueError, pa.ArrowException):
            return None


def read_facts(path: Path) -> FileFacts:
    """What the data file at `path` says about itself, from its footer alone.

    Raises:
        CorruptionError: the file is not a readable Parquet file of events.
    """
    try:
        meta = pq.read_metadata(path)
        facts = FileFacts.from_schema(meta.schema.to_arrow_schema())
        if facts is not None:
            return facts
        index = meta.schema.names.index("position")
        lows, highs = [], []
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(index).statistics
            if stats is None or not stats.has_min_max:
                raise ValueError("no statistics of the position column")
            lows.append(int(stats.min))
            highs.append(int(stats.max))
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise CorruptionError(str(path), f"unreadable data file: {exc}") from exc
    if not lows:
        raise CorruptionError(str(path), "unreadable data file: it holds no events")
    return FileFacts(None, min(lows), max(highs), meta.num_rows)


def holds_store(directory: Path) -> bool:
    """Whether `directory` holds (part of) a store: a catalog, a manifest, data files or log segments."""
    return (
        (directory / CATALOG).exists()
        or (directory / MANIFEST).exists()
        or any((directory / "data").glob("*.parquet"))
        or bool(WriteAheadLog.segments(directory / "wal"))
    )


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the database `con` is on has table `name` (in its main schema)."""
    rows = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ?",
        [name],
    ).fetchall()
    return bool(rows[0][0])


class Catalog:
    """The writer's record of the store's files, in a DuckDB database."""

    def __init__(self, directory: Path | None, *, missing_ok: bool = False) -> None:
        """Open (or create) the catalog of the store in `directory`; None: an in-memory one.

        A new catalog is made only for a new store (or with `missing_ok`, by repair):
        a store whose catalog is gone must not be opened as an empty one.

        Raises:
            CorruptionError: the catalog is missing or unreadable.
        """
        self.directory = directory
        where = ":memory:" if directory is None else str(directory / CATALOG)
        if directory is not None and not missing_ok and not (directory / CATALOG).exists() and holds_store(directory):
            raise CorruptionError(
                where,
                "missing, but the directory holds a store (its manifest, data files or log); "
                f"`eventador repair {directory}` rebuilds the catalog from the files",
            )
        try:
            # 16 KB blocks instead of 256 KB: the catalog is small, and a new store
            # should not cost most of a megabyte before its first event.
            config: dict[str, str | bool | int | float | list[str]] = (
                {} if directory is None else {"default_block_size": "16384"}
            )
            self.db = duckdb.connect(where, config=config)
        except duckdb.Error as exc:
            raise CorruptionError(where, f"cannot open the catalog: {exc}") from exc
        self.where = where
        self._lock = threading.RLock()  # one DuckDB connection, shared by threads
        try:
            self._create_tables()
        except duckdb.Error as exc:
            self.db.close()
            raise CorruptionError(where, f"cannot read the catalog: {exc}") from exc

    def _create_tables(self) -> None:
        self.db.execute(
            """
            CREATE TABLE IF NOT EXISTS snapshots (
                stream_id VARCHAR NOT NULL,
                version BIGINT NOT NULL,
                state_type VARCHAR NOT NULL,
                fingerprint VARCHAR NOT NULL,
                compressed BOOLEAN NOT NULL,
                data BLOB NOT NULL,
                taken_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (stream_id, version)
            )
            """
        )
        self.db.execute(
            """
            CREATE TABLE IF NOT EXISTS files (
                name VARCHAR PRIMARY KEY,
                first_position BIGINT NOT NULL,
                last_position BIGINT NOT NULL,
                rows BIGINT NOT NULL,
                bytes BIGINT NOT NULL,
                created_at TIMESTAMPTZ DEFAULT now()
            )
            """
        )
        self.db.execute("CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
        # The data files whose copies are in the cold tier (store/coldtier.py): only these may
        # be missing from data/. A name stays while the files table names it. With each, what
        # opening needs of it (ColdSummary; null max_recorded_us: uploaded by a version that
        # kept none, so opening fetches it once and records it).
        self.db.execute(f"CREATE TABLE IF NOT EXISTS {UPLOADED} (name VARCHAR PRIMARY KEY)")
        self.db.execute(f"ALTER TABLE {UPLOADED} ADD COLUMN IF NOT EXISTS max_recorded_us BIGINT")
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {UPLOADED_HEADS} "
            "(name VARCHAR NOT NULL, stream_id VARCHAR NOT NULL, version BIGINT NOT NULL)"
        )
        # A file's name moves from uploaded_files to here in the transaction that forgets the file,
        # so a copy is always named by one of the two: never lost track of, and deleted (after a
        # grace period: readers begun before may still fetch it) only once no file of that name is listed.
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {DISCARDED} (name VARCHAR PRIMARY KEY, discarded_at DOUBLE NOT NULL)"
        )
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS} (name VARCHAR PRIMARY KEY, position BIGINT NOT NULL)"
        )
        stored = self._meta("store_id")
        self.store_id = stored or uuid.uuid4().hex
        """The store's id, written into each of its data files (made once, for a store that has none)."""
        if stored is None:
            self._set_meta("store_id", self.store_id)
        self.log_segment = int(self._meta("log_segment") or 0)
        """The newest log segment the writer began: new ones are numbered after it."""
        self.log_required = self._meta("log_required") == "1"
        """Whether that segment must exist (not when the writer closed with it unused, and removed it)."""

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM store_meta WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO store_meta VALUES (?, ?)", [key, value])

    def files(self) -> list[FileEntry]:
        """Raises CorruptionError when the catalog cannot be read (DuckDB checks each block's checksum)."""
        with self._lock:
            try:
                rows = self.db.execute(
                    "SELECT name, first_position, last_position, rows, bytes FROM files ORDER BY first_position"
                ).fetchall()
            except duckdb.Error as exc:
                raise CorruptionError(self.where, f"cannot read the catalog: {exc}") from exc
        return [FileEntry(*row) for row in rows]

    def uploaded(self) -> set[str]:
        """The names of the data files whose copies are in the cold tier."""
        with self._lock:
            return {str(name) for (name,) in self.db.execute(f"SELECT name FROM {UPLOADED}").fetchall()}

    def mark_uploaded(self, name: str, summary: ColdSummary) -> bool:
        """Record that the cold tier holds data file `name`, with what opening needs of it
        (`summary`), in one transaction, and write the manifest: once this returns True, the
        local copy may go. False: the catalog no longer names the file.

        Raises:
            StoreError: the catalog or the manifest could not be written.
        """
        with self._lock:
            with self._atomically():
                self.db.execute(
                    f"INSERT OR IGNORE INTO {UPLOADED} (name) SELECT name FROM files WHERE name = ?", [name]
                )
                row = self.db.execute(f"SELECT count(*) FROM {UPLOADED} WHERE name = ?", [name]).fetchone()
                if row and row[0]:
                    self._record_summary(name, summary)
            if not row or not row[0]:
                return False
            self.write_manifest()
        return True

    def record_summaries(self, summaries: dict[str, ColdSummary]) -> None:
        """Keep `summaries` of uploaded files that have none (uploaded by an older version), in one
        transaction; names no longer uploaded are passed over.

        Raises:
            StoreError: the catalog could not be written.
        """
        with self._lock, self._atomically():
            for name, summary in summaries.items():
                self._record_summary(name, summary)

    def _record_summary(self, name: str, summary: ColdSummary) -> None:
        """(Inside a transaction.) Keep `summary` with uploaded file `name`, if it is uploaded."""
        updated = self.db.execute(
            f"UPDATE {UPLOADED} SET max_recorded_us = ? WHERE name = ?", [summary.max_recorded_us, name]
        ).fetchone()
        if not updated or not updated[0]:
            return
        self.db.execute(f"DELETE FROM {UPLOADED_HEADS} WHERE name = ?", [name])
        heads = pa.table({
            "stream_id": pa.array(list(summary.heads), pa.string()),
            "version": pa.array(list(summary.heads.values()), pa.int64()),
        })
        self.db.register("_heads", heads)
        try:
            self.db.execute(f"INSERT INTO {UPLOADED_HEADS} SELECT ?, stream_id, version FROM _heads", [name])
        finally:
            self.db.unregister("_heads")

    def unsummarized(self) -> set[str]:
        """The uploaded files without a recorded ``ColdSummary`` (uploaded by an older version)."""
        with self._lock:
            rows = self.db.execute(f"SELECT name FROM {UPLOADED} WHERE max_recorded_us IS NULL").fetchall()
        return {str(name) for (name,) in rows}

    def discarded(self, before: float) -> list[str]:
        """The copies in the cold tier of files forgotten (merged away) at or before `before`
        (seconds since the epoch), and not named by a listed file again: those to delete."""
        with self._lock:
            rows = self.db.execute(
                f"SELECT name FROM {DISCARDED} WHERE discarded_at <= ? AND name NOT IN (SELECT name FROM files) "
                "ORDER BY name",
                [before],
            ).fetchall()
        return [str(name) for (name,) in rows]

    def forget_discarded(self, names: list[str]) -> None:
        """The copies `names` are deleted from the cold tier: stop tracking them.

        Raises:
            StoreError: the catalog could not be written (they are deleted again next time).
        """
        with self._lock, self._atomically():
            self.db.execute(f"DELETE FROM {DISCARDED} WHERE name IN (SELECT unnest(?::VARCHAR[]))", [names])

    def summaries(self) -> dict[str, ColdSummary]:
        """What opening needs of each uploaded file that has it recorded (``ColdSummary``), by name."""
        with self._lock:
            try:
                recorded = dict(self.db.execute(
                    f"SELECT name, max_recorded_us FROM {UPLOADED} WHERE max_recorded_us IS NOT NULL"
                ).fetchall())
                heads = self.db.sql(f"SELECT name, stream_id, version FROM {UPLOADED_HEADS}").to_arrow_table()
            except duckdb.Error as exc:
                raise CorruptionError(self.where, f"cannot read the catalog: {exc}") from exc
        per_file: dict[str, dict[str, int]] = {name: {} for name in recorded}
        names, ids, versions = (heads.column(c).to_pylist() for c in ("name", "stream_id", "version"))
        for name, stream_id, version in zip(names, ids, versions, strict=True):
            if name in per_file:
                per_file[name][stream_id] = version
        return {name: ColdSummary(per_file[name], int(us)) for name, us in recorded.items()}

    def checkpoints(self) -> dict[str, int]:
        """The checkpoints recorded here (those of retired log segments, and any later ones a flush saw)."""
        with self._lock:
            return dict(self.db.execute(f"SELECT name, position FROM {CHECKPOINTS} ORDER BY name").fetchall())

    def replace(
        self, added: list[FileEntry], removed: list[str], *, log_segment: int | None = None, log_required: bool = True,
        checkpoints: dict[str, int] | None = None, now: float | None = None,
    ) -> None:
        """Record new files and forget replaced ones (and where the log goes on, and the
        `checkpoints` the log holds), in one transaction. The copies in the cold tier of
        forgotten files are recorded as discarded at `now` (seconds since the epoch; None: now).

        The manifest is not rewritten: the caller does so once the files are in place.
        """
        with self._lock:
            self._transaction(
                added, removed, log_segment=log_segment, log_required=log_required, checkpoints=checkpoints, now=now
            )

    def rebuild(
        self, files: list[FileEntry], *, store_id: str, log_segment: int, checkpoints: dict[str, int] | None = None
    ) -> None:
        """Name exactly `files`, and take the store id and newest log segment given (repair), in one
        transaction; no segment is required to exist beyond those there are."""
        with self._lock:
            self._transaction(
                files, None, log_segment=log_segment, log_required=False, store_id=store_id, checkpoints=checkpoints
            )

    def record_log_segment(
        self, number: int, *, required: bool = True, checkpoints: dict[str, int] | None = None
    ) -> None:
        """Record that the log goes on in segment `number`, which must exist unless not `required`
        (and `checkpoints`, as the log holds them)."""
        with self._lock:
            self._transaction([], [], log_segment=number, log_required=required, checkpoints=checkpoints)
        self.write_manifest()

    def _transaction(
        self, added: list[FileEntry], removed: list[str] | None, *, log_segment: int | None,
        log_required: bool = True, store_id: str | None = None, checkpoints: dict[str, int] | None = None,
        now: float | None = None,
    ) -> None:
        discarded_at = time.time() if now is None else now
        with self._atomically():
            if removed is None:
                self.db.execute(f"INSERT OR IGNORE INTO {DISCARDED} SELECT name, ? FROM {UPLOADED}", [discarded_at])
                self.db.execute("DELETE FROM files")
                self.db.execute(f"DELETE FROM {UPLOADED}")
                self.db.execute(f"DELETE FROM {UPLOADED_HEADS}")
            for name in removed or []:
                self.db.execute(
                    f"INSERT OR IGNORE INTO {DISCARDED} SELECT name, ? FROM {UPLOADED} WHERE name = ?",
                    [discarded_at, name],
                )
                self.db.execute("DELETE FROM files WHERE name = ?", [name])
                self.db.execute(f"DELETE FROM {UPLOADED} WHERE name = ?", [name])
                self.db.execute(f"DELETE FROM {UPLOADED_HEADS} WHERE name = ?", [name])
            for e in added:
                self.db.execute(f"DELETE FROM {DISCARDED} WHERE name = ?", [e.name])  # listed again: its copy stays
                self.db.execute(
                    "INSERT INTO files (name, first_position, last_position, rows, bytes) VALUES (?, ?, ?, ?, ?)",
                    [e.name, e.first_position, e.last_position, e.rows, e.bytes],
                )
            if log_segment is not None:
                self._set_meta("log_segment", str(log_segment))
                self._set_meta("log_required", "1" if log_required else "0")
            if store_id is not None:
                self._set_meta("store_id", store_id)
            for name, position in (checkpoints or {}).items():
                # A checkpoint only moves forward: a stale map never lowers one.
                self.db.execute(
                    f"INSERT INTO {CHECKPOINTS} VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET position = greatest(position, excluded.position)",
                    [name, position],
                )
        if log_segment is not None:
            self.log_segment, self.log_required = log_segment, log_required
        if store_id is not None:
            self.store_id = store_id

    @contextlib.contextmanager
    def _atomically(self) -> Iterator[None]:
        """One DuckDB transaction around the block: committed, or rolled back (a DuckDB error
        raised as a StoreError naming the catalog). The caller holds the lock."""
        try:
            self.db.execute("BEGIN")
            yield
            self.db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(duckdb.Error):  # a failed COMMIT has rolled back already
                self.db.execute("ROLLBACK")
            if isinstance(exc, duckdb.Error):
                raise store_os_error(exc, self.where, "update the catalog") from exc
            raise

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the catalog database, for one thread (SQL views, projections, queues)."""
        with self._lock:
            return self.db.cursor()

    def write_manifest(self) -> None:
        if self.directory is None:
            return
        with self._lock:  # the writer's threads (a flush, the lake's publisher) write one at a time
            self._write_manifest(self.directory)

    def _write_manifest(self, directory: Path) -> None:
        entries = [_entry_dict(e) for e in self.files()]
        manifest = {
            "format": 2,
            "store_id": self.store_id,
            "log_segment": self.log_segment,
            "log_required": self.log_required,
            "files": entries,
            "checkpoints": self.checkpoints(),
            "uploaded": sorted(self.uploaded()),
        }
        body = json.dumps(manifest, indent=1).encode()
        temp = directory / f".tmp-{MANIFEST}"
        try:
            with open(temp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, directory / MANIFEST)
            fsync_directory(directory)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            raise store_os_error(exc, temp, "write the manifest") from exc

    # -- snapshots (see store/snapshots.py) ---------------------------------------------

    _SNAPSHOT_COLUMNS = "stream_id, version, state_type, fingerprint, data, compressed, taken_at"

    def save_snapshot(self, s: Snapshot) -> None:
        with self._lock:
            self.db.execute(
                f"INSERT OR REPLACE INTO snapshots ({self._SNAPSHOT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [s.stream_id, s.version, s.state_type, s.fingerprint, s.data, s.compressed, s.taken_at],
            )

    def latest_snapshot(self, stream_id: str, max_version: int | None) -> Snapshot | None:
        with self._lock:
            row = self.db.execute(
                f"SELECT {self._SNAPSHOT_COLUMNS} FROM snapshots WHERE stream_id = ? AND version <= ? "
                "ORDER BY version DESC LIMIT 1",
                [stream_id, max_version if max_version is not None else 2**62],
            ).fetchone()
        return _snapshot(row) if row else None

    def newest_snapshots(self, heads: dict[str, int]) -> list[Snapshot]:
        """The newest snapshot at or below each stream's given version, in one query."""
        columns = ", ".join(f"s.{c}" for c in self._SNAPSHOT_COLUMNS.split(", "))
        with self._lock:
            rows = self.db.execute(
                f"SELECT {columns} FROM snapshots s "
                "JOIN (SELECT unnest(?::VARCHAR[]) AS sid, unnest(?::BIGINT[]) AS head) h "
                "ON s.stream_id = h.sid AND s.version <= h.head "
                "QUALIFY row_number() OVER (PARTITION BY s.stream_id ORDER BY s.version DESC) = 1",
                [list(heads), list(heads.values())],
            ).fetchall()
        return [_snapshot(r) for r in rows]

    def list_snapshots(self, stream_id: str) -> list[Snapshot]:
        with self._lock:
            rows = self.db.execute(
                f"SELECT {self._SNAPSHOT_COLUMNS} FROM snapshots WHERE stream_id = ? ORDER BY version", [stream_id]
            ).fetchall()
        return [_snapshot(r) for r in rows]

    def prune_snapshots(self, stream_id: str, keep: int) -> int:
        with self._lock:
            row = self.db.execute(
                "DELETE FROM snapshots WHERE stream_id = ? AND version NOT IN "
                "(SELECT version FROM snapshots WHERE stream_id = ? ORDER BY version DESC LIMIT ?)",
                [stream_id, stream_id, keep],
            ).fetchone()
        return int(row[0]) if row else 0

    def delete_snapshots(self, stream_id: str) -> None:
        with self._lock:
            self.db.execute("DELETE FROM snapshots WHERE stream_id = ?", [stream_id])

    def close(self) -> None:
        with self._lock:
            self.db.close()


def _snapshot(row: tuple[Any, ...]) -> Snapshot:
    stream_id, version, state_type, fingerprint, data, compressed, taken_at = row
    return Snapshot(stream_id, version, state_type, fingerprint, bytes(data), bool(compressed), taken_at)


def _entry_dict(e: FileEntry) -> dict[str, Any]:
    return {
        "name": e.name,
        "first_position": e.first_position,
        "last_position": e.last_position,
        "rows": e.rows,
        "bytes": e.bytes,
    }


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the writer last published for readers: the store's id, where the log goes on, the files."""

    store_id: str | None  # None: written before stores had ids
    log_segment: int
    log_required: bool
    files: tuple[FileEntry, ...]
    checkpoints: tuple[tuple[str, int], ...] = ()  # (name, position), by name
    uploaded: frozenset[str] = frozenset()  # the files with copies in the cold tier (they may be evicted)


def read_manifest(directory: Path) -> Manifest:
    """The manifest the writer last published.

    Raises:
        CorruptionError: it is missing (every store has one from its first opening) or unreadable.
    """
    path = directory / MANIFEST
    try:
        data = json.loads(path.read_bytes())
        return Manifest(
            data.get("store_id"),
            int(data.get("log_segment", 0)),
            bool(data.get("log_required", False)),
            tuple(FileEntry(**e) for e in data["files"]),
            tuple(sorted((str(name), int(position)) for name, position in data.get("checkpoints", {}).items())),
            frozenset(str(name) for name in data.get("uploaded", [])),
        )
    except FileNotFoundError:
        raise CorruptionError(
            str(path), "missing: every store has one (opening the store for writing writes it again)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptionError(str(path), f"unreadable manifest: {exc!r}") from exc


def read_catalog(directory: Path) -> Manifest:
    """What the catalog of the store in `directory` says, read without changing it (repair).

    Raises:
        CorruptionError: it is missing or unreadable.
    """
    where = directory / CATALOG
    if not where.exists():
        raise CorruptionError(str(where), "missing")
    try:
        db = duckdb.connect(str(where), read_only=True)
        try:
            rows = db.execute(
                "SELECT name, first_position, last_position, rows, bytes FROM files ORDER BY first_position"
            ).fetchall()
            has_meta = db.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'store_meta'"
            ).fetchone()
            meta: dict[str, str] = (
                dict(db.execute("SELECT key, value FROM store_meta").fetchall()) if has_meta and has_meta[0] else {}
            )
            checkpoints = (
                db.execute(f"SELECT name, position FROM {CHECKPOINTS} ORDER BY name").fetchall()
                if table_exists(db, CHECKPOINTS) else []
            )
            uploaded = db.execute(f"SELECT name FROM {UPLOADED}").fetchall() if table_exists(db, UPLOADED) else []
        finally:
            db.close()
    except duckdb.Error as exc:
        raise CorruptionError(str(where), f"unreadable catalog: {exc}") from exc
    return Manifest(
        meta.get("store_id"),
        int(meta.get("log_segment", 0)),
        meta.get("log_required") == "1",
        tuple(FileEntry(*row) for row in rows),
        tuple((str(name), int(position)) for name, position in checkpoints),
        frozenset(str(name) for (name,) in uploaded),
    )
