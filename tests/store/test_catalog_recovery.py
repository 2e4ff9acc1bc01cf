"""The catalog is not the only record of what exists: files describe themselves, and a
catalog, manifest or log segment that is missing or older than the files is an error
naming it (never an empty or shorter store), which ``eventador repair`` mends.

Stores are made by real writers; crash images by child processes that SIGKILL
themselves; damage by deleting or restoring files as a user (or a backup tool) would.
"""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

import eventador as ev
from eventador.cli.main import main
from eventador.store.catalog import FileFacts, read_facts
from tests.support.domain import deposited

REPO = Path(__file__).resolve().parents[2]


def fill(store: ev.EventStore, events: int, *, start: int = 0) -> None:
    for i in range(start, start + events):
        store.append(f"acc-{i % 5}", [deposited(str(1 + i % 90), f"acc-{i % 5}", note=f"n{i}")])


def notes(store: ev.EventStore) -> list[str | None]:
    return [r.event.note for r in store.read_all()]  # type: ignore[attr-defined]


def data_files(directory: Path) -> list[str]:
    return sorted(p.name for p in (directory / "data").glob("*.parquet"))


def wal_segments(directory: Path) -> list[Path]:
    return sorted((directory / "wal").glob("*.wal"))


def store_of(directory: Path, events: int = 300, *, flush_every: int = 100) -> list[str]:
    """A closed store of `events` events in files of `flush_every`; returns the file names."""
    with ev.open_store(directory, flush_every=flush_every) as store:
        fill(store, events)
    return data_files(directory)


