"""The catalog: which Parquet files hold which positions (a DuckDB file), and a manifest for readers.

The same DuckDB database holds snapshots, projection tables and checkpoints, and
queues; the in-memory store keeps an in-memory one.

The writer keeps ``catalog.duckdb`` open; DuckDB allows no second process on a
file that is open for writing, so after every change the writer also replaces
``manifest.json`` atomically. Read-only openers read only the manifest.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from eventador.errors import CorruptionError, store_os_error
from eventador.store.snapshots import Snapshot
from eventador.store.wal import fsync_directory

__all__ = ["Catalog", "FileEntry", "read_manifest"]

MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class FileEntry:
    name: str
    first_position: int
    last_position: int
    rows: int
    bytes: int


class Catalog:
    """The writer's record of the store's files, in a DuckDB database."""

    def __init__(self, directory: Path | None) -> None:
        """Open (or create) the catalog of the store in `directory`; None: an in-memory one."""
        self.directory = directory
        where = ":memory:" if directory is None else str(directory / "catalog.duckdb")
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

    def replace(self, added: list[FileEntry], removed: list[str], *, publish: bool = True) -> None:
        """Record new files and forget replaced ones, in one transaction; then, with
        `publish`, rewrite the manifest (a caller that passes False calls ``write_manifest``:
        a failed manifest must not look like a failed transaction)."""
        with self._lock:
            self._replace(added, removed)
        if publish:
            self.write_manifest()

    def _replace(self, added: list[FileEntry], removed: list[str]) -> None:
        try:
            self.db.execute("BEGIN")
            for name in removed:
                self.db.execute("DELETE FROM files WHERE name = ?", [name])
            for e in added:
                self.db.execute(
                    "INSERT INTO files (name, first_position, last_position, rows, bytes) VALUES (?, ?, ?, ?, ?)",
                    [e.name, e.first_position, e.last_position, e.rows, e.bytes],
                )
            self.db.execute("COMMIT")
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):  # a failed COMMIT has rolled back already
                self.db.execute("ROLLBACK")
            where = ":memory:" if self.directory is None else self.directory / "catalog.duckdb"
            raise store_os_error(exc, where, "update the catalog") from exc

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the catalog database, for one thread (SQL views, projections, queues)."""
        with self._lock:
            return self.db.cursor()

    def write_manifest(self) -> None:
        if self.directory is None:
            return
        entries = [_entry_dict(e) for e in self.files()]
        body = json.dumps({"format": 1, "files": entries}, indent=1).encode()
        temp = self.directory / f".tmp-{MANIFEST}"
        try:
            with open(temp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.directory / MANIFEST)
            fsync_directory(self.directory)
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


def read_manifest(directory: Path) -> list[FileEntry]:
    """The files the writer last published (an empty list for a new store)."""
    path = directory / MANIFEST
    try:
        data = json.loads(path.read_bytes())
        return [FileEntry(**entry) for entry in data["files"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CorruptionError(str(path), f"unreadable manifest: {exc!r}") from exc
