"""Crash tests: a real writer process (tests/workers/crash_child.py) is killed with SIGKILL, again and again.

Each round starts the child on the same directory, reads the appends it
acknowledges, kills it (at a random moment, or stopped at a chosen point inside
a flush), then reopens the store here and checks it holds every acknowledged
event exactly once, positions 1..N without gaps, versions 1..k per stream, no
partial append, and that appending continues where it left off.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO

import pytest

import eventador as ev
from tests.support.domain import Deposited

CHILD = Path(__file__).resolve().parents[1] / "workers" / "crash_child.py"
REPO = CHILD.parents[2]
LINE_TIMEOUT = 60.0  # seconds without a line from the child before the test gives up on it

# Where a round may stop the child (see crash_child.py); None: kill at a random moment.
STALL_POINTS = [
    None,
    "parquet-before-rename",
    "parquet-after-rename",
    "manifest-after-rename",
    "wal-after-unlink",
    "wal-before-fdatasync",
]
FLUSH_POINTS = {"parquet-before-rename", "parquet-after-rename", "manifest-after-rename", "wal-after-unlink"}


@dataclass
class Append:
    tag: str
    stream: str
    version: int  # the stream's version after it
    size: int
    last: int  # the position of its last event


@dataclass
class History:
    """What the store must hold: every append acknowledged so far (and unacknowledged ones seen since)."""

    appends: dict[str, Append] = field(default_factory=dict)
    stalls: dict[str, int] = field(default_factory=dict)
    unacknowledged_seen: int = 0


def lines_of(stream: IO[str]) -> queue.Queue[str | None]:
    """The lines of `stream` as they come, then None at its end (read by a thread, so waits have deadlines)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def next_line(lines: queue.Queue[str | None]) -> str | None:
    try:
        return lines.get(timeout=LINE_TIMEOUT)
    except queue.Empty:
        pytest.fail(f"the child wrote nothing for {LINE_TIMEOUT:g} s")


def run_round(directory: Path, seed: int, rnd: random.Random, history: History, stderr: IO[str]) -> None:
    """Start the child, collect its acknowledgements, kill it."""
    point = rnd.choice(STALL_POINTS)
    kill_after = rnd.randint(1, 30)  # acknowledged appends before a random kill
    args = [sys.executable, str(CHILD), str(directory), str(seed)]
    if point is not None:
        args.append(f"{point}:{rnd.randint(1, 3)}")
    child = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert child.stdout is not None
        lines = lines_of(child.stdout)
        ready = next_line(lines)
        assert ready is not None, "the child died before opening the store"
        assert json.loads(ready) == {"ready": expected_last_position(history)}
        acknowledged = 0
        while True:
            line = next_line(lines)
            if line is None:
                pytest.fail(f"the child exited with {child.wait()} before it was killed")
            if line.startswith("STALL "):
                history.stalls[line.split()[1]] = history.stalls.get(line.split()[1], 0) + 1
                break
            record(history, line)
            acknowledged += 1
            # A stalled round still ends: the point may come late or never (kill after 60 then).
            if acknowledged >= (kill_after if point is None else 60):
                break
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=LINE_TIMEOUT) == -signal.SIGKILL
        # Lines already written before the kill are acknowledgements too.
        while (line := next_line(lines)) is not None:
            if not line.startswith("STALL "):
                record(history, line)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def record(history: History, line: str) -> None:
    data = json.loads(line)
    history.appends[data["tag"]] = Append(data["tag"], data["stream"], data["version"], data["size"], data["last"])


def expected_last_position(history: History) -> int:
    return max((a.last for a in history.appends.values()), default=0)


