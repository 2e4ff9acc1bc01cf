"""The heads the store reports agree with what readers see, while fsync'd appends are in flight.

An append takes its stream's new version under the store's lock, then waits for the group
commit's fsync; only then are its events visible. ``stream_version`` (and ``info``, the
repr, the aggregates that read heads) must not count it before: a reader that is told
version v must find v events.
"""

from __future__ import annotations

import threading
from pathlib import Path

import eventador as ev


class Ticked(ev.Event, event_type="tests.heads.Ticked"):
    n: int


WRITERS = 4
READERS = 3
APPENDS = 150  # per writer


def test_a_reader_finds_every_event_that_stream_version_counts(tmp_path: Path) -> None:
    store = ev.open_store(tmp_path / "store", durability="fsync")
    streams = [f"s-{i}" for i in range(WRITERS)]
    done = threading.Event()
    short: list[tuple[str, int, int]] = []
    streams_short: list[tuple[int, int]] = []
    failures: list[BaseException] = []

    def write(stream_id: str) -> None:
        try:
            for n in range(APPENDS):
                store.append(stream_id, [Ticked(n=n)], expected_version=n)
        except BaseException as exc:
            failures.append(exc)

    def read(k: int) -> None:
        try:
            # Stops at the first shortfalls: a reader spinning on a broken head must fail the
            # test, not fill the memory while the writers go on.
            while not done.is_set() and len(short) + len(streams_short) < 20:
                for stream_id in streams:
                    version = store.stream_version(stream_id)
                    found = store.read_stream(stream_id)
                    if len(found) < version:
                        short.append((stream_id, version, len(found)))
                    newest = store.read_stream(stream_id, reverse=True, limit=1)
                    if version and (not newest or newest[0].version < version):
                        short.append((stream_id, version, newest[0].version if newest else 0))
                if k == 0:  # the stream count is a head too
                    counted = store._visible_streams()
                    seen = len({r.stream_id for r in store.read_all()})
                    if seen < counted:
                        streams_short.append((counted, seen))
        except BaseException as exc:
            failures.append(exc)

    readers = [threading.Thread(target=read, args=(k,), daemon=True) for k in range(READERS)]
    writers = [threading.Thread(target=write, args=(s,), daemon=True) for s in streams]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=60)
    stuck = [t.name for t in writers if t.is_alive()]
    done.set()
    for t in readers:
        t.join(timeout=60)
    assert not stuck, f"writers still appending after 60 s: {stuck}"
    assert not failures
    assert not short, f"stream_version counted events read_stream did not find: {short[:5]}"
    assert not streams_short, f"the store counted streams readers did not see: {streams_short[:5]}"
    assert [store.stream_version(s) for s in streams] == [APPENDS] * WRITERS
    assert store.info()["streams"] == WRITERS
    store.close()
