"""A full disk, for real: a small tmpfs filled by a filler file, given back a page at a time.

Each step of a flush that needs space is made the one that fails: the Parquet file, the
catalog (DuckDB's own log), the manifest, and the next log segment (made by the first
append after the flush). On tmpfs a rename or a delete never needs space, so the rename
of the Parquet file and the retirement of log segments cannot fail here; their errors
take the same path (an OSError turned into a StoreError naming the file).

After every failure: the error says the disk is full and names the file; nothing that
failed is acknowledged or counted; ``close()`` lets go of everything, even with the disk
still full; once space is freed the same process opens the store again, finds every
acknowledged event and appends more.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

import eventador as ev
from eventador.store.wal import WriteAheadLog
from tests.support.domain import Deposited, deposited

DISK_BYTES = 4 << 20
PAGE = 4096
STEPS = ("Parquet file", "catalog", "manifest", "log segment")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs, mounted for the test and unmounted after it."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount_point)],
            capture_output=True, text=True, check=False,
        )
    except FileNotFoundError:
        pytest.skip("no mount command: the disk-full tests need a small tmpfs")
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip()}): the disk-full tests need one")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)  # something still holds a file


class Filler:
    """A file that takes all the free space of the disk, and gives it back a page at a time."""

    def __init__(self, disk: Path) -> None:
        self.path = disk / "filler"

    def fill(self) -> None:
        """Grow until the disk is full (not one page left)."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:
                os.write(fd, b"x" * (64 * PAGE))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)

    def give_back_a_page(self) -> None:
        os.truncate(self.path, max(0, self.path.stat().st_size - PAGE))

    def remove(self) -> None:
        self.path.unlink()


def step_of(error: ev.DiskFullError) -> str:
    """Which step of a flush (or append) ran out of space, from the file the error names."""
    name = Path(error.path).name
    if name.endswith(".wal") and name != "catalog.duckdb.wal":
        return "log segment"
    if name in ("data", "pending") or name.endswith(".parquet"):
        return "Parquet file"
    if name.startswith("catalog.duckdb"):
        return "catalog"
    if "manifest" in name:
        return "manifest"
    raise AssertionError(f"a full disk at an unexpected file: {error}")


def append_some(store: ev.EventStore, acked: list[int], n: int) -> None:
    """Append n deposits to stream "acc", one append each; note the acknowledged amounts."""
    for _ in range(n):
        amount = len(acked) + 1
        store.append("acc", [deposited(str(amount))])
        acked.append(amount)


def amounts(store: ev.EventStore) -> list[int]:
    return [int(r.event.amount) for r in store.read_stream("acc") if isinstance(r.event, Deposited)]


def pad_catalog_log(store: ev.EventStore, commit_bytes: int) -> None:
    """Commit small rows to a table of the user's in the store's DuckDB database until the
    catalog's own log has less than `commit_bytes` left in its last page: the next
    commit of a file (that many bytes) then needs a new page."""
    log = Path(str(store.path)) / "catalog.duckdb.wal"
    con = store.connect()
    try:
        con.execute("CREATE TABLE IF NOT EXISTS pad (x VARCHAR)")
        for _ in range(1000):
            if 0 < PAGE - log.stat().st_size % PAGE < commit_bytes:
                return
            con.execute("INSERT INTO pad VALUES ('x')")
    finally:
        con.close()
    raise AssertionError("could not bring the catalog's log to the end of a page")


