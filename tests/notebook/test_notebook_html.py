"""The stored notebooks read well where no kernel runs: ``jupyter nbconvert --to html`` (and GitHub).

Every widget output (``ev.explore``, a rebuild's progress bar) must show its static HTML
fallback in the page, not a blank widget placeholder; and test markers live in cell tags,
not as the first line a reader sees. The notebooks are stored executed, so this converts
them as they are (no kernel: a few seconds for all of them).

A notebook re-executed with its widget state stored (nbclient's default) shows a widget
placeholder instead of the fallback: execute with ``store_widget_state=False``
(``jupyter nbconvert --execute --ExecutePreprocessor.store_widget_state=False ...``).
"""

from __future__ import annotations

import html.parser
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"


def widget_outputs(notebook: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        output
        for cell in notebook["cells"] if cell["cell_type"] == "code"
        for output in cell["outputs"] if WIDGET in output.get("data", {})
    ]


def html_of(data: dict[str, Any]) -> str:
    value = data["text/html"]
    return "".join(value) if isinstance(value, list) else str(value)


def visible_text(markup: str) -> str:
    """The text a reader sees in `markup` (tags and scripts dropped, whitespace folded)."""
    parts: list[str] = []

    class Text(html.parser.HTMLParser):
        hidden = 0

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            self.hidden += tag in ("script", "style")

        def handle_endtag(self, tag: str) -> None:
            self.hidden -= tag in ("script", "style")

        def handle_data(self, data: str) -> None:
            if not self.hidden:
                parts.append(data)

    Text(convert_charrefs=True).feed(markup)
    return " ".join(" ".join(parts).split())


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("html")
    done = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--output-dir", str(out), *map(str, NOTEBOOKS)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {path.stem: (out / f"{path.stem}.html").read_text(encoding="utf-8") for path in NOTEBOOKS}


def test_the_text_a_reader_sees() -> None:
    assert visible_text("<div><b>Event 1</b><script>x = 1</script><td>a &amp; b</td></div>") == "Event 1 a & b"


def test_the_notebooks_have_widgets_to_check() -> None:
    found = [p.name for p in NOTEBOOKS if widget_outputs(json.loads(p.read_text(encoding="utf-8")))]
    assert "03_projections_in_sql.ipynb" in found and "05_time_travel.ipynb" in found  # progress bar, explore


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_widget_shows_its_static_fallback_in_the_html(path: Path, pages: dict[str, str]) -> None:
    page = pages[path.stem]
    seen = visible_text(page)
    outputs = widget_outputs(json.loads(path.read_text(encoding="utf-8")))
    for output in outputs:
        assert "text/html" in output["data"], f"{path.name}: a widget output without a static fallback"
        fallback = visible_text(html_of(output["data"]))
        assert len(fallback) > 20, f"{path.name}: the static fallback shows almost nothing: {fallback!r}"
        assert fallback in seen, f"{path.name}: the widget's fallback is not in nbconvert's HTML: {fallback!r}"
    assert f'<script type="{WIDGET}">' not in page, f"{path.name}: a widget renders as a blank placeholder"
    assert page.count("eventador-static") == len(outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_test_markers_are_cell_tags_not_the_first_line_a_reader_sees(path: Path) -> None:
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        source = "".join(cell["source"])
        assert "NBVAL_" not in source and "PYTEST_VALIDATE" not in source, f"{path.name}: {source[:80]!r}"
