"""The names the package's docstring examples use (pytest runs them with --doctest-modules).

Each example gets ``ev`` (the package); the bank account of docs/aggregates.md
(``Deposit``, ``Deposited``, ``Account``, ``BankAccount``); a fresh in-memory ``store``
whose stream ``acc-0`` holds three deposits (100, 2500 and 40); and ``repo``, a
``Repository`` of bank accounts over that store. So an example can read, query or append
without setting up a store of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest.doctest import DoctestItem

import eventador as ev


class Deposit(ev.Command):
    amount: float


# Registered with the examples' stores only (`registry=`), not the process-wide registry:
# tests and the README define their own "Deposited".
class Deposited(ev.Event, _register=False):
    event_type = "Deposited"
    amount: float


TYPES = ev.TypeRegistry()
TYPES.register(Deposited, "Deposited")


class Account(ev.State):
    balance: float = 0.0


class BankAccount(ev.AggregateRoot[Account]):
    @property
    def initial_state(self) -> Account:
        return Account()

    def handle_command(self, state: Account, command: ev.Command) -> list[ev.Event]:
        if isinstance(command, Deposit):
            if command.amount <= 0:
                raise ev.CommandRejected("deposits must be positive")
            return [Deposited(amount=command.amount)]
        return []

    def apply_event(self, state: Account, event: ev.Event) -> Account:
        if isinstance(event, Deposited):
            return state.copy_with(balance=state.balance + event.amount)
        return state


PACKAGE = Path(__file__).parent / "eventador"


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Only the package is searched for examples: --doctest-modules would otherwise import
    every helper and worker script under tests/ into the test process."""
    if collection_path.suffix != ".py" or PACKAGE in collection_path.parents:
        return None
    name = collection_path.name
    return None if name.startswith("test_") or name in ("conftest.py", "__init__.py") else True


@pytest.fixture(autouse=True)
def _docstring_names(request: pytest.FixtureRequest) -> Iterator[None]:
    if not isinstance(request.node, DoctestItem):
        yield
        return
    namespace: dict[str, Any] = request.getfixturevalue("doctest_namespace")
    with ev.open_store(registry=TYPES) as store:
        repo = ev.Repository(store, BankAccount)
        for amount in (100.0, 2500.0, 40.0):
            repo.execute("acc-0", Deposit(amount=amount))
        model = {"Deposit": Deposit, "Deposited": Deposited, "Account": Account, "BankAccount": BankAccount}
        namespace.update(model, ev=ev, store=store, repo=repo)
        yield
