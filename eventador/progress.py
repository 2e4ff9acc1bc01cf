"""Progress bars for long work (rebuilds, imports): a widget in Jupyter, text in a terminal, nothing elsewhere.

Layer 0: the store's imports and the projections' rebuilds both show them. tqdm, IPython and
ipywidgets are imported when a bar is shown, not with this module.
"""

from __future__ import annotations

import contextlib
import html
import sys
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import duckdb

__all__ = ["LONG", "Bar", "NotebookBar", "bar", "query_progress", "wanted", "with_static_html"]

LONG = 100_000
"""Events: a rebuild shorter than this gets no bar unless asked for one."""


class Bar(Protocol):
    def update(self, n: int) -> Any: ...

    def close(self) -> Any: ...


class _NoBar:
    def update(self, n: int) -> None:
        return None

    def close(self) -> None:
        return None


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    get = getattr(shell, "get_ipython", None)
    ip = get() if get is not None else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def wanted(progress: bool | None, total: int) -> bool:
    """Whether to show a bar: `progress` if given; else for long work in a terminal or a notebook."""
    if progress is not None:
        return progress
    if total < LONG:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return _in_notebook() or bool(isatty and isatty())


class NotebookBar:
    """tqdm's notebook widget, displayed with a static HTML copy of its state beside it
    (what GitHub and nbconvert's HTML show: they cannot run widgets), brought up to date on close."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        from IPython.display import display
        from tqdm.notebook import tqdm

        self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=True, display=False)
        self._shown = display(self._bundle(), raw=True, display_id=True)  # type: ignore[no-untyped-call]

    def _bundle(self) -> dict[str, Any]:
        state = self._bar.format_dict
        meter = html.escape(self._bar.format_meter(**{**state, "prefix": "", "ascii": True}))
        static = (
            f"<span>{html.escape(str(state['prefix'] or ''))}</span> "
            f"<progress value='{state['n']}' max='{state['total'] or 1}'></progress> <code>{meter}</code>"
        )
        return with_static_html(self._bar.container._repr_mimebundle_(), static)

    def update(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()
        if self._shown is not None:
            self._shown.update(self._bundle(), raw=True)


def with_static_html(bundle: dict[str, Any], static: str) -> dict[str, Any]:
    """A widget's display data with `static` beside the widget view, as ``text/html``.

    Where widgets cannot run (GitHub, ``jupyter nbconvert --to html``, a closed
    kernel) a reader sees that HTML instead of a blank cell.
    """
    return {**bundle, "text/html": f"<div class='eventador-static'>{static}</div>"}


def bar(total: int, desc: str, enabled: bool, unit: str = "ev") -> Bar:
    """A bar over `total` units (events by default): a widget in a notebook (with a static
    HTML copy for where widgets cannot run), tqdm's text elsewhere; or one that shows nothing."""
    if not enabled:
        return _NoBar()
    if _in_notebook():
        with contextlib.suppress(ImportError):  # no ipywidgets: tqdm's text bar below
            import ipywidgets  # noqa: F401

            return NotebookBar(total, desc, unit)
    from tqdm import tqdm

    result: Bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=True)
    return result


@contextlib.contextmanager
def query_progress(con: duckdb.DuckDBPyConnection, total: int, desc: str, enabled: bool) -> Iterator[None]:
    """While the block runs one long query on `con`, show its progress (DuckDB's own estimate).

    A helper thread asks ``con.query_progress()`` every 0.2 s; it waits on an event,
    so it ends as soon as the block does.
    """
    if not enabled:
        yield
        return
    con.execute("SET enable_progress_bar = true")
    con.execute("SET enable_progress_bar_print = false")
    shown = bar(total, desc, True)
    done = threading.Event()
    state = {"n": 0}

    def poll() -> None:
        while not done.wait(0.2):
            try:
                pct = con.query_progress()
            except (duckdb.Error, RuntimeError):
                continue
            n = int(total * max(0.0, min(pct, 100.0)) / 100.0)
            if n > state["n"]:
                shown.update(n - state["n"])
                state["n"] = n

    thread = threading.Thread(target=poll, name="eventador-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        if state["n"] < total:
            shown.update(total - state["n"])
        shown.close()
        with contextlib.suppress(duckdb.Error):
            con.execute("SET enable_progress_bar = false")
