"""Several streams and a checkpoint in one log frame (``append_streams``, ``append_many``): the
frame on disk, repair, and a writer process killed with SIGKILL while it appends such frames.

The contract suite (eventador/testing/contract.py) holds the behaviour on every kind of store;
these tests look at the disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import cbor2
import pytest

import eventador as ev
from eventador.codec import encode_event, encode_fields
from eventador.store.appends import frame_records
from eventador.store.wal import WriteAheadLog, scan_segment
from tests.store.test_crash import LINE_TIMEOUT, lines_of, next_line
from tests.store.test_disk_full import Filler, disk  # noqa: F401  (disk: the small tmpfs fixture)
from tests.support.domain import Deposited

CHILD = Path(__file__).resolve().parents[1] / "workers" / "multistream_child.py"
REPO = CHILD.parents[2]


def deposit(stream: str, note: str = "") -> Deposited:
    return Deposited(account_id=stream, amount=Decimal("1.00"), note=note)


def logged_frames(directory: Path) -> list[tuple[list[tuple[str, int]], tuple[str, int] | None]]:
    """Each frame of the store's log: its appends as (stream, events) and its checkpoint."""
    frames = []
    for _, path in WriteAheadLog.segments(directory / "wal"):
        for frame in scan_segment(path, repair=False):
            records, checkpoint = frame_records(cbor2.loads(frame.body))
            frames.append(([(r[1], len(r[6][1]) // 16) for r in records], checkpoint))
    return frames


def test_append_many_and_append_streams_write_one_frame_and_append_its_own(tmp_path: Path) -> None:
    # A crash keeps a frame whole or drops it: one frame for all the streams is what makes
    # them all or nothing (append_many wrote a frame per stream before).
    with ev.open_store(tmp_path / "s") as store:
        store.append("a", [deposit("a")])
        store.append_many([("a", [deposit("a")]), ("b", [deposit("b"), deposit("b")]), ("c", [deposit("c")])])
        store.append_streams([("b", [deposit("b")], 2), ("d", [deposit("d")], 0)], checkpoint=("up", 3))
        store.append_streams([], checkpoint=("up", 4))
        assert logged_frames(tmp_path / "s") == [
            ([("a", 1)], None),
            ([("a", 1), ("b", 2), ("c", 1)], None),
            ([("b", 1), ("d", 1)], ("up", 3)),
            ([], ("up", 4)),
        ]
        # A single append's frame is the 7-array it always was.
        segment = WriteAheadLog.segments(tmp_path / "s" / "wal")[-1][1]
        assert next(scan_segment(segment, repair=False)).body[:1] == b"\x87"
        assert store.verify().ok


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "disk"])
def test_encoded_appends_read_back_as_their_events_and_commit_all_or_nothing(tmp_path: Path, on_disk: bool) -> None:
    """prepare_encoded + commit_together (the eventsourcing adapter's insert): no instance is
    kept, so reads decode the payloads, in the hot tier, from a file and after a reopen."""
    path = tmp_path / "s" if on_disk else None
    events = {"a": [deposit("a", "1"), deposit("a", "2")], "b": [deposit("b", "3")]}

    def encoded(stream: str, at: int) -> object:
        fields = [dict(e.__dict__) for e in events[stream]]
        return store.prepare_encoded(stream, Deposited.event_type, 1, encode_fields(Deposited, fields), at)

    store = ev.open_store(path)
    try:
        assert store.commit_together([encoded("a", 0), encoded("b", ev.NO_STREAM)], ("up", 7)) == [1, 2, 3]
        with pytest.raises(ev.ConcurrencyError):  # b is at 1: nothing of a is written either
            store.commit_together([encoded("a", 2), encoded("b", 0)], ("up", 8))
        with pytest.raises(ev.CheckpointConflict):
            store.commit_together([encoded("a", 2)], ("up", 7))
        assert store.last_position == 3 and store.checkpoint("up") == 7
        expected = [*events["a"], *events["b"]]
        assert [r.event for r in store.read_all()] == expected
        assert store.sql('SELECT note FROM "test.Deposited" ORDER BY position').fetchall() == [("1",), ("2",), ("3",)]
        store.flush()
        assert [r.event for r in store.read_stream("a")] == events["a"]
    finally:
        store.close()
    if on_disk:
        with ev.open_store(path) as store:
            assert [r.event for r in store.read_all()] == expected
            assert store.checkpoint("up") == 7


def test_an_encoded_append_is_checked_before_anything_is_written(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "s") as store:
        good = store.prepare_encoded("a", Deposited.event_type, 1, [encode_event(deposit("a"))], 0)
        with pytest.raises(ev.InvalidInputError, match="stream_id"):
            store.prepare_encoded("", Deposited.event_type, 1, [encode_event(deposit("a"))], 0)
        with pytest.raises(ev.InvalidInputError, match="expected_version"):
            store.prepare_encoded("a", Deposited.event_type, 1, [encode_event(deposit("a"))], -2)
        with pytest.raises(ev.InvalidInputError, match="position"):
            store.commit_together([good], ("up", "seven"))  # type: ignore[arg-type]
        assert store.last_position == 0 and store.checkpoints() == {}


def test_repair_keeps_the_checkpoints_of_retired_log_segments(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with ev.open_store(directory) as store:
        store.append_streams([("a", [deposit("a")], 0)], checkpoint=("up", 5))
        store.flush()  # the segment holding the checkpoint is retired: the catalog holds it
        store.append_streams([], checkpoint=("other", 2))  # in the log only
    assert ev.repair_store(directory).actions == ()
    (directory / "catalog.duckdb").unlink()
    report = ev.repair_store(directory)
    assert any("checkpoint" in action for action in report.actions), report
    with ev.open_store(directory) as store:
        assert store.checkpoints() == {"up": 5, "other": 2}
        assert [r.stream_id for r in store.read_all()] == ["a"]


def test_a_failed_log_takes_back_the_checkpoint_with_the_events(request: pytest.FixtureRequest) -> None:
    full: Path = request.getfixturevalue("disk")  # a real 4 MiB tmpfs, filled below
    cases = [("fsync", ("up", 6)), ("fsync", ("new", 1)), ("batch", ("up", 6)), ("none", ("up", 6))]
    for i, (durability, checkpoint) in enumerate(cases):
        path = full / f"store-{i}"
        filler = Filler(full)
        store = ev.open_store(path, durability=durability)
        for version in range(3):  # frames enough to size the next log segment beyond the disk
            store.append_streams([("a", [deposit("a")], version)], checkpoint=("up", 3 + version))
        store.flush()  # the next append needs a new log segment
        filler.fill()
        with pytest.raises(ev.DiskFullError):
            store.append_streams([("a", [deposit("a")], 3), ("b", [deposit("b")], 0)], checkpoint=checkpoint)
        assert (store.stream_version("a"), store.stream_version("b"), store.last_position) == (3, 0, 3)
        assert store.checkpoints() == {"up": 5}  # neither moved, nor made
        with contextlib.suppress(ev.StoreError):  # the hot tier holds rows it cannot flush
            store.close()
        filler.remove()
        with ev.open_store(path, durability=durability) as reopened:
            assert (reopened.last_position, reopened.checkpoints()) == (3, {"up": 5})
            assert reopened.append_streams([("b", [deposit("b")], 0)], checkpoint=("up", 6)) == [4]


def test_repair_of_a_stale_catalog_keeps_the_manifests_later_checkpoints(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with ev.open_store(directory) as store:
        store.append_streams([("a", [deposit("a")], 0)], checkpoint=("up", 5))
    stale = (directory / "catalog.duckdb").read_bytes()  # closed: DuckDB's own log is folded in
    with ev.open_store(directory) as store:
        store.append_streams([("a", [deposit("a")], 1)], checkpoint=("up", 7))
    (directory / "catalog.duckdb").write_bytes(stale)  # names one file of two, and checkpoint 5
    with pytest.raises(ev.CorruptionError, match="older than the data files"):
        ev.open_store(directory)
    ev.repair_store(directory)
    with ev.open_store(directory) as store:
        assert (store.checkpoints(), store.last_position) == ({"up": 7}, 2)


def run_round(
    directory: Path, seed: int, kill_after: int, tear: int | None, acknowledged: dict[int, int], stderr: object
) -> int:
    """Start the child, note the frames it acknowledges (k -> events), SIGKILL it after
    `kill_after` of them or once it has torn a write; returns the checkpoint it started from."""
    args = [sys.executable, str(CHILD), str(directory), str(seed)] + ([] if tear is None else [str(tear)])
    child = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE,
        stderr=stderr,  # type: ignore[arg-type]
        text=True,
    )
    try:
        assert child.stdout is not None
        lines = lines_of(child.stdout)
        ready = next_line(lines)
        assert ready is not None, "the child died before opening the store"
        started = int(json.loads(ready)["checkpoint"])
        count = 0
        while count < kill_after:
            line = next_line(lines)
            if line is None:
                pytest.fail(f"the child exited with {child.wait()} before it was killed")
            if line.startswith("TORN"):
                break
            data = json.loads(line)
            acknowledged[data["k"]] = data["events"]
            count += 1
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=LINE_TIMEOUT) == -signal.SIGKILL
        while (line := next_line(lines)) is not None:  # written before the kill: acknowledged too
            data = json.loads(line)
            acknowledged[data["k"]] = data["events"]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    return started


def check_frames_whole(directory: Path, acknowledged: dict[int, int]) -> int:
    """Reopen the store: every frame's events all there or none, the checkpoint that of the last
    whole frame, every acknowledged frame kept; returns the checkpoint. Repair, which reads the
    log on its own, counts as many events."""
    in_log = ev.repair_store(directory, dry_run=True).last_position
    with ev.open_store(directory) as store:
        records = list(store.read_all())
        assert in_log == len(records)
        assert [r.position for r in records] == list(range(1, len(records) + 1))
        frames: dict[int, list[ev.RecordedEvent]] = defaultdict(list)
        versions: dict[str, int] = defaultdict(int)
        for r in records:
            versions[r.stream_id] += 1
            assert r.version == versions[r.stream_id], f"stream {r.stream_id}: versions out of order"
            assert isinstance(r.event, Deposited) and r.event.note is not None
            k, index, total = map(int, r.event.note.split("/"))
            assert index == len(frames[k]), f"frame {k}: events out of order"
            frames[k].append(r)
        for k, events in frames.items():
            total = int(events[0].event.note.split("/")[2])  # type: ignore[attr-defined]
            assert len(events) == total, f"frame {k}: {len(events)} of {total} events (a partial frame)"
            positions = [e.position for e in events]
            assert positions == list(range(positions[0], positions[0] + total)), f"frame {k} is not consecutive"
        checkpoint = store.checkpoint("upstream")
        assert store.checkpoints() == ({"upstream": checkpoint} if checkpoint else {})
        newest = max(acknowledged, default=0)
        assert newest <= checkpoint <= newest + 1, "the checkpoint lost an acknowledged frame or ran ahead"
        assert max(frames, default=0) <= checkpoint, "events of a frame past the checkpoint"
        for k, events in acknowledged.items():
            assert len(frames.get(k, [])) == events, f"acknowledged frame {k} is not whole"
        if checkpoint > newest:  # the frame in flight at the kill survived, whole
            acknowledged[checkpoint] = len(frames.get(checkpoint, []))
        return checkpoint


def kill_rounds(directory: Path, rounds: int, seed: int, stderr_path: Path) -> dict[int, int]:
    """Rounds of: start the child, let it acknowledge a few frames, kill it, check the store."""
    rnd = random.Random(seed)
    acknowledged: dict[int, int] = {}
    checkpoint = 0
    with open(stderr_path, "w") as stderr:
        for r in range(rounds):
            try:
                tear = rnd.randint(1, 12) if r % 2 else None  # every other round tears a write, and is killed then
                kill_after = rnd.randint(1, 40) if tear is None else 1_000_000
                started = run_round(directory, seed * 1000 + r, kill_after, tear, acknowledged, stderr)
                assert started == checkpoint, "the child did not start where the last check ended"
                checkpoint = check_frames_whole(directory, acknowledged)
            except BaseException:
                stderr.flush()
                sys.stderr.write(f"round {r} failed; child stderr:\n{stderr_path.read_text()[-4000:]}\n")
                raise
    return acknowledged


def test_killed_writers_keep_each_multi_stream_frame_whole(tmp_path: Path) -> None:
    started = time.monotonic()
    acknowledged = kill_rounds(tmp_path / "store", rounds=6, seed=18, stderr_path=tmp_path / "stderr.txt")
    assert sum(1 for events in acknowledged.values() if events) > 6
    # Torn frames were set aside whole: the writes were cut inside frames, not between them.
    assert list((tmp_path / "store" / "wal").glob("*.tail-*"))
    print(f"{len(acknowledged)} frames in {time.monotonic() - started:.1f} s")


@pytest.mark.slow
def test_killed_writers_keep_each_multi_stream_frame_whole_over_many_rounds(tmp_path: Path) -> None:
    acknowledged = kill_rounds(tmp_path / "store", rounds=80, seed=1818, stderr_path=tmp_path / "stderr.txt")
    assert sum(1 for events in acknowledged.values() if events) > 80
