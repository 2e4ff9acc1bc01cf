"""Readers pin the data files they read, so the writer keeps them however long a reader lags.

A read-only process holds a shared ``flock`` on every data file of its current
view of the store; DuckDB reopens a file by name for every query, so a file a
reader still names must stay. The writer removes a file it has merged away only
when it can take an exclusive lock on it (``remove_unless_pinned``), and the OS
drops a reader's pins when the reader exits, however it exits.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["Pins", "remove_unless_pinned"]


class Pins:
    """The files one reader has pinned."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}

    def pin(self, path: Path) -> None:
        """Pin `path` (no-op if pinned already).

        Raises:
            FileNotFoundError: the file is gone, or was removed while it was being pinned.
        """
        if path in self._fds:
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits out a writer that is removing it this instant
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(2, "removed while being pinned", str(path))
        except BaseException:
            os.close(fd)
            raise
        self._fds[path] = fd

    def keep_only(self, paths: Iterable[Path]) -> None:
        """Unpin every file not in `paths`."""
        kept = set(paths)
        for path in [p for p in self._fds if p not in kept]:
            os.close(self._fds.pop(path))

    def release(self) -> None:
        self.keep_only(())


def remove_unless_pinned(path: Path) -> bool:
    """Delete `path` unless a reader has it pinned; True when it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        path.unlink(missing_ok=True)  # under the lock: no reader can pin it meanwhile and miss that
        return True
    finally:
        os.close(fd)
