"""Torture test: writers with 1-4 threads are killed with SIGKILL round after round, on one store.

Each round forks a writer (tests/workers/torture_worker.py) from a forkserver that has
imported eventador already, so a round costs its run and the check rather than a
Python start. The writer appends (single events, batches, ``append_many``), flushes
and compacts with a small ``flush_every``, and reports each append after it
returned. The parent kills it at a seeded random moment: after a time, after a
number of acknowledgements, or just after it announced a ``flush()`` or a
``compact()`` (kills that land before the call returned are counted). Then the
parent reopens the store and checks:

- every acknowledged event is there exactly once, with its stream, version and payload;
- positions are 1..N without gaps and each stream's versions 1..k;
- an append nobody acknowledged is whole or absent (per stream), from this round only,
  and never twice; an event's id never changes from one round to the next;
- ``read_all``, ``read_stream`` and ``store.sql`` show the same events;
- the store takes a new append where the log ended.

Rounds go on with the same store, so damage left by one kill would show later.
The default run is short; ``-m slow`` runs 1,000 rounds (10 stores of 100).
"""

from __future__ import annotations

import json
import multiprocessing
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import pytest

import eventador as ev
from tests.support.domain import Deposited
from tests.workers import torture_worker

READY_TIMEOUT = 30.0  # seconds for a forked writer to open the store
AIM_TIMEOUT = 1.0  # seconds to wait for the moment a round aims at before killing anyway
AIMS = ["time", "time", "acks", "flush", "compact"]


@dataclass
class Part:
    """One stream's share of an append: the stream's version after it and the amounts appended."""

    stream: str
    version: int
    amounts: list[Decimal]


@dataclass
class History:
    """What the store must hold, and what the rounds did."""

    parts: dict[tuple[str, int], Part] = field(default_factory=dict)  # (tag, part) -> Part
    event_ids: dict[str, uuid.UUID] = field(default_factory=dict)  # note -> the id it was first seen with
    last_position: int = 0
    rounds: int = 0
    acknowledged: int = 0  # appends the writers reported
    events: int = 0  # events in them
    unacknowledged_seen: int = 0  # appends found in the store that were never reported
    torn_lines: int = 0  # report lines cut short by the kill
    killed_inside: Counter[str] = field(default_factory=Counter)  # flush/compact calls the kill interrupted
    aims: Counter[str] = field(default_factory=Counter)
    threads: Counter[int] = field(default_factory=Counter)


class ReportReader:
    """The writer's report file, read as it grows: whole lines only, a cut-off tail is no line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.tail = b""
        self.lines: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        """The lines completed since the last poll."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *whole, self.tail = (self.tail + data).split(b"\n")
        new = [json.loads(line) for line in whole]
        for line in new:
            if "error" in line:
                pytest.fail(f"the writer failed:\n{line['error']}")
        self.lines.extend(new)
        return new


@pytest.fixture(scope="module")
def forkserver() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.workers.torture_worker"])
    return ctx


def run_round(ctx: ForkServerContext, directory: Path, round_seed: int, history: History) -> int:
    """Fork a writer on the store, kill it with SIGKILL at a random moment, record what it
    acknowledged; returns its number of threads."""
    rnd = random.Random(round_seed)
    threads, flush_every, aim = rnd.randint(1, 4), rnd.choice([2, 3, 5, 8, 13]), rnd.choice(AIMS)
    history.threads[threads] += 1
    history.aims[aim] += 1
    report_path = directory.parent / f"report-{round_seed}.jsonl"
    report = ReportReader(report_path)
    writer = ctx.Process(
        target=torture_worker.main, args=(str(directory), str(report_path), round_seed, threads, flush_every)
    )
    writer.start()
    try:
        wait_for(writer, report, lambda line: "ready" in line, READY_TIMEOUT, "opened the store")
        assert report.lines[0] == {"ready": history.last_position}
        if aim == "time":
            time.sleep(rnd.uniform(0.02, 0.3))
            report.poll()
        elif aim == "acks":
            wanted = rnd.randint(1, 60)
            acks = [0]

            def enough(line: dict[str, Any]) -> bool:
                acks[0] += "tag" in line
                return acks[0] >= wanted

            wait_for(writer, report, enough, AIM_TIMEOUT)
        else:  # just after it announced a flush or a compaction: wait a little, or not at all
            wait_for(writer, report, lambda line: line.get("begin") == aim, AIM_TIMEOUT)
            time.sleep(rnd.choice([0.0, 0.0, rnd.uniform(0.0, 0.02)]))
        assert writer.is_alive(), f"the writer exited with {writer.exitcode} before it was killed"
        writer.kill()  # SIGKILL
        writer.join(READY_TIMEOUT)
        assert writer.exitcode == -signal.SIGKILL
    finally:
        if writer.is_alive():
            writer.kill()
            writer.join()
    report.poll()
    history.torn_lines += bool(report.tail)  # written only partly: not an acknowledgement
    report_path.unlink()
    pending: dict[str, str] = {}
    for line in report.lines:
        if "tag" in line:
            record(history, line["tag"], [Part(s, v, [Decimal(a) for a in amounts]) for s, v, amounts in line["parts"]])
        elif "begin" in line:
            pending[line["op"]] = line["begin"]
        elif "end" in line:
            del pending[line["end"]]
    history.killed_inside.update(pending.values())
    history.rounds += 1
    return threads


