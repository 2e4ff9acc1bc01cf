"""Helpers for testing code built on eventador, and the event store's contract suite.

One module per job (only the contract needs pytest; it is imported when first used):

- ``clocks``: ``ScriptedClock``, for wall clocks that jump; ``ev.ManualClock`` covers
  clocks that only move forward.
- ``scenario``: ``AggregateScenario(BankAccount).given(...).when(...).then(...)``
  (also ``.then_rejected(...)``, ``.then_state(...)``).
- ``factories``: ``MemoryStoreFactory`` and ``DirectoryStoreFactory`` open the stores
  a contract test needs.
- ``history``: ``assert_history_reads(store_copy, modules=[...])``, for a CI job run
  against a copy of a real store: every stored event still decodes and upcasts under
  today's classes (``check_history`` returns the report, ``history_report``;
  ``eventador schema`` prints it).
- ``contract``: ``StoreContract``, the behaviour every event store must have, run
  against any store a ``StoreFactory`` opens. Subclass it in a test module
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

from typing import TYPE_CHECKING, Any

from eventador.testing.clocks import ScriptedClock
from eventador.testing.factories import DirectoryStoreFactory, MemoryStoreFactory, StoreFactory
from eventador.testing.history import assert_history_reads, check_history
from eventador.testing.history_report import HistoryReport
from eventador.testing.scenario import AggregateScenario

if TYPE_CHECKING:
    from eventador.testing.contract import StoreContract

__all__ = [
    "AggregateScenario",
    "DirectoryStoreFactory",
    "HistoryReport",
    "MemoryStoreFactory",
    "ScriptedClock",
    "StoreContract",
    "StoreFactory",
    "assert_history_reads",
    "check_history",
]


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
