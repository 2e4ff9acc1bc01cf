"""Store factories: how the store contract opens the stores it tests (in memory, in a directory)."""

from __future__ import annotations

import abc
import os
from pathlib import Path
from types import TracebackType

from eventador.clock import Clock
from eventador.messages import TypeRegistry
from eventador.store import EventStore, open_store
from eventador.store.store import Durability

__all__ = ["DirectoryStoreFactory", "MemoryStoreFactory", "StoreFactory"]


class StoreFactory(abc.ABC):
    """Opens the stores one contract test needs, and closes them all afterwards.

    Every ``open`` of one factory opens the same store location: a persistent
    factory (``persistent = True``) lets a test close a store and open it again,
    or open a read-only store beside the writer. Use it as a context manager, or
    call ``close_all`` when the test is done.
    """

    persistent: bool = False
    """Whether a store opened again sees what earlier ones wrote."""

    def __init__(self) -> None:
        self._opened: list[EventStore] = []

    @abc.abstractmethod
    def _open(self, *, clock: Clock | None, registry: TypeRegistry | None, read_only: bool) -> EventStore:
        """Open the store (subclasses say how)."""

    def open(
        self, *, clock: Clock | None = None, registry: TypeRegistry | None = None, read_only: bool = False
    ) -> EventStore:
        """A newly opened store at this factory's location, closed by ``close_all``."""
        store = self._open(clock=clock, registry=registry, read_only=read_only)
        self._opened.append(store)
        return store

    def close_all(self) -> None:
        """Close every store this factory opened, newest first; re-raises the first failure."""
        failure: BaseException | None = None
        while self._opened:
            try:
                self._opened.pop().close()
            except BaseException as exc:  # close the others before reporting it
                failure = failure or exc
        if failure is not None:
            raise failure

    def __enter__(self) -> StoreFactory:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close_all()


class MemoryStoreFactory(StoreFactory):
    """In-memory stores (``open_store(None)``): every ``open`` starts empty."""

    persistent = False

    def __init__(self, *, flush_every: int = 100_000) -> None:
        super().__init__()
        self.flush_every = flush_every

    def _open(self, *, clock: Clock | None, registry: TypeRegistry | None, read_only: bool) -> EventStore:
        return open_store(None, clock=clock, registry=registry, read_only=read_only, flush_every=self.flush_every)

    def __repr__(self) -> str:
        return f"MemoryStoreFactory(flush_every={self.flush_every})"


class DirectoryStoreFactory(StoreFactory):
    """Stores in one directory on disk; a small `flush_every` makes reads span files and the hot tier."""

    persistent = True

    def __init__(
        self, path: str | os.PathLike[str], *, durability: Durability = "fsync", flush_every: int = 100_000
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.durability: Durability = durability
        self.flush_every = flush_every

    def _open(self, *, clock: Clock | None, registry: TypeRegistry | None, read_only: bool) -> EventStore:
        return open_store(
            self.path,
            durability=self.durability,
            read_only=read_only,
            clock=clock,
            registry=registry,
            flush_every=self.flush_every,
        )

    def __repr__(self) -> str:
        return f"DirectoryStoreFactory({str(self.path)!r}, flush_every={self.flush_every})"