APPEND_THEN_DIE = """
import os, signal, sys
import eventador as ev
from tests.support.domain import deposited

store = ev.open_store(sys.argv[1], flush_every=100)
padding = "x" * int(sys.argv[3])
for i in range(int(sys.argv[2])):
    store.append(f"acc-{i % 5}", [deposited("1", f"acc-{i % 5}", note=f"late{i}{padding}")])
print("appended", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def append_and_die(directory: Path, events: int, *, padding: int = 0) -> None:
    """A writer process appends `events` (acknowledged, fsynced) and is killed: they are in the log only.

    `padding`: characters added to each event's note (big events fill several log segments).
    """
    done = subprocess.run(
        [sys.executable, "-c", APPEND_THEN_DIE, str(directory), str(events), str(padding)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout == "appended\n"


# -- files describe themselves ---------------------------------------------------------------


def test_every_data_file_carries_the_store_id_its_positions_and_rows(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with ev.open_store(directory, flush_every=50) as store:
        fill(store, 120)  # two flushes
        log = pd.DataFrame({
            "case": ["c1", "c1", "c2"], "activity": ["a", "b", "a"], "who": ["x", "y", "z"],
            "at": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"], utc=True),
        })
        store.import_dataframe(log, stream_id="case", event_type="activity", occurred_at="at")
        store.compact(min_files=2)
        fill(store, 10, start=200)
    manifest = json.loads((directory / "manifest.json").read_text())
    store_id = manifest["store_id"]
    assert store_id and len(store_id) == 32
    assert len(manifest["files"]) == 2  # the merge of flushes and import, and the last flush
    for entry in manifest["files"]:
        facts = read_facts(directory / "data" / entry["name"])
        assert facts == FileFacts(store_id, entry["first_position"], entry["last_position"], entry["rows"])
        assert pq.read_metadata(directory / "data" / entry["name"]).num_rows == entry["rows"]
    assert manifest["files"][-1]["last_position"] == 133


def test_a_store_written_before_files_described_themselves_still_opens(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    names = store_of(directory, 200)
    # As an older version left it: no metadata in the files, no store id, a format-1 manifest.
    db = duckdb.connect(str(directory / "catalog.duckdb"))
    for name in names:
        path = directory / "data" / name
        table = pq.read_table(path)
        pq.write_table(table.replace_schema_metadata(None), path)
        db.execute("UPDATE files SET bytes = ? WHERE name = ?", [path.stat().st_size, name])
    db.execute("DROP TABLE store_meta")
    db.close()
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / "manifest.json").write_text(json.dumps({"format": 1, "files": manifest["files"]}))
    assert read_facts(directory / "data" / names[0]).store_id is None

    with ev.open_store(directory, read_only=True) as reader:
        assert reader.last_position == 200
    with ev.open_store(directory, flush_every=100) as store:
        assert notes(store) == [f"n{i}" for i in range(200)]
        fill(store, 100, start=200)
    assert read_facts(directory / "data" / data_files(directory)[-1]).store_id is not None
    with ev.open_store(directory) as store:
        assert store.last_position == 300


# -- the catalog --------------------------------------------------------------------------------


def test_a_missing_catalog_is_an_error_naming_it_and_no_data_file_is_deleted(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    names = store_of(directory)
    (directory / "catalog.duckdb").unlink()
    with pytest.raises(ev.CorruptionError) as caught:
        ev.open_store(directory)
    assert caught.value.path == str(directory / "catalog.duckdb")
    assert "eventador repair" in str(caught.value)
    assert data_files(directory) == names
    assert not (directory / "catalog.duckdb").exists()  # not made empty, to be taken for the truth next time

    report = ev.repair_store(directory)
    assert report.changed and report.files == tuple(names) and report.last_position == 300
    assert "catalog.duckdb" in str(report)
    with ev.open_store(directory) as store:
        assert notes(store) == [f"n{i}" for i in range(300)]


def older_catalog_restored(directory: Path, then: Callable[[], object] = lambda: None) -> None:
    """A store of 200 events whose catalog is copied, then 100 more in a newer file (and what
    `then` adds); last the older catalog is put back, as from a backup."""
    store_of(directory, 200)
    old = directory.parent / "old-catalog.duckdb"
    shutil.copy(directory / "catalog.duckdb", old)
    with ev.open_store(directory, flush_every=100) as store:
        fill(store, 100, start=200)
    then()
    shutil.copy(old, directory / "catalog.duckdb")

def test_a_catalog_restored_from_an_older_copy_is_an_error_naming_it_and_the_newer_file(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    older_catalog_restored(directory)
    newer = data_files(directory)[-1]

    with pytest.raises(ev.CorruptionError) as caught:
        ev.open_store(directory)
    assert caught.value.path == str(directory / "catalog.duckdb")
    assert newer in str(caught.value) and "older than the data files" in str(caught.value)
    assert newer in data_files(directory)

    report = ev.repair_store(directory)
    assert newer in report.files
    with ev.open_store(directory) as store:
        assert notes(store) == [f"n{i}" for i in range(300)]


def test_a_catalog_older_than_files_and_log_is_an_error_naming_it(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    older_catalog_restored(directory, then=lambda: append_and_die(directory, 30))  # 301-330, in the log only
    with pytest.raises(ev.CorruptionError) as caught:
        ev.open_store(directory)
    assert caught.value.path == str(directory / "catalog.duckdb")
    ev.repair_store(directory)
    with ev.open_store(directory) as store:
        assert store.last_position == 330
        assert notes(store)[-1] == "late29"


def test_an_unreadable_file_the_catalog_does_not_name_is_an_error_and_kept(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    store_of(directory)
    junk = directory / "data" / "000000000999-000000001000.parquet"
    junk.write_bytes(b"junk")
    with pytest.raises(ev.CorruptionError) as caught:
        ev.open_store(directory)
    assert caught.value.path == str(junk)
    assert junk.read_bytes() == b"junk"

    report = ev.repair_store(directory)
    assert any("set-aside" in action for action in report.actions)
    assert (directory / "set-aside" / junk.name).read_bytes() == b"junk"
    with ev.open_store(directory) as store:
        assert store.last_position == 300


def test_a_file_of_another_store_is_an_error_and_kept(tmp_path: Path) -> None:
    directory, other = tmp_path / "s", tmp_path / "other"
    store_of(directory, 200)
    foreign = store_of(other, 300)[-1]  # positions 201-300, as this store's next file would be
    shutil.copy(other / "data" / foreign, directory / "data" / foreign)
    with pytest.raises(ev.CorruptionError, match="belongs to store") as caught:
        ev.open_store(directory)
    assert caught.value.path == str(directory / "data" / foreign)
    assert foreign in data_files(directory)


def test_a_named_file_that_is_not_what_the_catalog_says_is_an_error_naming_it(tmp_path: Path) -> None:
    directory, other = tmp_path / "s", tmp_path / "other"
    names = store_of(directory, 200)
    assert store_of(other, 200) == names
    shutil.copy(other / "data" / names[0], directory / "data" / names[0])  # same positions, another store
    with pytest.raises(ev.CorruptionError, match="belongs to store") as caught:
        ev.open_store(directory)
    assert caught.value.path == str(directory / "data" / names[0])


def test_crash_leftovers_covered_by_the_log_or_other_files_are_still_removed(tmp_path: Path) -> None:
    directory, twin = tmp_path / "s", tmp_path / "twin"
    names = store_of(directory, 200)
    append_and_die(directory, 20)  # positions 201-220, in the log only
    # The file a flush of them writes (same store), as a crash before the catalog named it leaves it:
    shutil.copytree(directory, twin)
    with ev.open_store(twin) as store:
        store.flush()
    flushed = data_files(twin)[-1]
    assert flushed == "000000000201-000000000220.parquet"
    data = directory / "data"
    shutil.copy(twin / "data" / flushed, data / flushed)
    shutil.copy(data / names[0], data / "000000000001-000000000200.parquet")  # a merge never named
    with ev.open_store(directory) as store:
        assert data_files(directory) == names
        assert notes(store) == [f"n{i}" for i in range(200)] + [f"late{i}" for i in range(20)]


# -- the log and the manifest -----------------------------------------------------------------


def test_the_newest_log_segment_deleted_after_a_crash_is_an_error_naming_it(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    store_of(directory, 300)
    append_and_die(directory, 60)  # acknowledged, in the log only
    newest = wal_segments(directory)[-1]
    newest.unlink()

    with pytest.raises(ev.CorruptionError) as caught:
        ev.open_store(directory)
    assert caught.value.path == str(newest)
    assert "missing" in str(caught.value)
    with pytest.raises(ev.CorruptionError) as caught:
        ev.open_store(directory, read_only=True)
    assert caught.value.path == str(newest)
    with pytest.raises(ev.CorruptionError):  # still: a failed opening leaves the evidence alone
        ev.open_store(directory)

    report = ev.repair_store(directory)
    assert any(newest.name in action and "lost" in action for action in report.actions)
    with ev.open_store(directory) as store:
        assert store.last_position == 300
        fill(store, 1, start=300)


def test_a_missing_log_segment_between_two_others_is_an_error_naming_it(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    append_and_die(directory, 8, padding=500_000)  # 4 MB: segments of 1, 2, 4 MiB
    segments = wal_segments(directory)
    assert len(segments) >= 3
    segments[1].unlink()
    with pytest.raises(ev.CorruptionError) as caught:
        ev.open_store(directory)
    assert caught.value.path == str(segments[1])
    with pytest.raises(ev.CorruptionError):
        ev.repair_store(directory)  # a gap cannot be repaired
    assert wal_segments(directory) == [segments[0], *segments[2:]]


def test_opening_and_closing_without_appends_and_crashing_right_after_opening_raise_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    store_of(directory, 10)
    for _ in range(3):
        ev.open_store(directory).close()  # the unused log segment is removed, and that is recorded
    append_and_die(directory, 0)  # opened, then killed: its empty segment stays, required and there
    with ev.open_store(directory) as store:
        assert store.last_position == 10
    with ev.open_store(directory, read_only=True) as reader:
        assert reader.last_position == 10


def test_a_deleted_manifest_is_an_error_for_readers_naming_it(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    store_of(directory, 150)
    (directory / "manifest.json").unlink()
    with pytest.raises(ev.CorruptionError) as caught:
        ev.open_store(directory, read_only=True)
    assert caught.value.path == str(directory / "manifest.json")
    assert main(["info", str(directory)]) == 1

    with ev.open_store(directory):  # the writer writes it again
        pass
    with ev.open_store(directory, read_only=True) as reader:
        assert reader.last_position == 150


def test_a_read_only_opener_of_a_directory_that_is_no_store_is_told_so(tmp_path: Path) -> None:
    with pytest.raises(ev.InvalidInputError, match="no store"):
        ev.open_store(tmp_path, read_only=True)


# -- repair ----------------------------------------------------------------------------------------


def test_repair_of_a_sound_store_changes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    store_of(directory, 250)
    before = {p: p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file() and p.name != "LOCK"}
    report = ev.repair_store(directory)
    assert not report.changed
    assert "nothing to repair" in repr(report) and "\n" not in repr(report)
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_repair_after_a_compaction_keeps_the_merged_file_and_removes_the_pieces(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    names = store_of(directory, 300)
    for name in names:
        shutil.copy(directory / "data" / name, tmp_path / name)
    with ev.open_store(directory) as store:
        store.compact(min_files=2)
    merged = data_files(directory)
    assert len(merged) == 1
    for name in names:  # the merged-away files, as a crash before the trash was emptied leaves them
        shutil.copy(tmp_path / name, directory / "data" / name)
    (directory / "catalog.duckdb").unlink()
    report = ev.repair_store(directory)
    assert report.files == tuple(merged)
    assert sum("hold too; removed" in action for action in report.actions) == 3
    assert data_files(directory) == merged
    with ev.open_store(directory) as store:
        assert notes(store) == [f"n{i}" for i in range(300)]


def test_repair_moves_an_unreadable_catalog_aside_and_makes_a_new_one(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    store_of(directory, 200)
    (directory / "catalog.duckdb").write_bytes(b"not a database" * 100)
    with pytest.raises(ev.CorruptionError) as caught:
        ev.open_store(directory)
    assert caught.value.path == str(directory / "catalog.duckdb")
    report = ev.repair_store(directory)
    aside = [p for p in directory.iterdir() if p.name.startswith("catalog.duckdb.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes() == b"not a database" * 100
    assert any("unreadable" in action for action in report.actions)
    with ev.open_store(directory) as store:
        assert notes(store) == [f"n{i}" for i in range(200)]


def test_repair_refuses_a_gap_and_changes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    names = store_of(directory, 300)
    (directory / "data" / names[1]).unlink()
    with pytest.raises(ev.CorruptionError, match="missing") as caught:
        ev.open_store(directory)
    assert caught.value.path == str(directory / "data" / names[1])
    with pytest.raises(ev.CorruptionError, match="gap") as caught:
        ev.repair_store(directory)
    assert caught.value.path == str(directory / "data" / names[2])
    assert data_files(directory) == [names[0], names[2]]


def test_repair_needs_the_writer_gone(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    store_of(directory, 10)
    with ev.open_store(directory), pytest.raises(ev.StoreLockedError):
        ev.repair_store(directory)


def test_the_repair_command_says_what_it_did_and_dry_run_does_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "s"
    store_of(directory, 200)
    (directory / "catalog.duckdb").unlink()
    assert main(["repair", str(directory), "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "dry run" in said and "catalog.duckdb" in said
    assert not (directory / "catalog.duckdb").exists()
    assert main(["repair", str(directory)]) == 0
    said = capsys.readouterr().out
    assert "1 change made" in said and "positions 1-200" in said
    assert main(["repair", str(directory)]) == 0
    assert "nothing to repair" in capsys.readouterr().out
    assert main(["repair", str(tmp_path / "nowhere")]) == 1


def test_crashes_around_a_clean_open_and_close_leave_no_false_gap(tmp_path: Path) -> None:
    # A crash leaves an empty segment; a clean open and close removes its own unused one
    # after it; another crash leaves one more: the numbers have a gap that held nothing.
    directory = tmp_path / "s"
    store_of(directory, 10)
    append_and_die(directory, 0)
    ev.open_store(directory).close()
    append_and_die(directory, 3)
    numbers = [int(p.stem) for p in wal_segments(directory)]
    assert any(b != a + 1 for a, b in itertools.pairwise(numbers)), numbers
    with ev.open_store(directory) as store:
        assert store.last_position == 13
    with ev.open_store(directory, read_only=True) as reader:
        assert reader.last_position == 13