def fail_at(step: str, store: ev.EventStore, filler: Filler, acked: list[int]) -> ev.DiskFullError:
    """Fill the disk, then give space back a page at a time, retrying the flush, until `step`
    is the one that fails; returns its error. For "log segment" the flush succeeds and the
    disk is filled again before an append that needs a new segment."""
    filler.fill()
    for _ in range(DISK_BYTES // PAGE):
        version, position = store.stream_version("acc"), store.last_position
        try:
            if step == "log segment":
                store.flush()
                filler.fill()
                append_some(store, acked, 1)
                raise AssertionError("an append was acknowledged on a full disk")
            store.flush()
        except ev.DiskFullError as exc:
            assert "the disk is full" in str(exc) and exc.path in str(exc)
            # Nothing failed is counted, and everything acknowledged is still readable.
            assert (store.stream_version("acc"), store.last_position) == (version, position)
            assert amounts(store) == acked
            if step_of(exc) == step:
                return exc
            filler.give_back_a_page()
            continue
        raise AssertionError(f"the flush succeeded without failing at the {step}")
    raise AssertionError(f"never failed at the {step}")


@pytest.mark.parametrize("close_while_full", [False, True], ids=["space freed, then closed", "closed while full"])
@pytest.mark.parametrize("step", STEPS)
def test_a_full_disk_at_each_step_of_a_flush_loses_nothing_acknowledged(
    disk: Path, step: str, close_while_full: bool
) -> None:
    acked: list[int] = []
    filler = Filler(disk)
    open_before = set(os.listdir("/proc/self/fd"))
    store = ev.open_store(disk / "store", flush_every=1000)
    append_some(store, acked, 5)
    log = disk / "store" / "catalog.duckdb.wal"
    before = log.stat().st_size
    store.flush()  # one Parquet file already: the store is not new
    commit_bytes = log.stat().st_size - before
    append_some(store, acked, 5)
    if step == "catalog":
        pad_catalog_log(store, commit_bytes)

    error = fail_at(step, store, filler, acked)

    if step == "log segment":  # the log failed: it takes nothing more until the store is reopened
        with pytest.raises(ev.StoreError, match="reopen the store"):
            append_some(store, [], 1)
        assert (store.stream_version("acc"), store.last_position) == (len(acked), len(acked))
    if not close_while_full:
        filler.remove()
    # The flush on close fails again where it has events to write (after a failed manifest
    # the events are in a file already): it raises once, and lets go of everything all the same.
    if step == "log segment" or (close_while_full and step != "manifest"):
        with pytest.raises(ev.StoreError) as closing:
            store.close()
        assert isinstance(closing.value, ev.DiskFullError) or "reopen the store" in str(closing.value)
    else:
        store.close()
    store.close()  # a second close does nothing
    left_open = {os.readlink(f"/proc/self/fd/{fd}") for fd in set(os.listdir("/proc/self/fd")) - open_before}
    assert not {f for f in left_open if f.startswith(str(disk))}  # no file of the store is left open
    if close_while_full:
        filler.remove()

    with ev.open_store(disk / "store", flush_every=1000) as reopened:  # the same process: LOCK was let go
        assert amounts(reopened) == acked, f"after a full disk at the {step} ({error})"
        append_some(reopened, acked, 3)
    with ev.open_store(disk / "store", read_only=True) as reader:
        assert amounts(reader) == acked
    assert not list((disk / "store" / "data").glob(".tmp-*"))


def test_a_reused_descriptor_number_never_receives_an_append(disk: Path, tmp_path: Path) -> None:
    """The log's segment is closed at a flush and the next cannot be made (the disk is full);
    files the user opens then (on another disk) get the closed descriptor's number. The next
    append must not be written into such a file and acknowledged: it fails, naming the disk."""
    acked: list[int] = []
    filler = Filler(disk)
    store = ev.open_store(disk / "store", flush_every=10)
    append_some(store, acked, 9)
    assert store._wal is not None
    number = store._wal._fd  # the descriptor of the segment the appends went to
    filler.fill()
    with pytest.warns(RuntimeWarning, match="flush failed, will retry"):
        append_some(store, acked, 1)  # acknowledged (its segment has room); the flush it starts fails
    users_files: list[int] = []
    try:
        while number not in users_files and len(users_files) < 100:
            users_files.append(os.open(tmp_path / f"user-file-{len(users_files)}", os.O_RDWR | os.O_CREAT))
        assert number in users_files  # the segment was closed: its number is the user's now
        with pytest.raises(ev.StoreError, match=r"the disk is full: .*\.wal") as refused:
            store.append("acc", [deposited("11")])
        assert isinstance(refused.value, ev.DiskFullError)
        assert store.stream_version("acc") == 10
    finally:
        for fd in users_files:
            os.close(fd)
    assert [p.stat().st_size for p in tmp_path.glob("user-file-*")] == [0] * len(users_files)
    filler.remove()
    with pytest.raises(ev.StoreError, match="reopen the store"):
        store.close()
    with ev.open_store(disk / "store", flush_every=10) as reopened:
        assert amounts(reopened) == acked
        append_some(reopened, acked, 1)
    with ev.open_store(disk / "store") as reopened:
        assert amounts(reopened) == acked


def test_a_failed_append_on_a_full_disk_is_refused_in_every_durability(disk: Path) -> None:
    for durability in ("fsync", "batch", "none"):
        acked: list[int] = []
        filler = Filler(disk)
        path = disk / f"store-{durability}"
        store = ev.open_store(path, durability=durability)
        append_some(store, acked, 3)
        store.flush()  # the next append needs a new log segment
        filler.fill()
        with pytest.raises(ev.DiskFullError, match="could not create the write-ahead log segment"):
            store.append_many([("acc", [deposited("4")]), ("other", [deposited("5")])])
        assert (store.stream_version("acc"), store.stream_version("other")) == (3, 0)
        assert store.last_position == 3
        with contextlib.suppress(ev.StoreError):  # raised where the hot tier holds events it cannot flush
            store.close()
        filler.remove()
        with ev.open_store(path, durability=durability) as reopened:
            assert amounts(reopened) == acked
            assert reopened.stream_version("other") == 0


# -- a store the user may not write to -----------------------------------------------------

AS_ANOTHER_USER = """
import os, shutil, sys, tempfile
import eventador as ev

class Warm(ev.Event, event_type="test.Warm"):
    n: int

if os.geteuid() == 0:  # root writes anywhere: become nobody (once every module is loaded: python is root's)
    warm = tempfile.mkdtemp()
    with ev.open_store(warm) as store:  # the paths the test takes, so that their lazy imports are loaded
        store.append("w", Warm(n=1))
    ev.open_store(warm).close()
    ev.open_store(warm, read_only=True).close()
    shutil.rmtree(warm)
    try:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    except PermissionError as exc:
        sys.exit(f"cannot become nobody: {exc}")
try:
    ev.open_store(sys.argv[1]).close()
    print("opened for writing")
except ev.EventadorError as exc:
    print(type(exc).__name__, exc)
with ev.open_store(sys.argv[1], read_only=True) as store:
    print(store.last_position)
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users may enter (pytest's tmp_path is private to the user running it)."""
    base = Path(tempfile.mkdtemp(prefix="eventador-test-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        for p in base.rglob("*"):
            if p.is_dir():
                p.chmod(0o755)  # lets a user who is not root delete it
        shutil.rmtree(base)


@pytest.mark.parametrize("blocked", ["LOCK", "catalog.duckdb"])
def test_a_store_the_user_may_not_write_to_names_the_file_and_opens_read_only(shared_dir: Path, blocked: str) -> None:
    """Another user (nobody, when the tests run as root) opens a store it may read, not write:
    with nothing writable it fails at LOCK; with all but the store's own directory writable,
    at the catalog, whose log DuckDB makes there at the first change (opening records the
    log segment it goes on in)."""
    path = shared_dir / "store"
    with ev.open_store(path) as store:
        append_some(store, [], 2)
        store.flush()
        append_some(store, [], 1)
    writable = blocked != "LOCK"
    for p in path.rglob("*"):
        p.chmod((0o777 if writable else 0o555) if p.is_dir() else (0o666 if writable else 0o444))
    path.chmod(0o555)
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    done = subprocess.run(
        [sys.executable, "-c", AS_ANOTHER_USER, str(path)],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2], check=False,
    )
    if "cannot become nobody" in done.stderr:
        pytest.skip(f"root here may not drop privileges to test permissions ({done.stderr.strip()})")
    assert done.returncode == 0, done.stderr
    error, events = done.stdout.splitlines()
    assert error.startswith("StorePermissionError cannot ") and f" {path / blocked}: " in error
    assert "Permission denied" in error
    assert "open it with read_only=True" in error
    assert events == "3"
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before


def test_a_store_on_a_read_only_file_system_names_the_file_and_opens_read_only(disk: Path) -> None:
    path = disk / "store"
    with ev.open_store(path) as store:
        append_some(store, [], 2)
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True, check=False)
    if remounted.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only here ({remounted.stderr.strip()})")
    try:
        with pytest.raises(ev.StorePermissionError, match=f"{path / 'LOCK'}: Read-only file system"):
            ev.open_store(path)
        with ev.open_store(path, read_only=True) as reader:
            assert amounts(reader) == [1, 2]
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)


