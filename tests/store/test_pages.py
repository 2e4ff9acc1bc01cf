"""Reads with a limit, or newest first, decode only the events they return.

What is counted: an upcaster that is a plain function runs once for every old event
decoded (no typed column can stand in for it), so its calls are the decodes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import eventador as ev

_names = iter(range(1_000_000))



def _ticked_v1(name: str) -> type[ev.Event]:
    class Ticked(ev.Event, event_type=name):
        n: int

    return Ticked


def _ticked_v2(name: str) -> type[ev.Event]:
    class Ticked(ev.Event, event_type=name, version=2):
        n: int
        double: int

    return Ticked


def _counted_store(path: Path | None, events: int, streams: int) -> tuple[ev.EventStore, list[int]]:
    """`events` version-1 events in `streams` interleaved streams, flushed into a few files
    (and a reopened store when on disk), read through a counting upcaster to version 2."""
    name = f"pages{next(_names)}.Ticked"
    old = _ticked_v1(name)
    store = ev.open_store(path, flush_every=events // 3 + 1)
    for n in range(events):
        store.append(f"s-{n % streams}", [old(n=n)])
    store.flush()
    _ticked_v2(name)  # today's class: version 2, redefined as a notebook cell run again would
    calls: list[int] = []

    def count(data: dict[str, int]) -> dict[str, int]:
        calls.append(data["n"])
        return {**data, "double": 2 * data["n"]}

    ev.upcaster(name, 1, count)
    if path is not None:
        store.close()
        store = ev.open_store(path)
    return store, calls


@pytest.fixture(params=["memory", "disk"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    return None if request.param == "memory" else tmp_path / "store"


def test_read_all_with_a_limit_decodes_only_what_it_returns(where: Path | None) -> None:
    store, calls = _counted_store(where, 3_000, 50)
    assert len([s for s in store.state().segments]) >= 2
    for start in (1, 998, 1_001, 2_995):
        calls.clear()
        page = list(store.read_all(from_position=start, limit=10))
        assert [r.position for r in page] == list(range(start, min(start + 10, 3_001)))
        assert [r.event.double for r in page] == [2 * (p - 1) for p in range(start, min(start + 10, 3_001))]
        assert len(calls) == len(page)
    calls.clear()
    assert len(list(store.as_of(2_000).read_all(from_position=1_995, limit=10))) == 6
    assert len(calls) == 6
    store.close()


def test_the_newest_event_of_a_long_stream_is_one_decode(where: Path | None) -> None:
    store, calls = _counted_store(where, 3_000, 2)
    calls.clear()
    [newest] = store.read_stream("s-1", reverse=True, limit=1)
    assert (newest.version, newest.event.n) == (1_500, 2_999)
    assert calls == [2_999]
    calls.clear()
    assert [r.version for r in store.read_stream("s-0", limit=3)] == [1, 2, 3]
    assert calls == [0, 2, 4]
    calls.clear()
    assert store.as_of(100).stream_version("s-0") == 50
    assert calls == [98]
    store.close()


def test_a_limit_with_a_rare_type_reads_on_until_it_has_enough(tmp_path: Path) -> None:
    """The positions looked at grow while the type filter drops events, past the few rows
    read alone to the whole file; what comes back is what a read without a limit gives."""
    rare, common = f"pages{next(_names)}.Rare", f"pages{next(_names)}.Common"

    class Rare(ev.Event, event_type=rare):
        n: int

    class Common(ev.Event, event_type=common):
        n: int

    store = ev.open_store(tmp_path / "store", flush_every=4_000)
    for n in range(12_000):
        store.append(f"s-{n % 7}", [Rare(n=n) if n % 2_500 == 7 else Common(n=n)])
    store.flush()
    store.close()
    store = ev.open_store(tmp_path / "store")
    everything = [r.position for r in store.read_all(event_types=[Rare])]
    assert len(everything) == 5
    for start in (1, 9, 2_600, 11_000):
        for limit in (1, 2, 4):
            wanted = [p for p in everything if p >= start][:limit]
            assert [r.position for r in store.read_all(from_position=start, event_types=[Rare], limit=limit)] == wanted
    pages = list(store.read_batches(from_position=3, event_types=[Common], limit=20_000))
    assert all(len(b) <= 16_384 for b in pages)
    assert [r.position for b in pages for r in b] == [
        r.position for r in store.read_all(from_position=3, event_types=[Common])
    ]
    store.close()
