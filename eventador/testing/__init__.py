"""Helpers for testing code built on eventador, and the event store's contract suite.

Sections (only the contract needs pytest; it is imported when first used):

- **Clocks**: ``ScriptedClock``, for wall clocks that jump; ``ev.ManualClock`` covers
  clocks that only move forward.
- **Aggregates**: ``AggregateScenario(BankAccount).given(...).when(...).then(...)``
  (also ``.then_rejected(...)``, ``.then_state(...)``), from ``eventador.scenario``.
- **The store contract**: ``StoreContract``, the behaviour every event store must
  have, run against any store a ``StoreFactory`` opens. Subclass it in a test module
  to check a store you built or changed::

      import pytest
      from eventador.testing import DirectoryStoreFactory, StoreContract

      class TestMyStore(StoreContract):
          @pytest.fixture
          def store_factory(self, tmp_path):
              with DirectoryStoreFactory(tmp_path / "store", flush_every=3) as factory:
                  yield factory

The contract writes its own event types (``eventador.testing.*``), so it needs
nothing from the code under test.
"""

from __future__ import annotations

import abc
import os
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from eventador.clock import Clock
from eventador.errors import InvalidInputError
from eventador.messages import TypeRegistry
from eventador.store import EventStore, open_store
from eventador.store.store import Durability
from eventador.testing.scenario import AggregateScenario

if TYPE_CHECKING:
    from eventador.testing.contract import StoreContract

__all__ = [
    "AggregateScenario",
    "DirectoryStoreFactory",
    "MemoryStoreFactory",
    "ScriptedClock",
    "StoreContract",
    "StoreFactory",
]


# =====================================================================================
# Clocks
# =====================================================================================


class ScriptedClock:
    """A clock that reads out the given wall times in order, then keeps the last one.

    For testing what happens when the wall clock jumps, backwards included (an NTP
    step): ``ScriptedClock(t10, t0)`` says t10, then t0, then t0 forever.
    ``monotonic()`` counts the readings, so it never goes back.

    Raises:
        InvalidInputError: no times, or a naive one.
    """

    def __init__(self, *times: datetime) -> None:
        if not times:
            raise InvalidInputError("ScriptedClock needs at least one time")
        for t in times:
            if t.utcoffset() is None:
                raise InvalidInputError(f"ScriptedClock needs aware datetimes, got {t!r}")
        self._times = [t.astimezone(UTC) for t in times]
        self._readings = 0

    def now(self) -> datetime:
        current = self._times[min(self._readings, len(self._times) - 1)]
        self._readings += 1
        return current

    def monotonic(self) -> float:
        return float(self._readings)

    def __repr__(self) -> str:
        return f"ScriptedClock({len(self._times)} times, {self._readings} read)"


# =====================================================================================
# The store contract
# =====================================================================================


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


def __getattr__(name: str) -> Any:
    # The contract is a pytest test class: import it (and pytest) only when asked for.
    if name == "StoreContract":
        try:
            from eventador.testing.contract import StoreContract
        except ModuleNotFoundError as exc:
            if exc.name != "pytest":
                raise
            raise ImportError("eventador.testing.StoreContract runs on pytest: pip install pytest") from exc
        return StoreContract
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
