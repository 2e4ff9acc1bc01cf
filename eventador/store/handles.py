"""The stores this process has open for writing, by directory.

Re-running a notebook cell with ``store = ev.open_store("bank")`` opens the directory a
second time while the first handle is still open (the kernel keeps it alive): the second
opener would find the directory locked by its own process. Instead, the earlier handle is
closed, with a warning that says so, and the new one opens. A handle made in another
process (a forked parent's, say) is never touched here: its lock is that process's.
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from pathlib import Path
from typing import Protocol

__all__ = ["close_earlier_writer", "forget_writer", "remember_writer"]


class _Closable(Protocol):
    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...


_lock = threading.Lock()
_writers: dict[Path, tuple[int, weakref.ref[_Closable]]] = {}


def _key(path: Path) -> Path:
    return Path(os.path.realpath(path))


def close_earlier_writer(path: Path) -> None:
    """Close the store this process opened for writing at `path`, if one is still open, and
    warn that it was closed.

    Raises:
        StoreError: closing the earlier handle failed (it has let go of the directory anyway).
    """
    with _lock:
        entry = _writers.pop(_key(path), None)
    if entry is None:
        return
    pid, ref = entry
    earlier = ref()
    if pid != os.getpid() or earlier is None or earlier.closed:
        return
    warnings.warn(
        f"{path} was already open for writing in this process: that earlier store is closed now, "
        "and this one takes its place (a cell that opens a store was run again?)",
        UserWarning,
        stacklevel=4,
    )
    earlier.close()


def remember_writer(path: Path, store: _Closable) -> None:
    """Note that `store` has `path` open for writing in this process."""
    with _lock:
        _writers[_key(path)] = (os.getpid(), weakref.ref(store))


def forget_writer(path: Path, store: _Closable) -> None:
    """Forget `store` at `path` (it is closing); a newer handle there stays noted."""
    with _lock:
        entry = _writers.get(_key(path))
        if entry is not None and entry[1]() is store:
            del _writers[_key(path)]