def check_store(directory: Path, history: History, round_seed: int) -> None:
    """Reopen the store and hold it against the history; then append once more and close."""
    with ev.open_store(directory, flush_every=3) as store:
        records = list(store.read_all())
        positions = [r.position for r in records]
        assert positions == list(range(1, len(records) + 1)), "positions are not 1..N without gaps"
        assert store.last_position == len(records)

        versions: dict[str, list[int]] = defaultdict(list)
        for r in records:
            versions[r.stream_id].append(r.version)
        for stream, seen in versions.items():
            assert seen == list(range(1, len(seen) + 1)), f"stream {stream}: versions {seen}"
            assert store.stream_version(stream) == len(seen)

        # Group the events by the append they belong to: every append whole, or absent.
        appends: dict[str, list[ev.RecordedEvent]] = defaultdict(list)
        for r in records:
            assert isinstance(r.event, Deposited)
            assert r.event.note is not None
            tag, index, size = r.event.note.split("/")
            appends[tag].append(r)
            assert int(index) == len(appends[tag]) - 1, f"append {tag}: events out of order"
        for tag, events in appends.items():
            size = int(events[0].event.note.split("/")[2])  # type: ignore[attr-defined]
            assert len(events) == size, f"append {tag}: {len(events)} of {size} events (a partial append)"
            assert len({e.stream_id for e in events}) == 1
            assert [e.version for e in events] == list(range(events[0].version, events[0].version + size))
            assert [e.position for e in events] == list(range(events[0].position, events[0].position + size))

        for tag, append in history.appends.items():
            assert tag in appends, f"acknowledged append {tag} is lost"
            events = appends[tag]
            assert (events[-1].stream_id, events[-1].version, events[-1].position) == (
                append.stream,
                append.version,
                append.last,
            ), f"acknowledged append {tag} moved"

        # At most one append was in flight when the child died: it may be there (whole) or not.
        extra = set(appends) - set(history.appends)
        assert len(extra) <= 1, f"appends nobody acknowledged: {sorted(extra)}"
        for tag in extra:
            assert tag.startswith(f"{round_seed}-"), f"append {tag} from an earlier round appeared late"
            last = appends[tag][-1]
            history.appends[tag] = Append(tag, last.stream_id, last.version, len(appends[tag]), last.position)
            history.unacknowledged_seen += 1

        assert store.sql("SELECT count(*), count(DISTINCT event_id) FROM events").fetchall() == [
            (len(records), len(records))
        ]

        # Appending continues where the log ended.
        stream = "acc-0"
        version = store.stream_version(stream)
        tag = f"parent-{round_seed}"
        event = Deposited(account_id=stream, amount=Decimal(round_seed % 10_000) / 100, note=f"{tag}/0/1")
        assert store.append(stream, [event], expected_version=version) == version + 1
        assert store.last_position == len(records) + 1
        history.appends[tag] = Append(tag, stream, version + 1, 1, len(records) + 1)


def crash_rounds(directory: Path, rounds: int, seed: int, stderr_path: Path) -> History:
    rnd = random.Random(seed)
    history = History()
    with open(stderr_path, "w") as stderr:
        for r in range(rounds):
            round_seed = seed * 1000 + r
            try:
                run_round(directory, round_seed, rnd, history, stderr)
                check_store(directory, history, round_seed)
            except BaseException:
                stderr.flush()
                sys.stderr.write(f"round {r} failed; child stderr:\n{stderr_path.read_text()[-4000:]}\n")
                raise
    return history


def test_killed_writers_lose_no_acknowledged_append_and_leave_no_partial_one(tmp_path: Path) -> None:
    started = time.monotonic()
    history = crash_rounds(tmp_path / "store", rounds=20, seed=20260101, stderr_path=tmp_path / "stderr.txt")
    # Some kills landed inside a flush, at points chosen so (not left to timing).
    assert set(history.stalls) & FLUSH_POINTS, f"no kill landed during a flush: {history.stalls}"
    assert len(history.appends) > 40
    print(f"{len(history.appends)} appends in {time.monotonic() - started:.1f} s; stalls {history.stalls}")


@pytest.mark.slow
def test_killed_writers_over_many_rounds(tmp_path: Path) -> None:
    history = crash_rounds(tmp_path / "store", rounds=150, seed=77, stderr_path=tmp_path / "stderr.txt")
    assert set(history.stalls) >= FLUSH_POINTS | {"wal-before-fdatasync"}, history.stalls
