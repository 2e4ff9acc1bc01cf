"""Group commit from writer threads: appends share fsyncs, each is visible once it returns,
and a failed round fails every append waiting on it (none hangs, none is acknowledged)."""

from __future__ import annotations

import dis
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import eventador as ev
from eventador.store.wal import WriteAheadLog, _Waiter


class Tick(ev.Event, event_type="test.wal.Tick"):
    n: int


WRITERS = 8


def _writers(store: ev.EventStore, body: object) -> list[threading.Thread]:
    threads = [threading.Thread(target=body, args=(t,), daemon=True) for t in range(WRITERS)]
    for th in threads:
        th.start()
    return threads


def _writers_go_on(store: ev.EventStore, n: int) -> None:
    """WRITERS threads append n events each to streams of their own: none fails or hangs."""
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(1, n + 1):
                store.append(f"w-{t}", [Tick(n=i)], expected_version=i - 1)
        except BaseException as exc:
            errors.append(exc)

    for th in _writers(store, writer):
        th.join(timeout=60)
        assert not th.is_alive(), "a writer hangs"
    assert errors == []


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
        assert store.fsyncs == store.info()["fsyncs"] == wal.syncs  # what users see of it
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
    # A failed append is not counted: each stream stands at its last acknowledged append.
    assert [store.stream_version(f"w-{t}") for t in range(WRITERS)] == acked
    assert store.last_position == sum(acked)
    with pytest.raises(ev.StoreError):
        store.append("w-0", [Tick(n=0)])
    assert store.stream_version("w-0") == acked[0]
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
            wal._leading = _Waiter(0)  # as if another thread were in the middle of a round
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
                wal._leading = None  # that round ends
                stuck, wal._waiters = wal._waiters, []
            for w in stuck:  # only if the test is about to fail: let close() finish
                w.lock.release()
        assert left == []
        _writers_go_on(store, 20)
        assert wal._synced >= lsn  # the interrupted appender's frame went out with a later round


