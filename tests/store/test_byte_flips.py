"""Damaged bytes are found, never returned.

One flipped byte anywhere in a store (a log frame, any Parquet column or footer, the
catalog, the manifest) ends in a named ``EventadorError`` or in exactly the events
that were appended, on every read path: ``read_stream``, ``replay``, ``read_all``,
SQL and ``as_of``. The store is tiny, so a fresh copy per flip is cheap.
"""

from __future__ import annotations

import random
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

import eventador as ev
from eventador.cli.main import main as cli
from eventador.store import checksums, wal
from tests.support.domain import Deposited, deposited, opened, withdrawn

HEADER = len(wal.frame(b""))
STREAMS = ("acc-1", "acc-2", "acc-3")
SQL = (
    "SELECT position, stream_id, version, event_type, CAST(data AS VARCHAR), payload FROM events ORDER BY position",
    'SELECT sum(amount), count(*) FROM "test.Deposited"',
)


@dataclass(frozen=True)
class Image:
    """A store left by a writer that died: two Parquet files and a log of four frames."""

    directory: Path
    events: list[tuple[int, str, int, ev.Event]]  # what was appended: position, stream, version, event
    sql: list[list[tuple[Any, ...]]]  # what SQL said about it before any damage


def build_image(directory: Path) -> Image:
    store = ev.open_store(directory, durability="none")
    for sid in STREAMS:
        store.append(sid, [opened(sid)])
    for n in range(5):
        sid = STREAMS[n % 3]
        store.append(sid, [deposited(str(n + 1), sid, note=f"n{n}")])
    store.flush()  # positions 1-8
    for n in range(4):
        sid = STREAMS[n % 3]
        store.append(sid, [deposited(f"2{n}.5", sid), withdrawn("0.5", sid)])
    store.flush()  # positions 9-16
    for i, sid in enumerate(STREAMS):  # the log: frames after the last file
        store.append(sid, [deposited(f"1{i}.25", sid)])
    store.append("acc-1", [deposited("7", "acc-1", note="x" * 600)])  # a frame over a sector boundary
    events = [(r.position, r.stream_id, r.version, r.event) for r in store.read_all()]
    sql = [store.sql(q).fetchall() for q in SQL]
    with store.connect() as con:
        con.execute("CHECKPOINT")
    # The state a crash leaves: copied while the writer still holds it (nothing else writes).
    image = directory.parent / "image"
    shutil.copytree(directory, image, ignore=shutil.ignore_patterns("LOCK"))
    store.close()
    assert len(list((image / "data").glob("*.parquet"))) == 2
    assert len(list(wal.scan_segment(next((image / "wal").glob("*.wal")), repair=False))) == 4
    return Image(image, events, sql)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return build_image(tmp_path_factory.mktemp("flips") / "store")


def everything(store: ev.EventStore) -> tuple[list[tuple[int, str, int, ev.Event]], list[list[tuple[Any, ...]]]]:
    """What every read path says: read_all, each stream by read_stream and replay, as_of, SQL."""
    events = [(r.position, r.stream_id, r.version, r.event) for r in store.read_all()]
    by_stream = sorted((r.position, r.stream_id, r.version, r.event) for s in STREAMS for r in store.read_stream(s))
    assert by_stream == events, "read_stream disagrees with read_all"
    for sid in STREAMS:
        assert store.replay(sid).events == [e for _, s, _, e in events if s == sid], "replay disagrees"
    past = store.as_of(len(events) - 2)
    assert [(r.position, r.event) for r in past.read_all()] == [(p, e) for p, _, _, e in events[:-2]], "as_of"
    return events, [store.sql(q).fetchall() for q in SQL]


def read_through(directory: Path, *, read_only: bool) -> tuple[list[Any], list[Any]]:
    store = ev.open_store(directory, read_only=read_only, durability="none")
    try:
        return everything(store)
    finally:
        store.close()


def flip(path: Path, at: int, rnd: random.Random) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        old = f.read(1)[0]
        f.seek(at)
        f.write(bytes([old ^ rnd.randrange(1, 256)]))


