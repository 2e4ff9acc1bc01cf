"""Repair: the catalog and manifest made again from the data files and the log.

Every data file carries what the catalog says about it (``FileFacts``: the store's
id, its positions, its rows), so when the catalog is missing, damaged, older than
the files, or names a file that is gone, it can be rebuilt from the files alone.
Repair takes the store's lock (no writer may run), works out what to do, says so,
and (unless it is a dry run) does it:

- the files that hold positions 1, 2, ... without a gap become the catalog's files
  (where two hold the same positions, the one reaching further: a merge's result);
- a file whose positions those files hold too is removed (the leftover of a merge,
  or of a flush whose events are in the log); so are temporary files;
- a file that is unreadable or belongs to another store is moved to ``set-aside/``,
  never deleted;
- a missing log segment the catalog required is reported as lost (the store then
  ends where the files and the remaining log end).

A gap (positions no file and no log segment holds, with events after them) cannot
be repaired: positions are events' identities and are never renumbered. Repair then
raises, naming the gap, and changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import html
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cbor2

from eventador.errors import CorruptionError, InvalidInputError
from eventador.store.appends import decode_columns, frame_records
from eventador.store.catalog import (
    CATALOG,
    MANIFEST,
    Catalog,
    FileEntry,
    FileFacts,
    Manifest,
    holds_store,
    read_catalog,
    read_facts,
    read_manifest,
)
from eventador.store.lock import DirectoryLock
from eventador.store.wal import Frame, WriteAheadLog, fsync_directory, move_tail_aside, scan_segment

__all__ = ["RepairReport", "repair_store"]

SET_ASIDE = "set-aside"


@dataclass(frozen=True)
class RepairReport:
    """What ``repair_store`` found and did (or, for a dry run, would do).

    `files`: the data files the catalog names afterwards, in position order; `file_positions`:
    the last position they hold; `last_position`: the store's last event (files and log);
    `actions`: one sentence per change, in the order made (empty: nothing needed repair).
    """

    path: Path
    store_id: str
    files: tuple[str, ...]
    file_positions: int
    last_position: int
    actions: tuple[str, ...]
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        """Whether the store needed (a dry run: needs) repair."""
        return bool(self.actions)

    def _outcome(self) -> str:
        if not self.actions:
            return "nothing to repair"
        count = f"{len(self.actions)} change{'s' if len(self.actions) != 1 else ''}"
        return f"{count} to make (dry run)" if self.dry_run else f"{count} made"

    def _summary(self) -> str:
        log = (
            f"; the log holds positions {self.file_positions + 1}-{self.last_position}"
            if self.last_position > self.file_positions else ""
        )
        return f"{len(self.files)} data files hold positions 1-{self.file_positions}{log}"

    def __repr__(self) -> str:
        return f"RepairReport({str(self.path)!r}: {self._outcome()}; {self._summary()})"

    def __str__(self) -> str:
        lines = [f"{self.path} (store {self.store_id}): {self._outcome()}"]
        lines += [f"  - {action}" for action in self.actions]
        lines.append(f"  {self._summary()}.")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{html.escape(a)}</li>" for a in self.actions)
        return (
            f"<div><b>Repair</b> <code>{html.escape(str(self.path))}</code>: {html.escape(self._outcome())}"
            f"<ul>{items}</ul><p>{html.escape(self._summary())}.</p></div>"
        )


def repair_store(path: str | os.PathLike[str], *, dry_run: bool = False) -> RepairReport:
    """Rebuild the catalog and manifest of the store in `path` from its data files and log; returns what was done.

    `dry_run`: only say what would be done. Costs a read of every file's footer and of
    the whole log. Snapshots, projection tables and queues in the catalog are kept
    when the catalog is readable; when it is missing or damaged (moved aside as
    ``catalog.duckdb.damaged-<time>``) a new one starts without them. Checkpoints
    written with appends are kept: the catalog's, and the manifest's (written after it).

    Raises:
        StoreLockedError: a writer has the store open.
        CorruptionError: the files and the log leave a gap in positions (a damaged log
            frame followed by further segments, say); nothing was changed. A damaged
            log tail is moved aside to ``wal/<segment>.tail-<offset>``, never deleted.
        InvalidInputError: `path` holds no store.

    For example, after a crash left the store in ``bank`` unreadable::

        print(ev.repair_store("bank", dry_run=True))  # what would be done
        print(ev.repair_store("bank"))
    """
    directory = Path(path)
    if not directory.is_dir() or not holds_store(directory):
        raise InvalidInputError(f"no store at {directory}")
    lock = DirectoryLock(directory)
    lock.acquire()
    try:
        plan = _plan(directory)
        if not dry_run:
            for _, step in plan.steps:
                step()
        return RepairReport(
            directory, plan.store_id, tuple(e.name for e in plan.files), plan.files[-1].last_position if plan.files
            else 0, plan.last_position, tuple(what for what, _ in plan.steps), dry_run,
        )
    finally:
        lock.release()


@dataclass
class _Plan:
    store_id: str = ""
    files: list[FileEntry] = field(default_factory=list)
    last_position: int = 0
    steps: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def add(self, what: str, step: Callable[[], object]) -> None:
        self.steps.append((what, step))


def _plan(directory: Path) -> _Plan:
    plan = _Plan()
    catalog = _readable_catalog(directory, plan)
    _refuse_evicted(directory, catalog)
    sources = _data_files(directory, catalog, plan)
    facts = _described_files(directory, sources, catalog, plan)
    end = _chain(facts, sources, plan)
    plan.last_position = _check_log(directory / "wal", end, catalog, plan)
    _plan_catalog(directory, catalog, plan)
    return plan


def _refuse_evicted(directory: Path, catalog: Manifest | None) -> None:
    """Raises CorruptionError when files the catalog names are evicted to the lake's cold tier:
    a catalog rebuilt from the local files would drop their events."""
    evicted = sorted(
        name for name in (catalog.uploaded if catalog else ()) if not (directory / "data" / name).exists()
    )
    if evicted:
        raise CorruptionError(
            str(directory / CATALOG),
            f"names {len(evicted)} data file(s) evicted to the cold tier of the store's lake (first: {evicted[0]}); "
            "repair rebuilds from local files only: open the store with its lake= (and no local_bytes) to fetch "
            "them back first; nothing was changed",
        )


def _readable_catalog(directory: Path, plan: _Plan) -> Manifest | None:
    """What the catalog says; None when it is missing, or unreadable (then it is moved aside)."""
    if not (directory / CATALOG).exists():
        return None
    try:
        return read_catalog(directory)
    except CorruptionError as exc:
        aside = directory / f"{CATALOG}.damaged-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        plan.add(f"{CATALOG} is unreadable ({exc.reason}): moved to {aside.name}", _catalog_mover(directory, aside))
        return None


def _data_files(directory: Path, catalog: Manifest | None, plan: _Plan) -> dict[Path, Path]:
    """Each data file's place in data/ and where it is now: pending files the catalog names are
    moved in (a crash came between naming and moving them); other pending and temporary files,
    which nobody named, are removed."""
    data, pending = directory / "data", directory / "pending"
    named = {e.name for e in catalog.files} if catalog else set()
    sources = {path: path for path in data.glob("*.parquet")}
    for path in sorted(pending.glob("*")):
        target = data / path.name
        if path.name in named and target not in sources:
            plan.add(f"pending/{path.name}: named by the catalog, moved into data/", _mover(path, target))
            sources[target] = path
        else:
            plan.add(f"pending/{path.name}: a write the catalog never named, removed", _remover(path))
    for path in sorted(data.glob(".tmp-*")):
        plan.add(f"data/{path.name}: a temporary file, removed", _remover(path))
    return sources


def _described_files(
    directory: Path, sources: dict[Path, Path], catalog: Manifest | None, plan: _Plan
) -> dict[Path, FileFacts]:
    """What each data file says about itself; files unreadable or of another store are set aside.
    Chooses the store's id: the catalog's, else the one the files carry."""
    facts: dict[Path, FileFacts] = {}
    for path, source in sorted(sources.items()):
        try:
            facts[path] = read_facts(source)
        except CorruptionError as exc:
            plan.add(f"data/{path.name}: {exc.reason}; moved to {SET_ASIDE}/", _mover(path, _aside(directory, path)))
    ids = Counter(f.store_id for f in facts.values() if f.store_id is not None)
    plan.store_id = (catalog.store_id if catalog else None) or (ids.most_common(1)[0][0] if ids else uuid.uuid4().hex)
    for path, f in sorted(facts.items()):
        if f.store_id not in (None, plan.store_id):
            plan.add(
                f"data/{path.name}: belongs to store {f.store_id}, not this one; moved to {SET_ASIDE}/",
                _mover(path, _aside(directory, path)),
            )
            del facts[path]
    return facts


def _chain(facts: dict[Path, FileFacts], sources: dict[Path, Path], plan: _Plan) -> int:
    """The files holding positions 1, 2, ... become the catalog's (where two start at the same
    position, the one reaching further: a merge's result); the others must be covered by them,
    and are removed. Returns the last position the chain holds.

    Raises:
        CorruptionError: a file holds positions after a gap, or straddles the chain's end.
    """
    end = 0
    left = dict(facts)
    while starting := [path for path, f in left.items() if f.first_position == end + 1]:
        path = max(starting, key=lambda p: left[p].last_position)
        f = left.pop(path)
        plan.files.append(FileEntry(path.name, f.first_position, f.last_position, f.rows, sources[path].stat().st_size))
        end = f.last_position
    for path, f in sorted(left.items()):
        if f.last_position > end:
            raise CorruptionError(
                str(path), f"holds positions {f.first_position}-{f.last_position}, but the files from position 1 "
                f"without a gap end at {end}: repair cannot close a gap (restore the missing file)",
            )
        holders = [
            e.name for e in plan.files if e.first_position <= f.last_position and e.last_position >= f.first_position
        ]
        plan.add(
            f"data/{path.name}: positions {f.first_position}-{f.last_position}, which {', '.join(holders)} "
            "hold too; removed", _remover(path),
        )
    return end


def _check_log(wal: Path, end: int, catalog: Manifest | None, plan: _Plan) -> int:
    """The last position the log holds after the files (which end at `end`).

    Raises:
        CorruptionError: the log does not follow the files (a segment that held events is missing
            between two others, say).
    """
    segments = WriteAheadLog.segments(wal)
    numbers = [n for n, _ in segments]
    if catalog is not None and catalog.log_required and catalog.log_segment not in numbers:
        missing = WriteAheadLog.segment_path(wal, catalog.log_segment)
        plan.add(
            f"wal/{missing.name}, where the log went on, is missing: the events appended to it are lost "
            "(put it back before repairing to keep them)",
            lambda: None,
        )
    last = end
    for _, path in segments:
        for frame in _sound_frames(path, plan):
            try:
                records, _ = frame_records(cbor2.loads(frame.body))
                spans = [
                    (int(r[0]), len(decode_columns(r[6], log_format=frame.log_format)[3])) for r in records
                ]
            except (ValueError, TypeError, IndexError, cbor2.CBORDecodeError) as exc:
                raise CorruptionError(str(path), f"undecodable frame: {exc}", frame.offset) from exc
            for first, count in spans:
                if first + count - 1 <= last:
                    continue  # already in a data file
                if first != last + 1:
                    raise CorruptionError(
                        str(path), f"holds positions from {first}, but positions {last + 1}-{first - 1} are in no "
                        "data file and no log segment: repair cannot close a gap", frame.offset,
                    )
                last = first + count - 1
    return last


def _sound_frames(path: Path, plan: _Plan) -> Iterator[Frame]:
    """The frames of log segment `path` up to the first damaged one, whose bytes from there
    on the plan moves to a file of their own (kept, never deleted)."""
    frames = scan_segment(path, repair=False)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except CorruptionError as exc:
            if exc.offset is None:
                raise
            offset = exc.offset
            plan.add(
                f"wal/{path.name} is damaged from byte {offset} ({exc.reason}): its bytes from there are moved to "
                f"wal/{path.name}.tail-{offset}, and the events in them are not in the store",
                functools.partial(move_tail_aside, path, offset),
            )
            return
        yield frame


def _plan_catalog(directory: Path, catalog: Manifest | None, plan: _Plan) -> None:
    """The catalog and manifest rewritten, if they do not say what the files do."""
    wal = directory / "wal"
    newest = max([n for n, _ in WriteAheadLog.segments(wal)] + [catalog.log_segment if catalog else 0])
    try:
        manifest: Manifest | None = read_manifest(directory)
    except CorruptionError:
        manifest = None
    # The checkpoints of retired log segments are in the catalog, and in the manifest written
    # after it: a catalog made anew takes them from there (a stale one, the higher of the two).
    kept: dict[str, int] = {}
    for name, position in (*(catalog.checkpoints if catalog else ()), *(manifest.checkpoints if manifest else ())):
        kept[name] = max(position, kept.get(name, 0))

    def rebuild() -> None:
        rebuilt = Catalog(directory, missing_ok=True)
        try:
            rebuilt.rebuild(plan.files, store_id=plan.store_id, log_segment=newest, checkpoints=kept)
            rebuilt.write_manifest()
        finally:
            rebuilt.close()

    describe = _describe(plan.files)
    if catalog is None:
        checkpoints = (
            f"the manifest's {len(kept)} checkpoint(s)" if manifest is not None
            else "no checkpoints (the manifest is unreadable too: those the log holds are kept)"
        )
        plan.add(
            f"{CATALOG}: made anew, naming {describe}, with {checkpoints} (without the snapshots, projection "
            "tables and queues the old one held: projections rebuild from the events)", rebuild,
        )
        return
    if plan.steps or list(catalog.files) != plan.files or catalog.store_id not in (None, plan.store_id):
        before = "" if list(catalog.files) == plan.files else f" (it named {_describe(list(catalog.files))})"
        plan.add(f"{CATALOG}: names {describe}{before}", rebuild)
        return
    stale = manifest is None or (manifest.files, manifest.store_id, manifest.checkpoints) != (
        catalog.files, catalog.store_id, catalog.checkpoints
    )
    if stale:
        plan.add(f"{MANIFEST}: written again from the catalog", rebuild)


def _describe(files: list[FileEntry]) -> str:
    if not files:
        return "no data files"
    return f"{len(files)} data file{'s' if len(files) != 1 else ''} (positions 1-{files[-1].last_position})"


def _aside(directory: Path, path: Path) -> Path:
    return directory / SET_ASIDE / path.name


def _mover(source: Path, target: Path) -> Callable[[], None]:
    def move() -> None:
        target.parent.mkdir(exist_ok=True)
        os.replace(source, target)
        fsync_directory(target.parent)

    return move


def _remover(path: Path) -> Callable[[], None]:
    return lambda: path.unlink(missing_ok=True)


def _catalog_mover(directory: Path, aside: Path) -> Callable[[], None]:
    def move() -> None:
        os.replace(directory / CATALOG, aside)
        with contextlib.suppress(FileNotFoundError):  # DuckDB's own log of the damaged catalog goes with it
            os.replace(directory / f"{CATALOG}.wal", aside.with_name(aside.name + ".wal"))
        fsync_directory(directory)

    return move