def test_ctrl_c_while_the_leader_fsyncs_finishes_the_round_and_the_log_stays_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader of a round spends most of it in fdatasync, so that is where a Ctrl-C
    usually lands. The fsync is finished, the round's appenders are released, and the
    interrupt reaches the leader's caller after: the log does not fail, and the
    interrupted append, being on disk, is kept."""
    real = os.fdatasync
    calls: list[int] = []

    def interrupted_the_first_time(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise KeyboardInterrupt  # what a Ctrl-C during the system call raises
        real(fd)

    with ev.open_store(tmp_path / "store", durability="fsync") as store:
        store.append("s", [Tick(n=1)])
        monkeypatch.setattr(os, "fdatasync", interrupted_the_first_time)
        with pytest.raises(KeyboardInterrupt):
            store.append("s", [Tick(n=2)], expected_version=1)
        monkeypatch.undo()
        assert len(calls) == 2  # the round's fsync was done again, not abandoned
        assert [r.event.n for r in store.read_stream("s")] == [1, 2]
        _writers_go_on(store, 10)
        store.append("s", [Tick(n=3)], expected_version=2)
    with ev.open_store(tmp_path / "store", read_only=True) as reopened:
        assert [r.event.n for r in reopened.read_stream("s")] == [1, 2, 3]
        assert reopened.stream_version("w-0") == 10


def test_ctrl_c_while_the_log_is_written_refuses_appends_until_reopened(tmp_path: Path) -> None:
    """The one interrupt that still fails the log: in the write itself it is unknown which
    frames reached the file. Appends are refused (not hung) until the store is reopened,
    and every acknowledged append is there after."""
    write_code = WriteAheadLog._write.__code__

    def tracer(frame: Any, what: str, arg: Any) -> Any:
        if what == "call" and frame.f_code is write_code:
            raise KeyboardInterrupt
        return None

    store = ev.open_store(tmp_path / "store", durability="fsync")
    store.append("s", [Tick(n=1)])
    sys.settrace(tracer)
    try:
        with pytest.raises(KeyboardInterrupt):
            store.append("s", [Tick(n=2)], expected_version=1)
    finally:
        sys.settrace(None)
    with pytest.raises(ev.StoreError, match="reopen the store"):
        store.append("s", [Tick(n=3)])
    with pytest.raises(ev.StoreError):
        store.close()  # its flush needs the failed log; the files and the lock are released
    with ev.open_store(tmp_path / "store") as reopened:
        assert [r.event.n for r in reopened.read_stream("s")][:1] == [1]
        reopened.append("s", [Tick(n=4)])
        assert reopened.read_stream("s")[-1].event.n == 4


def _sync_lines() -> list[int]:
    code = WriteAheadLog.sync.__code__
    return sorted({line for _, line in dis.findlinestarts(code) if line is not None and line > code.co_firstlineno})


@pytest.mark.parametrize("path", ["leads", "waits, then is handed the lead", "waits, then is covered"])
def test_ctrl_c_at_any_line_of_sync_leaves_the_log_usable(tmp_path: Path, path: str) -> None:
    """A Ctrl-C can land between any two lines: in each, ``sync`` is interrupted there
    (and once as it calls ``_lead``), and afterwards nobody holds the lead or waits,
    and appenders in threads go on. A real signal cannot be aimed at a line; a trace
    function raising KeyboardInterrupt raises it exactly where the signal would."""
    points = [("line", n) for n in _sync_lines()] + [("call", 0)]
    landed = [p for k, p in enumerate(points) if _interrupt_sync(tmp_path / f"log-{k}", path, *p)]
    assert len(landed) >= 4  # the interrupts did land, at several points


def _interrupt_sync(directory: Path, path: str, event: str, line: int) -> bool:
    """Run one appender's ``sync`` on `path`, interrupted at `line` of it (or as it calls
    ``_lead``); check the log is left usable. Returns whether the interrupt landed."""
    directory.mkdir()
    wal = WriteAheadLog(directory, durability="fsync", first_segment=1)
    sync_code, lead_code = WriteAheadLog.sync.__code__, WriteAheadLog._lead.__code__
    fired = threading.Event()

    def tracer(frame: Any, what: str, arg: Any) -> Any:
        if fired.is_set():
            return None
        aimed = (
            (event == "call" and what == "call" and frame.f_code is lead_code)
            or (event == "line" and what == "line" and frame.f_code is sync_code and frame.f_lineno == line)
        )
        if aimed:
            fired.set()
            raise KeyboardInterrupt
        return tracer if frame.f_code is sync_code else None

    done = threading.Event()

    def other_round() -> None:
        # Another appender's round: it ends once ours waits (or never will: interrupted before).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not done.is_set():
            with wal._mutex:
                if wal._waiters:
                    break
            time.sleep(0.001)
        if path == "waits, then is covered":
            wal._lead()  # writes and fsyncs our frame, releases us, hands on
            return
        with wal._mutex:
            successor = wal._next_leader()
        if successor is not None:
            successor.lock.release()

    other = None
    if path != "leads":
        if path == "waits, then is covered":
            wal.add(b"queued before")
        wal._leading = _Waiter(0)  # the other appender holds the lead
        other = threading.Thread(target=other_round)
    lsn = wal.add(b"ours")
    if other is not None:
        other.start()
    sys.settrace(tracer)
    try:
        wal.sync(lsn)
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
        done.set()
        if other is not None:
            other.join(10)
            assert not other.is_alive()
    with wal._mutex:
        assert wal._leading is None and wal._waiters == [], (event, line)

    def appender() -> None:
        for i in range(10):
            wal.sync(wal.add(b"later %d" % i))

    threads = [threading.Thread(target=appender) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(20)
        assert not th.is_alive(), f"appends hang after a Ctrl-C at {event} {line}"
    wal.sync_all()
    assert wal._synced == wal._queued
    wal.close()
    return fired.is_set()
