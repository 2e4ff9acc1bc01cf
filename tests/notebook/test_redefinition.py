"""Re-running the notebook cell that defines the classes: every read path decodes the
events as the newest classes, snapshots of a changed State fall back to replay, and a
redefinition that old events will not fit warns, naming the change.

A cell run again is the same class statements executed again in the same module
namespace: new class objects with the same module and qualified name.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import eventador as ev
from eventador import QueueManager, Repository, SnapshotWarning

CELL = '''
import eventador as ev

class Credited(ev.Event, event_type=__name__ + ".Credited"):
    amount: float

class Credit(ev.Command):
    amount: float

class Balance(ev.State):
    balance: float = 0.0

class Account(ev.AggregateRoot[Balance]):
    snapshot_config = SNAPSHOTS

    @property
    def initial_state(self):
        return Balance()

    def handle_command(self, state, command):
        return [Credited(amount=command.amount)]

    def apply_event(self, state, event):
        if isinstance(event, Credited):
            return state.copy_with(balance=state.balance + event.amount)
        return state
'''

_names = itertools.count()


class Notebook:
    """A module that cells run in, as a kernel's ``__main__`` (each test gets its own name,
    so that the process-wide type registry does not mix tests)."""

    def __init__(self, snapshots: ev.SnapshotConfig | None = None) -> None:
        self.module = types.ModuleType(f"redefinition_notebook_{next(_names)}")
        sys.modules[self.module.__name__] = self.module  # dataclasses look classes' modules up here
        self.module.__dict__["SNAPSHOTS"] = snapshots

    def run(self, cell: str = CELL) -> None:
        exec(compile(cell, f"<cell of {self.module.__name__}>", "exec"), self.module.__dict__)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)

    def close(self) -> None:
        del sys.modules[self.module.__name__]


@pytest.fixture
def nb() -> Iterator[Notebook]:
    notebook = Notebook()
    notebook.run()
    yield notebook
    notebook.close()


@pytest.fixture(params=["memory", "disk"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ev.EventStore]:
    return lambda: ev.open_store(None if request.param == "memory" else tmp_path / "bank")


@pytest.mark.parametrize("flushed", [False, True], ids=["hot", "flushed"])
def test_a_rerun_class_cell_keeps_the_balance(
    nb: Notebook, open_store: Callable[[], ev.EventStore], flushed: bool
) -> None:
    store = open_store()
    repo = Repository(store, nb.Account)
    repo.execute("acc", nb.Credit(amount=16))
    assert repo.execute("acc", nb.Credit(amount=14)).balance == 30.0
    if flushed:
        store.flush()
    old_class = nb.Credited
    nb.run()
    assert nb.Credited is not old_class
    repo = Repository(store, nb.Account)
    assert repo.get("acc").balance == 30.0
    assert repo.execute("acc", nb.Credit(amount=1)).balance == 31.0
    assert store.sql(f"SELECT sum(amount) FROM \"{nb.Credited.event_type}\"").fetchall() == [(31.0,)]
    store.close()


def test_every_read_path_gives_the_newest_class(nb: Notebook, open_store: Callable[[], ev.EventStore]) -> None:
    store = open_store()
    Repository(store, nb.Account).execute("acc", nb.Credit(amount=16))
    store.flush()
    Repository(store, nb.Account).execute("acc", nb.Credit(amount=14))  # one flushed, one hot
    nb.run()
    new = nb.Credited
    assert [type(r.event) for r in store.read_stream("acc")] == [new, new]
    assert [type(r.event) for r in store.read_all()] == [new, new]
    assert [type(e) for e in store.replay("acc").events] == [new, new]
    assert [type(r.event) for r in store.as_of(2).read_stream("acc")] == [new, new]
    repo = Repository(store, nb.Account)
    assert repo.get("acc", as_of=2).balance == 30.0
    assert repo.history("acc")["balance"].tolist() == [16.0, 30.0]
    assert repo.states()["balance"].to_dict() == {"acc": 30.0}
    store.close()


def test_an_event_class_that_takes_over_a_type_name_from_a_class_of_another_scope_is_read() -> None:
    # The registry replaces a class of the same module and name; the qualified names differ here.
    def first() -> type[ev.Event]:
        class Pinged(ev.Event, event_type="redefinition.Pinged"):
            n: int

        return Pinged

    def second() -> type[ev.Event]:
        class Pinged(ev.Event, event_type="redefinition.Pinged"):
            n: int

        return Pinged

    store = ev.open_store()
    store.append("p", first()(n=1))  # type: ignore[call-arg]
    newest = second()
    assert [type(r.event) for r in store.read_stream("p")] == [newest]


def test_a_repository_made_before_the_rerun_follows_it(nb: Notebook) -> None:
    store = ev.open_store()
    repo = Repository(store, nb.Account)
    repo.execute("acc", nb.Credit(amount=16))
    nb.run()
    # Its cached state was folded from the old classes: it is folded again from the new ones.
    state = repo.execute("acc", nb.Credit(amount=14))
    assert (type(state), state.balance) == (nb.Balance, 30.0)


def test_actors_recover_the_events_as_the_newest_class(nb: Notebook) -> None:
    store = ev.open_store()
    Repository(store, nb.Account).execute("acc", nb.Credit(amount=16))
    nb.run()

    async def credit_one() -> float:
        async with ev.ActorSystem() as system:
            account = await system.spawn("acc", lambda: nb.Account(persistence_id="acc", event_store=store))
            state = await account.ask(nb.Credit(amount=1))
            return float(state.balance)

    assert asyncio.run(credit_one()) == 17.0


def test_a_queued_command_decodes_as_the_newest_class(nb: Notebook) -> None:
    store = ev.open_store()
    queue = QueueManager(store)
    queue.enqueue("commands", nb.Credit(amount=5))
    nb.run()
    lease = queue.dequeue("commands")
    assert lease is not None and type(lease.message) is nb.Credit and lease.message.amount == 5


# -- snapshots ---------------------------------------------------------------------------------


def credited_forty_times(nb: Notebook, store: ev.EventStore) -> None:
    repo = Repository(store, nb.Account)
    for _ in range(40):
        repo.execute("acc", nb.Credit(amount=1))
    assert store.snapshots.latest("acc") is not None


def test_a_snapshot_of_an_unchanged_state_is_used_as_the_newest_class() -> None:
    nb = Notebook(ev.SnapshotConfig(event_count_threshold=10))
    nb.run()
    store = ev.open_store()
    credited_forty_times(nb, store)
    nb.run()
    state = Repository(store, nb.Account).get("acc")
    assert (type(state), state.balance) == (nb.Balance, 40.0)
    nb.close()


def test_a_snapshot_of_a_changed_state_falls_back_to_replay() -> None:
    nb = Notebook(ev.SnapshotConfig(event_count_threshold=10))
    nb.run()
    store = ev.open_store()
    credited_forty_times(nb, store)
    nb.run(
        CELL.replace("balance: float = 0.0", "balance: float = 0.0\n    credits: int = 0").replace(
            "balance=state.balance + event.amount", "balance=state.balance + event.amount, credits=state.credits + 1"
        )
    )
    with pytest.warns(SnapshotWarning, match="replaying its events instead"):
        state = Repository(store, nb.Account).get("acc")
    assert (state.balance, state.credits) == (40.0, 40)  # every event folded: none skipped by the snapshot
    nb.close()


# -- warnings on a redefinition old events will not fit -----------------------------------------

DEPOSITED = '''
import eventador as ev

class Deposited(ev.Event, event_type=__name__ + ".Deposited"):
    account_id: str
    amount: float
'''


@pytest.mark.parametrize(
    ("fields", "change"),
    [
        ("account: str\n    amount: float", "field 'account_id' removed, required field 'account' added"),
        ("amount: float", "field 'account_id' removed"),
        ("account_id: str\n    amount: float\n    currency: str", "required field 'currency' added"),
        ("account_id: str\n    amount: int", "field 'amount' changed type from float to int"),
    ],
    ids=["renamed", "removed", "added", "retyped"],
)
def test_an_incompatible_redefinition_warns_naming_the_change(fields: str, change: str) -> None:
    nb = Notebook()
    nb.run(DEPOSITED)
    expected = f"{nb.module.__name__}.Deposited redefined: {change}; events stored before will not read"
    with pytest.warns(UserWarning, match=expected.replace("(", r"\(")) as caught:
        nb.run(DEPOSITED.replace("account_id: str\n    amount: float", fields))
    assert caught[0].filename == f"<cell of {nb.module.__name__}>"  # points at the class statement
    nb.close()


@pytest.mark.parametrize(
    "cell",
    [
        DEPOSITED,
        DEPOSITED + '    currency: str = "EUR"\n',
        DEPOSITED.replace("amount: float", '"""Money in."""\n    amount: float\n\n    def twice(self): return 2'),
        DEPOSITED.replace("amount: float", "amount: int\n    schema_version = 2"),  # a new version: upcasters' job
    ],
    ids=["same", "field-with-default-added", "docstring-and-method", "new-schema-version"],
)
def test_a_compatible_redefinition_is_silent(cell: str) -> None:
    nb = Notebook()
    nb.run(DEPOSITED)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nb.run(cell)
    nb.close()


# -- in a real kernel ---------------------------------------------------------------------------------


def test_in_a_kernel_running_the_class_cell_again_keeps_the_balance(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    root = Path(__file__).resolve().parents[2]
    setup = f"import sys\nsys.path.insert(0, {str(root)!r})\nimport eventador as ev\nSNAPSHOTS = None"
    classes = CELL.replace("__name__", '"kernel"')
    deposits = (
        'store = ev.open_store("bank")\nrepo = ev.Repository(store, Account)\n'
        'repo.execute("a", Credit(amount=16))\nrepo.execute("a", Credit(amount=14)).balance'
    )
    after = 'repo = ev.Repository(store, Account)\n(repo.get("a").balance, repo.execute("a", Credit(amount=1)).balance)'
    retyped = classes.replace("amount: float", "amount: int", 1)
    cells = [setup, classes, deposits, classes, after, retyped]  # the class cell run again, as a user would
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(notebook, timeout=60, resources={"metadata": {"path": tmp_path}}).execute()
    outputs = [cell.outputs for cell in notebook.cells]
    assert [o[0]["data"]["text/plain"] for o in outputs[2:5:2]] == ["30.0", "(30.0, 31.0)"], outputs
    assert outputs[3] == [] and len(outputs[5]) == 1, outputs  # the same cell again says nothing
    assert outputs[5][0]["name"] == "stderr"
    assert "kernel.Credited redefined: field 'amount' changed type from float to int" in outputs[5][0]["text"]