# -- disk use in proportion to the data ----------------------------------------------------


def test_small_flushes_preallocate_a_log_in_proportion_to_what_they_log(tmp_path: Path) -> None:
    """Each log segment is written full of zeros when it is made. Sized for one flush period,
    12 flushes of 10 events make segments of 16 KiB each (they made 1, 2, 4 ... 64 MiB: 447 MiB)."""
    made: list[int] = []
    with ev.open_store(tmp_path / "store", flush_every=10) as store:
        for _ in range(12):
            append_some(store, [], 9)
            made += [p.stat().st_size for p in (tmp_path / "store" / "wal").glob("*.wal")]
            append_some(store, [], 1)  # the tenth: its flush retires the segment
        assert store.info()["files"] >= 1
    assert len(made) == 12
    assert sum(made) <= 12 * 16 * 1024


def test_a_segment_is_sized_for_the_rest_of_the_flush_period_and_replays_across_segments(tmp_path: Path) -> None:
    """Events bigger than the first guess fill the first segment before the flush; the next
    is sized for the events still to come (not doubled), and every event is replayed."""
    note = "n" * 1000
    path = tmp_path / "store"
    with ev.open_store(path, flush_every=500) as store:
        for i in range(400):
            store.append("acc", [Deposited(account_id="acc", amount=Decimal(i), note=note)])
        sizes = [p.stat().st_size for _, p in WriteAheadLog.segments(path / "wal")]
        logged = store.info()["log_bytes"]
    assert len(sizes) == 2 and sizes[0] < sizes[1]
    per_event = logged / 400
    assert sizes[1] <= (500 - sizes[0] // per_event) * per_event * 1.1 + 4096  # the rest of the period, not 2x
    with ev.open_store(path) as reopened:
        assert [int(r.event.amount) for r in reopened.read_stream("acc")] == list(range(400))


def test_the_bytes_per_event_seen_size_the_next_flush_periods_segment(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "store", flush_every=2_000) as store:
        append_some(store, [], 100)
        store.flush()
        append_some(store, [], 1)  # starts the next segment
        logged_per_event = store.info()["log_bytes"] / 101
        (segment,) = (tmp_path / "store" / "wal").glob("*.wal")
        # flush_every events at the bytes per event seen, plus a sixteenth (and whole pages).
        assert 2_000 * logged_per_event <= segment.stat().st_size <= 2_000 * logged_per_event * 1.1 + 4096
