"""Group commit from writer threads: appends share fsyncs, each is visible once it returns,
and a failed round fails every append waiting on it (none hangs, none is acknowledged)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

import eventador as ev


class Tick(ev.Event, event_type="test.wal.Tick"):
    n: int


WRITERS = 8


def _writers(store: ev.EventStore, body: object) -> list[threading.Thread]:
    threads = [threading.Thread(target=body, args=(t,), daemon=True) for t in range(WRITERS)]
    for th in threads:
        th.start()
    return threads


def test_threads_share_fsyncs_and_see_their_append_on_return(tmp_path: Path) -> None:
    per = 60
    problems: list[str] = []
    with ev.open_store(tmp_path / "store", durability="fsync") as store:
        wal = store._wal
        assert wal is not None
        before = wal.syncs
        start = threading.Barrier(WRITERS)

        def writer(t: int) -> None:
            sid = f"w-{t}"
            start.wait()
            for i in range(1, per + 1):
                version = store.append(sid, [Tick(n=i)], expected_version=i - 1)
                # The round's leader makes events visible before releasing the appenders it covered.
                seen = store.read_stream(sid, from_version=version)
                if [r.event.n for r in seen] != [i]:
                    problems.append(f"{sid} v{version}: read back {[r.event.n for r in seen]}")

        for th in _writers(store, writer):
            th.join(timeout=120)
            assert not th.is_alive()
        syncs = wal.syncs - before
        assert store.info()["fsyncs"] == wal.syncs  # what users see of it
        assert problems == []
        assert store.last_position == WRITERS * per
        assert syncs < WRITERS * per, f"{syncs} fsyncs for {WRITERS * per} appends: none shared"
    with ev.open_store(tmp_path / "store") as reopened:
        for t in range(WRITERS):
            assert [r.event.n for r in reopened.read_stream(f"w-{t}")] == list(range(1, per + 1))


def test_a_failed_round_fails_every_waiting_append_and_loses_no_acknowledged_one(tmp_path: Path) -> None:
    store = ev.open_store(tmp_path / "store", durability="fsync")
    acked = [0] * WRITERS
    failures: list[BaseException] = []
    start = threading.Barrier(WRITERS + 1)

    def writer(t: int) -> None:
        start.wait()
        try:
            while True:
                acked[t] = store.append(f"w-{t}", [Tick(n=acked[t] + 1)], expected_version=acked[t])
        except ev.StoreError as exc:
            failures.append(exc)

    threads = _writers(store, writer)
    start.wait()
    deadline = time.monotonic() + 60
    while sum(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sum(acked) >= 200
    # Break the log for real: its descriptor now names a read-only /dev/null, so the next
    # write or fsync fails in the kernel while writers are queued on the round.
    wal = store._wal
    assert wal is not None
    broken = os.open(os.devnull, os.O_RDONLY)
    os.dup2(broken, wal._fd)
    os.close(broken)
    for th in threads:
        th.join(timeout=60)
        assert not th.is_alive(), "a writer hangs after the log failed"
    assert len(failures) == WRITERS
    with pytest.raises(ev.StoreError):
        store.append("w-0", [Tick(n=0)])
    with pytest.raises(ev.StoreError):
        store.close()  # its flush needs the failed log

    with ev.open_store(tmp_path / "store") as reopened:
        for t in range(WRITERS):
            got = [r.event.n for r in reopened.read_stream(f"w-{t}")]
            # Every acknowledged append is there, in order; an unacknowledged one may be too.
            assert got[: acked[t]] == list(range(1, acked[t] + 1))
            assert got == list(range(1, len(got) + 1))


def test_an_appender_interrupted_while_it_waits_leaves_the_log_usable(tmp_path: Path) -> None:
    """Ctrl-C in a notebook while another thread leads a round: the interrupted appender
    leaves the waiters, and later rounds neither wait for it nor hang."""
    with ev.open_store(tmp_path / "store", durability="fsync") as store:
        wal = store._wal
        assert wal is not None
        with wal._mutex:
            wal._leading = True  # as if another thread were in the middle of a round
        lsn = wal.add(b"frame that waits", 0)  # any body: closing flushes and retires this log
        main = threading.main_thread().ident
        assert main == threading.get_ident()
        interrupted = threading.Event()

        def ctrl_c(signum: int, frame: object) -> None:
            if not interrupted.is_set():  # the first one interrupts; later ones find nothing to do
                interrupted.set()
                raise KeyboardInterrupt

        def press_until_heard() -> None:
            # A real Ctrl-C, pressed again until heard: one that lands just before the
            # thread blocks is only seen once it wakes, which here would be never.
            for _ in range(200):
                time.sleep(0.05)
                if interrupted.is_set():
                    return
                signal.pthread_kill(main, signal.SIGINT)
            for w in list(wal._waiters):  # never heard: unblock it, and let the test fail
                w.lock.release()

        previous = signal.signal(signal.SIGINT, ctrl_c)
        presser = threading.Thread(target=press_until_heard, daemon=True)
        presser.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                wal.sync(lsn)
            presser.join()
            left = list(wal._waiters)
        finally:
            signal.signal(signal.SIGINT, previous)
            with wal._mutex:
                wal._leading = False  # that round ends
                stuck, wal._waiters = wal._waiters, []
            for w in stuck:  # only if the test is about to fail: let close() finish
                w.lock.release()
        assert left == []
        errors: list[BaseException] = []

        def writer(t: int) -> None:
            try:
                for i in range(1, 21):
                    store.append(f"w-{t}", [Tick(n=i)], expected_version=i - 1)
            except BaseException as exc:
                errors.append(exc)

        for th in _writers(store, writer):
            th.join(timeout=60)
            assert not th.is_alive(), "a writer hangs after an interrupted one"
        assert errors == []
        assert wal._synced >= lsn  # the interrupted appender's frame went out with a later round
