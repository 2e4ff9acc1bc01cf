"""Papercuts of the public API (issue 16, part 7): what a notebook user meets first."""

from __future__ import annotations

import ast
import importlib
import json
import pydoc
import re
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

import eventador as ev
from tests.support.domain import Deposited

REPO = Path(__file__).resolve().parent.parent

# Run with pytest unimportable, as in an environment where it is not installed.
_NO_PYTEST = """
import sys

class NoPytest:
    def find_spec(self, name, path=None, target=None):
        if name == "pytest" or name.startswith(("pytest.", "_pytest")):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoPytest())
"""


def test_eventador_testing_imports_without_pytest() -> None:
    code = _NO_PYTEST + """
from datetime import UTC, datetime

import eventador.testing as t

clock = t.ScriptedClock(datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
assert clock.now().day == 2 and clock.now().day == 1
with t.MemoryStoreFactory() as factory:
    assert factory.open().last_position == 0
assert t.AggregateScenario is not None
assert "pytest" not in sys.modules
try:
    t.StoreContract
except ImportError as exc:
    print("contract:", exc)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "contract: eventador.testing.StoreContract runs on pytest: pip install pytest" in done.stdout


def test_the_store_contract_is_still_imported_from_eventador_testing() -> None:
    from eventador.testing import StoreContract

    assert StoreContract.__module__ == "eventador.testing.contract"


def _imports(code: str) -> list[str]:
    """The modules a piece of code imports (IPython magics left out)."""
    tree = ast.parse("\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
    return found


def _notebook_cells() -> list[tuple[str, str]]:
    cells = []
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                cells.append((path.name, "".join(cell["source"])))
    return cells


def test_notebooks_and_the_readme_import_public_names_from_ev_only() -> None:
    readme = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.DOTALL)
    sources = _notebook_cells() + [("README.md", block) for block in readme]
    assert len(sources) > 50
    # eventador.ext.* are imported by their own path (an extra's bridge, named by the other library's settings).
    private = [
        (where, m) for where, code in sources for m in _imports(code)
        if m.startswith("eventador.") and not m.startswith("eventador.ext.")
    ]
    assert private == []


def test_a_stream_reads_as_a_dataframe_in_one_call() -> None:
    store = ev.open_store(clock=ev.ManualClock(datetime(2026, 1, 1, tzinfo=UTC)))
    store.append("acc-1", [Deposited(account_id="acc-1", amount=Decimal("1.5"))])
    store.append("acc-1", [Deposited(account_id="acc-1", amount=Decimal(2), note="x")])
    store.append("acc-2", [Deposited(account_id="acc-2", amount=Decimal(9))])
    df = store.read_stream_df("acc-1")
    envelope = ["position", "stream_id", "version", "event_type", "recorded_at", "occurred_at"]
    assert list(df.columns) == [*envelope, "account_id", "amount", "rate", "note"]
    assert df["version"].tolist() == [1, 2] and df["position"].tolist() == [1, 2]
    assert df["amount"].tolist() == [Decimal("1.5"), Decimal(2)] and df["note"].isna().tolist() == [True, False]
    assert df["recorded_at"].iloc[0] == pd.Timestamp("2026-01-01", tz="UTC")
    assert store.read_stream_df("acc-1", from_version=2)["amount"].tolist() == [Decimal(2)]
    assert store.as_of(1).read_stream_df("acc-1")["version"].tolist() == [1]  # past views too
    empty = store.read_stream_df("nobody")
    assert empty.empty and list(empty.columns)[:3] == ["position", "stream_id", "version"]


def test_recorded_events_and_states_render_as_html() -> None:
    class Balance(ev.State):
        owner: str = ""
        amount: Decimal = Decimal(0)

    page = Balance(owner="<ann>", amount=Decimal(5))._repr_html_()
    assert "<table>" in page and "owner" in page and "&#x27;&lt;ann&gt;&#x27;" in page
    assert "Decimal(&#x27;5&#x27;)" in page

    store = ev.open_store(clock=ev.ManualClock(datetime(2026, 1, 1, tzinfo=UTC)))
    store.append("acc-1", [Deposited(account_id="acc-1", amount=Decimal(7))], metadata={"by": "me"})
    page = store.read_stream("acc-1")[0]._repr_html_()
    assert "RecordedEvent test.Deposited" in page and "2026-01-01 00:00:00+00:00" in page
    for shown in ("stream_id", "position", "event.account_id", "event.amount", "Decimal(&#x27;7&#x27;)", "metadata"):
        assert shown in page


def test_help_says_what_the_package_is() -> None:
    text = pydoc.render_doc(ev, renderer=pydoc.plaintext)
    summary = (ev.__doc__ or "").strip().splitlines()[0]
    assert summary == "eventador: event sourcing for Python, in notebooks and in services."
    for promise in ("durable, auditable log", "ev.open_store", "store.sql", "as_of", "read_xes", "eventador --help"):
        assert promise in text


@pytest.mark.parametrize("name", ["AggregateScenario", "list_projections", "batch_view_name"])
def test_names_the_notebooks_use_are_public(name: str) -> None:
    assert name in ev.__all__ and getattr(ev, name) is not None
    assert ev.demo.build_demo.__module__ == "eventador.demo"


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("eventador.persistence", "eventador.aggregates", "AggregateRoot"),
        ("eventador.repository", "eventador.aggregates.repository", "Repository"),
        ("eventador.snapshots", "eventador.aggregates.snapshots", "SnapshotConfig"),
        ("eventador.timetravel", "eventador.store.diff", "StoreDiff"),
        ("eventador.importing", "eventador.io.importing", "read_xes"),
        ("eventador.projections.views", "eventador.store.live_views", "LiveView"),
        ("eventador.projections.progress", "eventador.progress", "bar"),
        ("eventador.projections.errors", "eventador.errors", "ProjectionNameError"),
    ],
)
def test_an_old_import_path_still_works_and_says_where_the_name_moved(old: str, new: str, name: str) -> None:
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        module.nothing_here  # noqa: B018


def test_the_queue_and_sagas_packages_keep_their_public_names() -> None:
    from eventador.queue import QueueManager, RetryPolicy
    from eventador.sagas import Saga, SagaCoordinator, list_sagas

    assert (QueueManager, RetryPolicy, Saga, SagaCoordinator, list_sagas) == (
        ev.QueueManager,
        ev.RetryPolicy,
        ev.Saga,
        ev.SagaCoordinator,
        ev.list_sagas,
    )
