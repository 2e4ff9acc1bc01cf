"""``store.to_event_log()``: the store as an event log for process-mining tools, and back.

And notebook 06's process-mining question (the directly-follows graph, in SQL) checked
against a count made here by hand from the XES file's rows.

Data: Road Traffic Fine Management Process (100-trace subset), M. de Leoni and
F. Mannhardt, 4TU.ResearchData, DOI 10.4121/uuid:270fd440-1057-4fb9-89a9-b699b47990f5;
BPI Challenge 2012, B.F. van Dongen (2012), 4TU.ResearchData,
DOI 10.4121/uuid:3926db30-f712-4394-aebc-75976070e91f; see ``data/README.md``.
"""

from __future__ import annotations

import ast
import itertools
import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

import eventador as ev
from tests.io.test_bpi_import import count_log
from tests.support.domain import deposited

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
NOTEBOOK = REPO / "notebooks" / "06_real_event_log.ipynb"
COLUMNS = ["case:concept:name", "concept:name", "time:timestamp"]


def real(name: str) -> Path:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: the real event logs ship in the repository's data/ folder")
    return path


def in_store_order(df: pd.DataFrame) -> pd.DataFrame:
    """`df` as ``import_dataframe`` writes it: case by case, each in time order (ties: file order)."""
    return df.sort_values(["case:concept:name", "time:timestamp"], kind="stable").reset_index(drop=True)


def test_an_imported_log_comes_back_the_same(tmp_path: Path) -> None:
    df = ev.read_xes(real("roadtraffic100traces.xes"))
    with ev.open_store(tmp_path / "store") as store:
        store.import_dataframe(df, progress=False)
        log = store.to_event_log()
    assert list(log.columns[:3]) == COLUMNS and set(log.columns) == set(df.columns)
    pd.testing.assert_frame_equal(log[list(df.columns)], in_store_order(df), check_exact=True)


def test_a_selection_of_streams_in_the_order_asked(tmp_path: Path) -> None:
    df = ev.read_xes(real("roadtraffic100traces.xes"))
    with ev.open_store(tmp_path / "store") as store:
        store.import_dataframe(df, progress=False)
        cases = sorted(set(df["case:concept:name"]))
        picked = store.to_event_log([cases[5], cases[2], "no-such-case"])
        assert list(dict.fromkeys(picked["case:concept:name"])) == [cases[5], cases[2]]
        expected = in_store_order(df[df["case:concept:name"].isin([cases[2], cases[5]])])
        assert len(picked) == len(expected)
        assert store.to_event_log(cases[2])["concept:name"].tolist() == (
            expected[expected["case:concept:name"] == cases[2]]["concept:name"].tolist()
        )
        with pytest.raises(ev.InvalidInputError, match="stream_id"):
            store.to_event_log([""])


def test_as_of_gives_the_log_as_it_stood(tmp_path: Path) -> None:
    df = ev.read_xes(real("roadtraffic100traces.xes"))
    cutoff = datetime(2006, 1, 1, tzinfo=UTC)
    with ev.open_store(tmp_path / "store") as store:
        store.import_dataframe(df, progress=False)
        then = store.as_of(cutoff, by="occurred_at").to_event_log()
    expected = in_store_order(df[df["time:timestamp"] <= cutoff])
    assert 0 < len(then) < len(df)
    pd.testing.assert_frame_equal(then[COLUMNS], expected[COLUMNS], check_exact=True)


def test_events_of_known_classes_give_their_fields_and_recorded_time_stands_in(tmp_path: Path) -> None:
    with ev.open_store(tmp_path / "store", clock=ev.ManualClock(datetime(2026, 1, 1, tzinfo=UTC))) as store:
        store.append("acc-1", [deposited("5", "acc-1", note="first")])
        store.append("acc-2", [deposited("7", "acc-2")])
        store.append("acc-1", [deposited("1", "acc-1")])
        log = store.to_event_log()
        assert store.to_event_log([]).columns.tolist() == COLUMNS
    assert log.columns.tolist() == [*COLUMNS, "account_id", "amount", "rate", "note"]
    assert log["case:concept:name"].tolist() == ["acc-1", "acc-1", "acc-2"]  # case by case
    assert log["amount"].tolist() == [Decimal("5"), Decimal("1"), Decimal("7")]
    assert log["concept:name"].unique().tolist() == ["test.Deposited"]
    assert (log["time:timestamp"] == pd.Timestamp("2026-01-01", tz="UTC")).all()


# -- notebook 06's directly-follows graph, against a count by hand ----------------------------------


def notebook_sql(name: str) -> str:
    """The SQL string that notebook 06 assigns to `name` (so the test checks the notebook's own query)."""
    for cell in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "code":
            continue
        for node in ast.parse("".join(cell["source"]).replace("%matplotlib inline", "")).body:
            if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == [name]:
                assert isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                return node.value.value
    raise AssertionError(f"notebook 06 assigns no {name}")


def directly_follows_by_hand(path: Path) -> Counter[tuple[str, str]]:
    """(a, b) -> how often b directly follows a in a case, by time, from the XES file's own rows."""
    pairs: Counter[tuple[str, str]] = Counter()
    for rows in count_log(path).per_case.values():
        activities = [activity for _, activity in rows]
        pairs.update(itertools.pairwise(activities))
    return pairs


def check_directly_follows(path: Path, directory: Path) -> None:
    with ev.open_store(directory) as store:
        store.import_dataframe(ev.read_xes(path), progress=False)
        rows = store.sql(notebook_sql("DIRECTLY_FOLLOWS")).fetchall()
    assert {(a, b): n for a, b, n in rows} == directly_follows_by_hand(path)
    assert [n for _, _, n in rows] == sorted((n for _, _, n in rows), reverse=True)


def test_the_notebooks_directly_follows_graph_matches_a_count_by_hand(tmp_path: Path) -> None:
    check_directly_follows(real("roadtraffic100traces.xes"), tmp_path / "store")


@pytest.mark.slow
def test_the_notebooks_directly_follows_graph_on_bpi_2012(tmp_path: Path) -> None:
    check_directly_follows(real("bpic2012.xes.gz"), tmp_path / "store")
