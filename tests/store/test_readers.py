"""Readers never raise false alarms: read-only openers keep working while the writer
flushes, compacts and deletes what it merged away, with no error, gap or duplicate.

A reader pins the files of its view of the store (store/pins.py), and looks again at a
state that does not add up (a log segment retired, a file merged away under it) until
it does. Tested in one process at the exact moments that used to fail, and with a busy
writer process and three reader processes (tests/workers/readers_child.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eventador as ev
import eventador.store.opening as store_module  # where a reader reads the manifest
from eventador.store.catalog import Manifest
from eventador.store.wal import WriteAheadLog
from tests.support.domain import deposited

CHILD = Path(__file__).resolve().parents[1] / "workers" / "readers_child.py"
REPO = CHILD.parents[2]


def fill(store: ev.EventStore, events: int) -> None:
    for _ in range(events):
        n = store.last_position
        store.append(f"acc-{n % 3}", [deposited("1", f"acc-{n % 3}", note=f"e{n + 1}")])


def positions(store: ev.EventStore) -> list[int]:
    return [r.position for r in store.read_all()]


def test_a_reader_queries_files_the_writer_merged_away_and_took_out_of_its_trash(tmp_path: Path) -> None:
    clock = ev.ManualClock()
    with ev.open_store(tmp_path / "s", flush_every=10, clock=clock) as writer:
        fill(writer, 30)  # three files
        reader = ev.open_store(tmp_path / "s", read_only=True)
        fill(writer, 10)  # a fourth: the four merge into one
        merged_away = [tmp_path / "s" / "data" / f"{first:012d}-{first + 9:012d}.parquet" for first in (1, 11, 21)]
        clock.advance(seconds=120)  # long past the writer's trash time
        fill(writer, 10)  # its flush empties the trash
        assert all(path.exists() for path in merged_away)  # the reader still reads them
        assert reader.sql("SELECT count(*), sum(position) FROM events").fetchall() == [(30, 465)]
        reader.refresh()
        assert reader.sql("SELECT count(*), count(DISTINCT position) FROM events").fetchall() == [(50, 50)]
        fill(writer, 10)
        assert not any(path.exists() for path in merged_away)  # unpinned: gone at the next flush
        reader.close()


def test_files_a_reader_reads_outlive_the_writers_close_and_go_at_its_next_opening(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with ev.open_store(directory, flush_every=10) as writer:
        fill(writer, 30)
        reader = ev.open_store(directory, read_only=True)
        writer.compact(min_files=2)
    pieces = [directory / "data" / f"{first:012d}-{first + 9:012d}.parquet" for first in (1, 11, 21)]
    assert all(path.exists() for path in pieces)
    assert reader.sql("SELECT count(*) FROM events").fetchall() == [(30,)]
    reader.close()
    with ev.open_store(directory) as writer:  # leftovers whose events the merged file holds
        assert not any(path.exists() for path in pieces)
        assert writer.last_position == 30


def test_a_refresh_while_the_writer_flushes_again_and_again_sees_a_whole_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ev.open_store(tmp_path / "s", flush_every=1_000) as writer:
        fill(writer, 5)
        reader = ev.open_store(tmp_path / "s", read_only=True)
        assert reader.last_position == 5
        read_manifest, calls = store_module.read_manifest, []

        def busy(directory: Path) -> Manifest:
            # Between the reader's look at the manifest and at the log, the writer flushes (retiring
            # the log the manifest's files lead to) and appends on: eight times in a row.
            manifest = read_manifest(directory)
            calls.append(manifest)
            if len(calls) <= 8:
                fill(writer, 3)
                writer.flush()
                fill(writer, 2)
            return manifest

        monkeypatch.setattr(store_module, "read_manifest", busy)
        reader.refresh()
        monkeypatch.undo()
        assert len(calls) > 8
        assert positions(reader) == list(range(1, reader.last_position + 1))
        assert reader.last_position >= 5 + 5 * 8
        assert [r.event.note for r in reader.read_all()] == [f"e{p}" for p in positions(reader)]  # type: ignore[attr-defined]
        reader.close()


def run_writer_and_readers(tmp_path: Path, seconds: float, readers: int = 3) -> list[dict[str, int]]:
    """A writer process busy for `seconds` and `readers` reader processes beside it; returns each
    reader's report (loops, last position) after checking they all end at the writer's last position."""
    directory, stop = tmp_path / "s", tmp_path / "stop"
    logs = [open(tmp_path / f"stderr-{i}.txt", "w+") for i in range(readers + 1)]  # noqa: SIM115
    writer = subprocess.Popen(
        [sys.executable, str(CHILD), "writer", str(directory), str(seconds)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logs[0], text=True,
    )
    children = [writer]
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        children += [
            subprocess.Popen(
                [sys.executable, str(CHILD), "reader", str(directory), str(stop)],
                cwd=REPO, stdout=subprocess.PIPE, stderr=logs[i + 1], text=True,
            )
            for i in range(readers)
        ]
        for child in children[1:]:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        out, _ = writer.communicate("go\n", timeout=seconds + 120)
        stop.touch()
        results = [child.communicate(timeout=120)[0] for child in children[1:]]
        for i, child in enumerate(children):
            logs[i].seek(0)
            assert child.returncode == 0, f"process {i} failed:\n{logs[i].read()[-3000:]}"
        last = json.loads(out)["last"]
        reports = [json.loads(result) for result in results]
        assert all(report["last"] == last for report in reports), (last, reports)
        return reports
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        for log in logs:
            log.close()


def test_three_readers_beside_a_busy_writer_never_fail_and_see_gap_free_prefixes(tmp_path: Path) -> None:
    started = time.monotonic()
    reports = run_writer_and_readers(tmp_path, seconds=6)
    assert all(report["loops"] >= 5 for report in reports), reports
    print(f"{reports} in {time.monotonic() - started:.1f} s")


@pytest.mark.slow
def test_three_readers_beside_a_busy_writer_for_a_minute(tmp_path: Path) -> None:
    started = time.monotonic()
    reports = run_writer_and_readers(tmp_path, seconds=60)
    assert all(report["loops"] >= 50 for report in reports), reports
    print(f"{reports} in {time.monotonic() - started:.1f} s")


def test_a_log_segment_retired_while_a_reader_loads_never_shortens_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The state a reader meets mid-flush: its manifest names files 1-10 and requires segment
    # 2 (positions 11-15); the writer has begun segment 3. Segment 2 is then retired (a real
    # unlink) right after the reader first lists the log.
    directory, image = tmp_path / "w", tmp_path / "image"
    writer = ev.open_store(directory, flush_every=10)
    fill(writer, 15)
    shutil.copytree(directory, image, ignore=shutil.ignore_patterns("LOCK"))
    writer.close()
    wal = image / "wal"
    second = sorted(wal.glob("*.wal"))[-1]
    third = second.with_name(f"{int(second.stem) + 1:010d}.wal")
    third.write_bytes(second.read_bytes()[:8] + bytes(16 << 10))  # begun: its magic, then zeros
    listed = WriteAheadLog.segments

    def listed_then_retired(folder: Path) -> list[tuple[int, Path]]:
        found = listed(folder)
        second.unlink(missing_ok=True)
        return found

    monkeypatch.setattr(WriteAheadLog, "segments", staticmethod(listed_then_retired))
    try:
        reader = ev.open_store(image, read_only=True)
    except ev.CorruptionError:
        return  # the segment is gone for good here (no writer publishes a newer manifest): named
    with reader:
        assert reader.last_position == 15  # never a shorter log (10) without a word
