"""One writer per store directory: an exclusive lock on the LOCK file, which names its holder."""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from eventador.errors import StoreLockedError, store_os_error

__all__ = ["DirectoryLock"]


class DirectoryLock:
    """Held from `acquire` until `release`; the OS drops it if the process dies."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "LOCK"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write this process's name into LOCK.

        Raises:
            StoreLockedError: another writer has the directory (names the holder).
            StorePermissionError: LOCK cannot be written (permissions, a read-only file system).
            DiskFullError: no room for the holder's name.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise store_os_error(exc, self.path, "open the lock file") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreLockedError(str(self.path.parent), holder) from None
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)  # drops the lock too
            raise store_os_error(exc, self.path, "write the lock file") from exc
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock; the descriptor is closed even if emptying LOCK fails."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)  # explicitly: a forked child may hold a copy of fd
            os.close(fd)
