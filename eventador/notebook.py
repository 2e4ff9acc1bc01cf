"""Looking at a store in Jupyter: a stream explorer widget and two plots.

ipywidgets and matplotlib are optional (``pip install "eventador[notebook]"``):
they are imported inside the functions, so ``import eventador`` does not need them.
"""

from __future__ import annotations

import dataclasses
import functools
import html
from typing import TYPE_CHECKING, Any, Literal

from eventador.errors import InvalidInputError
from eventador.progress import with_static_html
from eventador.store.reads import check_stream_id

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from eventador.aggregates.root import AggregateRoot
    from eventador.store.records import RecordedEvent
    from eventador.store.store import EventStore

__all__ = ["explore", "plot_events_per_day", "plot_timeline"]

_GROUPS = ("event_type", "stream_type")


def _table(rows: list[tuple[str, Any]], title: str) -> str:
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
        f"{html.escape(str(v))}</td></tr>"
        for k, v in rows
    )
    return f"<b>{html.escape(title)}</b><table>{body}</table>"


def _event_html(record: RecordedEvent) -> str:
    event = record.event
    fields: list[tuple[str, Any]] = []
    if dataclasses.is_dataclass(event):
        fields = [(f.name, getattr(event, f.name)) for f in dataclasses.fields(event)]
    rows: list[tuple[str, Any]] = [
        ("version", record.version),
        ("position", record.position),
        ("event_type", record.event_type),
        ("recorded_at", record.recorded_at.isoformat()),
        ("occurred_at", record.occurred_at.isoformat()),
        *fields,
    ]
    return _table(rows, f"Event {record.version} of {record.stream_id!r}")


@functools.cache
def _explorer_class() -> type:
    import ipywidgets as widgets

    class StreamExplorer(widgets.VBox):  # type: ignore[misc]
        """``explore``'s box; displayed, it carries a static HTML copy of what it shows now."""

        def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
            slider, event_box, state_box = self.children
            static = (
                f"<p>version {slider.value} of {slider.min}–{slider.max} (a slider where widgets run)</p>"
                f"{event_box.value}{state_box.value}"
            )
            return with_static_html(super()._repr_mimebundle_(**kwargs), static)

    return StreamExplorer


def explore(store: EventStore, stream_id: str, *, aggregate: type[AggregateRoot[Any]] | None = None) -> Any:
    """Returns an ipywidgets ``VBox``: a slider over the stream's versions, the event at that
    version and, given an ``AggregateRoot`` class, the aggregate's state after it. Displayed,
    it also carries a static HTML copy of what it shows (for GitHub and nbconvert's HTML).

    Costs one ``read_stream`` (and with `aggregate`, one ``Repository.history``: a fold
    from the initial state); moving the slider then reads nothing. The box's children
    are the slider, the event (an ``HTML`` widget) and the state (an ``HTML`` widget,
    empty without `aggregate`).

    Raises:
        InvalidInputError: the stream has no events, or `stream_id` is not a non-empty str.

    In a notebook cell (the widget shows as the cell's result)::

        ev.explore(store, "acc-1", aggregate=BankAccount)
    """
    import ipywidgets as widgets

    check_stream_id(stream_id)
    records = store.read_stream(stream_id)
    if not records:
        raise InvalidInputError(f"stream {stream_id!r} has no events to explore")
    states: list[str] = []
    if aggregate is not None:
        from eventador.aggregates.repository import Repository

        history = Repository(store, aggregate, cache_size=0).history(stream_id)
        envelope = {"position", "version", "recorded_at", "event_type"}
        fields = [c for c in history.columns if c not in envelope]
        for values in history.to_dict("records"):
            states.append(
                _table([(c, values[c]) for c in fields], f"{aggregate.__name__} after version {values['version']}")
            )
    slider = widgets.IntSlider(
        value=records[-1].version,
        min=records[0].version,
        max=records[-1].version,
        step=1,
        description="version",
        continuous_update=True,
    )
    event_box = widgets.HTML()
    state_box = widgets.HTML()
    first = records[0].version

    def show(version: int) -> None:
        event_box.value = _event_html(records[version - first])
        state_box.value = states[version - first] if states else ""

    def on_change(change: dict[str, Any]) -> None:
        show(int(change["new"]))

    show(slider.value)
    slider.observe(on_change, names="value")
    return _explorer_class()([slider, event_box, state_box])


