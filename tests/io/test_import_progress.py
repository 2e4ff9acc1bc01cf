"""Progress while reading and importing real logs: bars that count something true.

Reading XES with the built-in reader counts the file's bytes (zipped ones for a
``.xes.gz``); ``rustxes`` reads a log in one call, so it shows no bar. The import
counts rows, and in a notebook its bar carries a static HTML copy (what GitHub and
nbconvert show), like the projection rebuild's.
"""

from __future__ import annotations

import gzip
import shutil
import textwrap
from pathlib import Path

import pytest

import eventador as ev
from eventador.io.importing import _read_with_expat

ROOT = Path(__file__).resolve().parents[2]
ROADTRAFFIC = ROOT / "data" / "roadtraffic100traces.xes"


@pytest.mark.parametrize("zipped", [False, True])
def test_the_built_in_xes_reader_counts_the_bytes_of_the_file(
    tmp_path: Path, zipped: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / ("log.xes.gz" if zipped else "log.xes")
    if zipped:
        with open(ROADTRAFFIC, "rb") as f, gzip.open(source, "wb") as out:
            shutil.copyfileobj(f, out)
    else:
        shutil.copyfile(ROADTRAFFIC, source)
    frame = _read_with_expat(source, progress=True)
    assert len(frame) > 0
    shown = capsys.readouterr().err
    assert f"reading {source.name}" in shown and "100%" in shown
    _read_with_expat(source, progress=False)
    assert capsys.readouterr().err == ""


def test_a_read_in_one_call_shows_no_bar(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rustxes", reason="the one-call reader is the optional rustxes")
    ev.read_xes(ROADTRAFFIC, progress=True)
    assert "reading" not in capsys.readouterr().err


def test_the_import_bar_counts_rows(capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    df = pd.DataFrame({"case": ["a", "a", "b"], "activity": ["x", "y", "x"],
                       "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"], utc=True)})
    assert ev.open_store().import_dataframe(df, progress=True) == 3
    shown = capsys.readouterr().err
    assert "importing" in shown and "3.00/3.00" in shown and "row/s" in shown


def test_in_a_notebook_the_import_bar_has_a_static_html_copy(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipywidgets")
    cell = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import pandas as pd
        import eventador as ev
        df = pd.DataFrame({{"case": ["a", "a", "b"], "activity": ["x", "y", "x"],
                           "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"], utc=True)}})
        ev.open_store().import_dataframe(df, progress=True)
    """)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    nbclient.NotebookClient(notebook, timeout=60, store_widget_state=False, resources={"metadata": {"path": tmp_path}}
                            ).execute()
    outputs = notebook.cells[0].outputs
    bars = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(bars) == 1, outputs
    static = bars[0]["data"]["text/html"]
    assert "importing" in static and "value='3' max='3'" in static and "3.00/3.00" in static