def wait_for(
    writer: multiprocessing.process.BaseProcess, report: ReportReader, wanted: Any, timeout: float, what: str = ""
) -> None:
    """Poll the report until a line satisfies `wanted`; fail if the writer dies, and after `timeout`
    fail when `what` says it had to happen (else just return: the round kills anyway)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(wanted(line) for line in report.poll()):
            return
        if not writer.is_alive():
            report.poll()
            pytest.fail(f"the writer exited with {writer.exitcode} before it was killed")
        time.sleep(0.001)
    if what:
        pytest.fail(f"the writer has not {what} after {timeout:g} s")


def record(history: History, tag: str, parts: list[Part]) -> None:
    for n, part in enumerate(parts):
        history.parts[(tag, n)] = part
    history.acknowledged += 1
    history.events += sum(len(p.amounts) for p in parts)


def check_store(directory: Path, history: History, round_seed: int, threads: int) -> None:
    """Reopen the store and hold it against the history; then append once more and close."""
    with ev.open_store(directory, flush_every=5) as store:
        records = list(store.read_all())
        n = len(records)
        assert [r.position for r in records] == list(range(1, n + 1)), "positions are not 1..N without gaps"
        assert store.last_position == n

        by_stream: dict[str, list[ev.RecordedEvent]] = defaultdict(list)
        for r in records:
            by_stream[r.stream_id].append(r)
        for stream, events in by_stream.items():
            assert [r.version for r in events] == list(range(1, len(events) + 1)), f"{stream}: versions not 1..k"
            assert store.stream_version(stream) == len(events)
            assert store.read_stream(stream) == events, f"read_stream({stream!r}) differs from read_all"

        # Group the events by the part of the append they belong to: every part whole, or absent.
        found: dict[tuple[str, int], list[ev.RecordedEvent]] = defaultdict(list)
        for r in records:
            assert isinstance(r.event, Deposited) and r.event.note is not None
            tag, part, index, _ = r.event.note.split("/")
            events = found[(tag, int(part))]
            assert int(index) == len(events), f"append {tag}: events out of order"
            events.append(r)
            assert history.event_ids.setdefault(r.event.note, r.event_id) == r.event_id, f"{r.event.note}: id changed"
        assert len(set(history.event_ids.values())) == len(history.event_ids) == n, "event ids not unique"
        for key, events in found.items():
            size = int(events[0].event.note.split("/")[3])  # type: ignore[union-attr]
            assert len(events) == size, f"append {key}: {len(events)} of {size} events (a partial append)"
            assert len({r.stream_id for r in events}) == 1
            assert [r.position for r in events] == list(range(events[0].position, events[0].position + size))

        for key, part in history.parts.items():
            assert key in found, f"acknowledged append {key} is lost"
            events = found[key]
            last = events[-1]
            assert (last.stream_id, last.version) == (part.stream, part.version), f"acknowledged append {key} moved"
            assert amounts(events) == part.amounts, f"acknowledged append {key} changed"

        # Appends cut short by the kill (at most one per thread, and tags within one append
        # count once) may be there whole: they join the history; later rounds must keep them.
        extra = sorted(set(found) - set(history.parts))
        assert len({tag for tag, _ in extra}) <= threads, f"appends nobody acknowledged: {extra}"
        for tag, part in extra:
            assert tag.startswith(f"{round_seed}-"), f"append {tag} from an earlier round appeared late"
            events = found[(tag, part)]
            history.parts[(tag, part)] = Part(events[-1].stream_id, events[-1].version, amounts(events))
        history.unacknowledged_seen += len({tag for tag, _ in extra})

        counts = store.sql("SELECT count(*), count(DISTINCT event_id), coalesce(max(position), 0) FROM events")
        assert counts.fetchall() == [(n, n, n)]
        rows = store.sql('SELECT position, stream_id, version, note, amount FROM "test.Deposited" ORDER BY position')
        assert rows.fetchall() == [(r.position, r.stream_id, r.version, r.event.note, r.event.amount) for r in records]  # type: ignore[attr-defined]

        # The store takes a new append where the log ended.
        stream = f"s-{round_seed % torture_worker.STREAMS}"
        version = store.stream_version(stream)
        tag = f"parent-{round_seed}"
        amount = Decimal(round_seed % 100_000) / 100
        new = Deposited(account_id="-", amount=amount, note=f"{tag}/0/0/1")
        assert store.append(stream, [new], expected_version=version) == version + 1
        assert store.last_position == n + 1
        history.parts[(tag, 0)] = Part(stream, version + 1, [amount])
        history.last_position = n + 1


def amounts(records: list[ev.RecordedEvent]) -> list[Decimal]:
    return [r.event.amount for r in records]  # type: ignore[attr-defined]


def torture(ctx: ForkServerContext, tmp_path: Path, seed: int, rounds: int) -> History:
    directory = tmp_path / "store"
    history = History()
    for r in range(rounds):
        round_seed = seed * 10_000 + r
        try:
            threads = run_round(ctx, directory, round_seed, history)
            check_store(directory, history, round_seed, threads)
        except BaseException as exc:
            exc.add_note(f"in round {r} of {directory} (round seed {round_seed})")
            raise
    return history


def summary(history: History, seconds: float) -> str:
    return (
        f"{history.rounds} rounds in {seconds:.1f} s: {history.acknowledged} acknowledged appends "
        f"({history.events} events), {history.unacknowledged_seen} unacknowledged ones kept, "
        f"{history.torn_lines} torn report lines; kills inside {dict(history.killed_inside)}; "
        f"aims {dict(history.aims)}; threads {dict(sorted(history.threads.items()))}"
    )


def test_a_report_line_cut_short_by_the_kill_is_no_acknowledgement(tmp_path: Path) -> None:
    path = tmp_path / "report.jsonl"
    path.write_bytes(b'{"ready": 0}\n{"tag": "1-0-0", "parts": [["s-1", 1, ["1.5"]]]}\n{"tag": "1-0-1", "par')
    report = ReportReader(path)
    assert [line.get("tag") for line in report.poll()] == [None, "1-0-0"]
    assert report.tail == b'{"tag": "1-0-1", "par'
    with open(path, "ab") as f:  # the rest of a line written in two parts (never by the writer) still counts
        f.write(b'ts": []}\n')
    assert report.poll() == [{"tag": "1-0-1", "parts": []}] and report.tail == b""


def test_killed_writers_with_threads_lose_nothing_acknowledged(forkserver: ForkServerContext, tmp_path: Path) -> None:
    started = time.monotonic()
    history = torture(forkserver, tmp_path, seed=1, rounds=15)
    print(summary(history, time.monotonic() - started))
    assert history.acknowledged > 100
    assert sum(history.killed_inside.values()) > 0, "no kill landed inside a flush() or compact()"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10))
def test_torture_1000_rounds(forkserver: ForkServerContext, tmp_path: Path, seed: int) -> None:
    """100 rounds on each of 10 stores."""
    started = time.monotonic()
    history = torture(forkserver, tmp_path, seed=100 + seed, rounds=100)
    print(summary(history, time.monotonic() - started))
    assert history.killed_inside["flush"] > 0 and history.killed_inside["compact"] > 0, history.killed_inside