def plot_events_per_day(
    store: EventStore,
    *,
    by: Literal["event_type", "stream_type"] | None = "event_type",
    time: Literal["recorded_at", "occurred_at"] = "recorded_at",
    ax: Axes | None = None,
) -> Axes:
    """Returns the matplotlib ``Axes`` with a stacked bar chart: events per day (UTC), one colour per `by`.

    One SQL query (a GROUP BY over the ``events`` view). `by=None` draws one bar per
    day; `time="occurred_at"` counts by the events' own time (imported logs). Draws on
    `ax`, or on a new figure. Every day between the first and the last gets a bar
    for every group (zero-height where there were none).

    Raises:
        InvalidInputError: `by` or `time` is not one of the names above.

    In a notebook cell::

        ev.plot_events_per_day(store)
    """
    if by is not None and by not in _GROUPS:
        raise InvalidInputError(f"by must be one of {_GROUPS} or None, got {by!r}")
    if time not in ("recorded_at", "occurred_at"):
        raise InvalidInputError(f"time must be 'recorded_at' or 'occurred_at', got {time!r}")
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.dates import date2num

    group = f"coalesce({by}, '(none)')" if by is not None else "'events'"
    rows = store.sql(
        f"SELECT CAST(timezone('UTC', {time}) AS DATE) AS day, {group} AS grp, count(*) AS n "
        "FROM events GROUP BY ALL ORDER BY day, grp"
    ).fetchall()
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.5))
    assert ax is not None
    if not rows:
        ax.set_title("events per day (none)")
        return ax
    frame = pd.DataFrame(rows, columns=["day", "grp", "n"])
    table = frame.pivot_table(index="day", columns="grp", values="n", aggfunc="sum", fill_value=0)
    days = pd.date_range(min(table.index), max(table.index), freq="D").date
    table = table.reindex(days, fill_value=0)
    bottom = [0] * len(table)
    xs = [float(date2num(day)) for day in table.index]  # type: ignore[no-untyped-call]
    for name in table.columns:
        heights = [int(v) for v in table[name]]
        ax.bar(xs, heights, bottom=bottom, width=0.9, label=str(name))
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylabel("events")
    ax.set_title(f"events per day ({time[:-3]} time, UTC)")
    if by is not None:
        ax.legend(fontsize="small", ncols=1 if len(table.columns) < 8 else 2, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.xaxis_date()
    ax.figure.autofmt_xdate()
    return ax


def plot_timeline(store: EventStore, stream_id: str, ax: Axes | None = None) -> Axes:
    """Returns the matplotlib ``Axes`` with one point per event of the stream: when it occurred
    (x) and its type (y, in order of first appearance), joined by a thin line in version order.

    One ``read_stream``. Draws on `ax`, or on a new figure.

    Raises:
        InvalidInputError: the stream has no events, or `stream_id` is not a non-empty str.

    In a notebook cell::

        ev.plot_timeline(store, "acc-1")
    """
    check_stream_id(stream_id)
    records = store.read_stream(stream_id)
    if not records:
        raise InvalidInputError(f"stream {stream_id!r} has no events to plot")
    import matplotlib.pyplot as plt
    from matplotlib.dates import date2num

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.5))
    assert ax is not None
    order: dict[str, int] = {}
    for r in records:
        order.setdefault(r.event_type, len(order))
    times = [float(date2num(r.occurred_at)) for r in records]  # type: ignore[no-untyped-call]
    levels = [order[r.event_type] for r in records]
    ax.plot(times, levels, color="lightgray", linewidth=1, zorder=1)
    ax.scatter(times, levels, zorder=2)
    ax.set_yticks(range(len(order)), list(order))
    ax.set_ylim(-0.5, len(order) - 0.5)
    ax.invert_yaxis()
    ax.xaxis_date()
    ax.set_title(f"{stream_id}: {len(records)} events")
    ax.figure.autofmt_xdate()
    return ax