def targets(image: Image) -> Iterator[tuple[str, Path, int, int]]:
    """Byte ranges to damage: (what, file relative to the store, start, end)."""
    segment = next((image.directory / "wal").glob("*.wal"))
    frames = list(wal.scan_segment(segment, repair=False))
    end = frames[-1].offset + HEADER + len(frames[-1].body)
    rel = segment.relative_to(image.directory)
    yield "log frames", rel, 0, end
    yield "log, last frame", rel, frames[-1].offset, end
    yield "log, zeros after the frames", rel, end, end + 2048
    for path in sorted((image.directory / "data").glob("*.parquet")):
        meta = pq.ParquetFile(path).metadata
        rel = path.relative_to(image.directory)
        for c in range(meta.num_columns):
            chunk = meta.row_group(0).column(c)
            start = chunk.dictionary_page_offset or chunk.data_page_offset
            yield f"column {chunk.path_in_schema}", rel, start, start + chunk.total_compressed_size
        size = path.stat().st_size
        (footer,) = struct.unpack("<I", path.read_bytes()[-8:-4])
        yield "Parquet footer", rel, size - 8 - footer, size
    catalog = (image.directory / "catalog.duckdb").read_bytes()
    used = [i for i in range(0, len(catalog), 512) if catalog[i : i + 512].strip(b"\0")]
    for i in used[:: max(1, len(used) // 12)]:  # the catalog's written parts (most of it is zeros)
        yield "catalog", Path("catalog.duckdb"), i, i + 512
    yield "manifest", Path("manifest.json"), 0, (image.directory / "manifest.json").stat().st_size


def openers(what: str, k: int) -> tuple[bool, ...]:
    """Which openers (read_only or not) read a store damaged in `what`: the manifest is
    only the readers', the catalog only the writer's; both check Parquet files alike."""
    if what == "manifest":
        return (True,)
    if what == "catalog":
        return (False,)
    if what.startswith("log"):
        return (True, False)
    return (k % 4 != 0,)


def flip_and_read(image: Image, work: Path, flips: int, seed: int) -> dict[str, int]:
    rnd = random.Random(seed)
    ranges = list(targets(image))
    # Each kind of file about as often, whatever its size (Parquet columns twice: there are two
    # files of them); within a kind, every range in turn.
    kinds = ["column", "log", "Parquet footer", "catalog", "column", "manifest"]
    escaped: list[str] = []
    outcomes = {"error": 0, "same data": 0, "reader stopped before the last frame": 0}
    for k in range(flips):
        kind = kinds[k % len(kinds)]
        matching = [r for r in ranges if r[0].startswith(kind)]
        what, rel, start, end = matching[k // len(kinds) % len(matching)]  # every column in turn
        at = rnd.randrange(start, end)
        copy = work / f"flip-{k}"
        shutil.copytree(image.directory, copy)
        flip(copy / rel, at, rnd)
        for read_only in openers(what, k):
            try:
                events, sql = read_through(copy, read_only=read_only)
            except ev.EventadorError as exc:
                outcomes["error"] += 1
                if isinstance(exc, ev.CorruptionError) and copy not in Path(exc.path).parents:
                    escaped.append(f"{what} byte {at}: the error names {exc.path}, not a file of the store")
                continue
            except Exception as exc:
                escaped.append(f"{what} byte {at} (read_only={read_only}): {type(exc).__name__}: {exc}")
                continue
            if read_only and events == image.events[:-1]:
                # A reader cannot tell the final frame of a live writer's log from a damaged
                # one: it stops before it, as before an append in flight. (The writer's open,
                # next, judges it.)
                outcomes["reader stopped before the last frame"] += 1
            elif events != image.events or sql != image.sql:
                escaped.append(f"{what} byte {at} (read_only={read_only}): different data, no error")
            else:
                outcomes["same data"] += 1
        shutil.rmtree(copy)
    assert not escaped, escaped
    return outcomes


def test_every_flipped_byte_ends_in_a_named_error_or_the_appended_events(image: Image, tmp_path: Path) -> None:
    outcomes = flip_and_read(image, tmp_path, flips=200, seed=14)
    assert outcomes["error"] >= 100, outcomes  # most flips land in checked bytes, and are found


@pytest.mark.slow
def test_every_flipped_byte_ends_in_a_named_error_or_the_appended_events_many(image: Image, tmp_path: Path) -> None:
    for seed in range(10):
        flip_and_read(image, tmp_path, flips=300, seed=100 + seed)


# -- the log ----------------------------------------------------------------------------------


def last_frame(directory: Path) -> tuple[Path, int, int]:
    segment = next((directory / "wal").glob("*.wal"))
    frame = list(wal.scan_segment(segment, repair=False))[-1]
    return segment, frame.offset, frame.offset + HEADER + len(frame.body)


def test_a_flipped_byte_in_the_final_frame_is_damage_not_a_torn_write(image: Image, tmp_path: Path) -> None:
    copy = shutil.copytree(image.directory, tmp_path / "store")
    segment, offset, end = last_frame(copy)
    flip(segment, (offset + end) // 2, random.Random(1))
    before = segment.read_bytes()
    with pytest.raises(ev.CorruptionError) as caught:
        ev.open_store(copy)
    assert (Path(caught.value.path), caught.value.offset) == (segment, offset)
    assert "checksum" in str(caught.value) and segment.name in str(caught.value)
    assert segment.read_bytes() == before  # the evidence is kept: nothing cut
    assert not list(segment.parent.glob("*.tail-*"))


def test_moving_a_damaged_tail_aside_keeps_its_bytes_and_the_store_opens(image: Image, tmp_path: Path) -> None:
    copy = shutil.copytree(image.directory, tmp_path / "store")
    segment, offset, end = last_frame(copy)
    flip(segment, offset + HEADER + 1, random.Random(2))
    damaged = segment.read_bytes()[offset:end]
    aside = wal.move_tail_aside(segment, offset)
    assert aside == segment.with_name(f"{segment.name}.tail-{offset}")
    assert aside.read_bytes() == damaged
    with ev.open_store(copy) as store:
        assert [(r.position, r.event) for r in store.read_all()] == [(p, e) for p, _, _, e in image.events[:-1]]


def test_repair_moves_a_damaged_final_frame_aside_and_says_so(image: Image, tmp_path: Path) -> None:
    copy = shutil.copytree(image.directory, tmp_path / "store")
    segment, offset, end = last_frame(copy)
    flip(segment, (offset + end) // 2, random.Random(3))
    damaged = segment.read_bytes()[offset:end]
    with pytest.raises(ev.CorruptionError):
        ev.open_store(copy)
    report = ev.repair_store(copy)
    aside = segment.with_name(f"{segment.name}.tail-{offset}")
    assert f"wal/{aside.name}" in str(report)
    assert aside.read_bytes() == damaged  # the evidence is kept
    with ev.open_store(copy) as store:
        assert [(r.position, r.event) for r in store.read_all()] == [(p, e) for p, _, _, e in image.events[:-1]]

def test_a_torn_final_frame_is_moved_aside_not_deleted(image: Image, tmp_path: Path) -> None:
    copy = shutil.copytree(image.directory, tmp_path / "store")
    segment, offset, end = last_frame(copy)
    last_sector = (end - 1) // wal.SECTOR * wal.SECTOR
    assert last_sector > offset + HEADER
    written = segment.read_bytes()[offset:last_sector]
    with open(segment, "r+b") as f:  # the frame's last sector never reached the disk
        f.seek(last_sector)
        f.write(bytes(end - last_sector))
    with ev.open_store(copy) as store:
        assert store.last_position == len(image.events) - 1
    assert segment.with_name(f"{segment.name}.tail-{offset}").read_bytes() == written


# -- Parquet files -----------------------------------------------------------------------------


def damage_column(copy: Path, column: str) -> Path:
    path = sorted((copy / "data").glob("*.parquet"))[0]
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    chunk = meta.row_group(0).column(names.index(column))
    flip(path, chunk.data_page_offset + chunk.total_compressed_size - 3, random.Random(3))
    return path


@pytest.mark.parametrize("column", ["test.Deposited.amount", "payload"])
def test_a_damaged_data_page_is_a_corruption_error_in_sql_and_every_read(
    image: Image, tmp_path: Path, column: str
) -> None:
    """DuckDB checks no page checksum, and read_all reads the typed columns, not the payload:
    both returned damaged values before (a wrong SUM, a changed payload, no error)."""
    copy = shutil.copytree(image.directory, tmp_path / "store")
    damaged = damage_column(copy, column)
    for read_only in (True, False):
        with pytest.raises(ev.CorruptionError) as caught:
            store = ev.open_store(copy, read_only=read_only)
            try:
                store.sql(SQL[1]).fetchall()
                store.sql(SQL[0]).fetchall()
                list(store.read_all())
            finally:
                store.close()
        assert Path(caught.value.path) == damaged


def test_a_file_is_checked_once_per_process(image: Image, tmp_path: Path) -> None:
    copy = shutil.copytree(image.directory, tmp_path / "store")
    with ev.open_store(copy) as store:
        assert store.sql(SQL[1]).fetchall() == image.sql[1]
    damaged = damage_column(copy, "payload")  # after the check: a new write, a new identity
    with pytest.raises(ev.CorruptionError):
        ev.open_store(copy, read_only=True)
    checksums.remember(damaged)  # as if this process had written it: not read again
    with ev.open_store(copy, read_only=True) as store:
        assert store.last_position == len(image.events)


def test_a_file_this_process_flushed_or_merged_is_not_read_again_to_check_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[Path] = []
    verify = checksums.verify_file
    monkeypatch.setattr(checksums, "verify_file", lambda path: read.append(path) or verify(path))
    with ev.open_store(tmp_path / "s", flush_every=10) as store:
        for n in range(60):
            store.append("acc-1", [deposited(str(n + 1), "acc-1")])
        store.compact(min_files=2)
        assert len(list((tmp_path / "s" / "data").glob("*.parquet"))) >= 1
        assert len(list(store.read_all())) == 60
    assert read == []

def test_a_file_written_before_checksums_opens_and_its_pages_are_checked(image: Image, tmp_path: Path) -> None:
    copy = shutil.copytree(image.directory, tmp_path / "store")
    with ev.open_store(copy) as store:
        store.flush()
    old = sorted((copy / "data").glob("*.parquet"))[0]
    table = pq.read_table(old)
    pq.write_table(table, old, row_group_size=4096, write_page_checksum=True)  # no file checksum
    with duckdb.connect(str(copy / "catalog.duckdb")) as con:  # the file's new size
        con.execute("UPDATE files SET bytes = ? WHERE name = ?", [old.stat().st_size, old.name])
    ev.open_store(copy).close()  # the writer publishes the manifest again
    with ev.open_store(copy, read_only=True) as store:
        assert [(r.position, r.event) for r in store.read_all()] == [(p, e) for p, _, _, e in image.events]
        report = store.verify()
    assert report.ok and report.unsealed == (str(old),)
    assert not checksums.verify_file(old)
    chunk = pq.ParquetFile(old).metadata.row_group(0).column(0)
    flip(old, chunk.data_page_offset + chunk.total_compressed_size - 2, random.Random(4))
    with pytest.raises(ev.CorruptionError) as caught:
        checksums.verify_file(old)
    assert Path(caught.value.path) == old


def test_a_manifest_naming_other_positions_for_a_file_is_a_corruption_error(image: Image, tmp_path: Path) -> None:
    copy = shutil.copytree(image.directory, tmp_path / "store")
    manifest = copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"last_position": 16', '"last_position": 17'))
    with pytest.raises(ev.CorruptionError, match="positions"):
        ev.open_store(copy, read_only=True)


# -- store.verify() and eventador check --------------------------------------------------------


def test_verify_and_check_report_a_sound_store_as_ok(image: Image, tmp_path: Path, capsys: Any) -> None:
    copy = shutil.copytree(image.directory, tmp_path / "store")
    with ev.open_store(copy) as store:
        report = store.verify()
        assert report.ok, report
        assert (report.files, report.frames) == (2, 4)
        assert "ok" in repr(report)
    assert cli(["check", str(copy)]) == 0  # closed: the log was flushed into a third file
    assert capsys.readouterr().out.splitlines()[-1].startswith("ok: 3 Parquet file(s), 0 log frame(s)")


def test_check_names_every_damaged_file_and_exits_1(image: Image, tmp_path: Path, capsys: Any) -> None:
    copy = shutil.copytree(image.directory, tmp_path / "store")
    damaged = damage_column(copy, "stream_id")
    segment, offset, end = last_frame(copy)
    flip(segment, end - 2, random.Random(5))
    manifest = copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace("{", "[", 1))
    assert cli(["check", str(copy)]) == 1
    out = capsys.readouterr().out
    assert str(damaged) in out and f"{segment} at byte {offset}" in out and str(manifest) in out
    assert "3 problem(s)" in out
    assert segment.read_bytes()[end - 2] != image.directory.joinpath(segment.relative_to(copy)).read_bytes()[end - 2]


def test_check_refuses_a_store_open_for_writing(image: Image, tmp_path: Path, capsys: Any) -> None:
    copy = shutil.copytree(image.directory, tmp_path / "store")
    with ev.open_store(copy):
        assert cli(["check", str(copy)]) == 1
    assert "open for writing" in capsys.readouterr().err


def test_decimal_sum_is_what_was_appended(image: Image) -> None:
    """The image's SQL answer is the appended amounts (the flips compare against it)."""
    amounts = [e.amount for _, _, _, e in image.events if isinstance(e, Deposited)]
    assert image.sql[1][0] == (sum(amounts, Decimal(0)), len(amounts))
