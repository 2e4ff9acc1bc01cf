"""Checking a whole store on disk: every Parquet file, every log frame, the catalog and the manifest.

``EventStore.verify()`` and ``eventador check DIR`` call ``verify_store``; it reads
every byte of the store once and reports every problem it finds rather than the
first (each one a ``CorruptionError`` naming the file, and the offset in a log
segment). It changes nothing.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import duckdb

from eventador.errors import CorruptionError, EventadorError
from eventador.store.catalog import MANIFEST, FileEntry, read_manifest
from eventador.store.checksums import verify_file
from eventador.store.segments import FileSegment
from eventador.store.wal import WriteAheadLog, scan_segment

__all__ = ["VerifyReport", "verify_store"]

CATALOG = "catalog.duckdb"


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify_store`` found: ``ok`` when no problem; ``problems`` name file and offset."""

    directory: str
    files: int = 0
    """Parquet files checked."""
    frames: int = 0
    """Log frames read."""
    problems: tuple[CorruptionError, ...] = ()
    unsealed: tuple[str, ...] = ()
    """Files written before file checksums: decoded in full and their page checksums checked instead."""
    set_aside: tuple[str, ...] = ()
    """Log tails moved aside by recovery or repair (kept for inspection, not part of the store)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """The report as lines of text, problems first (what ``eventador check`` prints)."""
        out = [f"damaged: {p}" for p in self.problems]
        out += [f"no file checksum (decoded and page checksums checked instead): {u}" for u in self.unsealed]
        out += [f"set aside, not part of the store: {a}" for a in self.set_aside]
        verdict = "ok" if self.ok else f"{len(self.problems)} problem(s)"
        out.append(f"{verdict}: {self.files} Parquet file(s), {self.frames} log frame(s), catalog and manifest")
        return out

    def __repr__(self) -> str:
        if self.ok:
            return f"VerifyReport({self.directory}: ok, {self.files} Parquet files, {self.frames} log frames)"
        first = self.problems[0]
        more = f" and {len(self.problems) - 1} more" if len(self.problems) > 1 else ""
        return f"VerifyReport({self.directory}: {len(self.problems)} problem(s): {first}{more})"

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self.lines())
        return f"<div><b>VerifyReport</b> <code>{html.escape(self.directory)}</code><ul>{items}</ul></div>"


def verify_store(directory: Path, *, entries: list[FileEntry] | None = None, live: bool = False) -> VerifyReport:
    """Check every file of the store in `directory`; returns a ``VerifyReport``.

    `entries`: the files the caller's open catalog names; None reads ``catalog.duckdb``
    (no writer may have it open: DuckDB allows one process on a file open for writing).
    `live`: a writer may be appending to the newest log segment, whose last frame may
    then be in flight. Costs one read of every file (a full decode of unsealed ones).
    """
    problems: list[CorruptionError] = []
    unsealed: list[str] = []
    if entries is None:
        entries = _catalog_entries(directory, problems)
    evicted = _compare_manifest(directory, entries, problems)
    files = _check_files(directory, entries or [], problems, unsealed, evicted)
    frames = _check_log(directory / "wal", problems, live=live)
    aside = sorted(str(p) for p in (directory / "wal").glob("*.wal.tail-*"))
    return VerifyReport(str(directory), files, frames, tuple(problems), tuple(unsealed), tuple(aside))


def _catalog_entries(directory: Path, problems: list[CorruptionError]) -> list[FileEntry] | None:
    """The catalog's files, reading every table (DuckDB checks each block's checksum)."""
    path = directory / CATALOG
    if not path.exists():
        problems.append(CorruptionError(str(path), "missing"))
        return None
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            for (table,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall():
                cursor = con.execute(f'SELECT * FROM "{table}"')
                while cursor.fetchmany(10_000):
                    pass
            rows = con.execute(
                "SELECT name, first_position, last_position, rows, bytes FROM files ORDER BY first_position"
            ).fetchall()
    except duckdb.Error as exc:
        problems.append(CorruptionError(str(path), f"unreadable catalog: {exc}"))
        return None
    return [FileEntry(*row) for row in rows]


def _compare_manifest(
    directory: Path, entries: list[FileEntry] | None, problems: list[CorruptionError]
) -> frozenset[str]:
    """Returns the files the manifest says have copies in the lake's cold tier (they may be evicted)."""
    try:
        published = read_manifest(directory)
    except CorruptionError as exc:
        problems.append(exc)
        return frozenset()
    if entries is not None and list(published.files) != entries:
        problems.append(CorruptionError(str(directory / MANIFEST), "does not list the files the catalog names"))
    return published.uploaded


def _check_files(
    directory: Path, entries: list[FileEntry], problems: list[CorruptionError], unsealed: list[str],
    evicted: frozenset[str] = frozenset(),
) -> int:
    """Every file the catalog names (but those evicted to the cold tier: checked when fetched),
    and any other Parquet file in ``data/``."""
    data = directory / "data"
    named = {e.name for e in entries}
    checked = 0
    expected = 1
    for e in entries:
        path = data / e.name
        if e.first_position != expected:
            problems.append(CorruptionError(str(path), f"starts at position {e.first_position}, expected {expected}"))
        expected = e.last_position + 1
        if not path.exists():
            if e.name not in evicted:
                problems.append(CorruptionError(str(path), "named by the catalog but missing"))
            continue
        checked += 1
        try:
            if not verify_file(path):
                unsealed.append(str(path))
            if path.stat().st_size != e.bytes:
                raise CorruptionError(str(path), f"is {path.stat().st_size} bytes, the catalog says {e.bytes}")
            FileSegment(path, e.first_position, e.last_position, e.rows).close()  # rows and positions agree
        except CorruptionError as exc:
            problems.append(exc)
    others = sorted(p for p in data.glob("*.parquet") if p.name not in named) if data.is_dir() else []
    for path in others:
        checked += 1
        try:
            if not verify_file(path):
                unsealed.append(str(path))
        except CorruptionError as exc:
            problems.append(exc)
    return checked


def _check_log(wal: Path, problems: list[CorruptionError], *, live: bool) -> int:
    segments = WriteAheadLog.segments(wal) if wal.is_dir() else []
    frames = 0
    for number, (_, path) in enumerate(segments, 1):
        try:
            for _frame in scan_segment(path, repair=False, settled=not (live and number == len(segments))):
                frames += 1
        except CorruptionError as exc:
            problems.append(exc)
        except (OSError, EventadorError) as exc:
            problems.append(CorruptionError(str(path), f"cannot read: {exc}"))
    return frames
