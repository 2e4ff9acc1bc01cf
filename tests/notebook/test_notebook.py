"""ev.explore (a widget over a stream's versions) and the two plots, on matplotlib's Agg backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

import eventador as ev
from eventador import AggregateRoot, ManualClock


class NbOpened(ev.Event, event_type="nb.Opened"):
    owner: str


class NbDeposited(ev.Event, event_type="nb.Deposited"):
    amount: int


class NbState(ev.State):
    owner: str = ""
    balance: int = 0


class NbAccount(AggregateRoot[NbState]):
    @property
    def initial_state(self) -> NbState:
        return NbState()

    def handle_command(self, state: NbState, command: ev.Command) -> list[ev.Event]:
        return []

    def apply_event(self, state: NbState, event: ev.Event) -> NbState:
        if isinstance(event, NbOpened):
            return state.copy_with(owner=event.owner)
        if isinstance(event, NbDeposited):
            return state.copy_with(balance=state.balance + event.amount)
        return state


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


@pytest.fixture
def store() -> ev.EventStore:
    """Three days: acc-1 opened with deposits 10, 20, 30 (one per day), acc-2 opened on day 2."""
    clock = ManualClock(datetime(2026, 5, 1, 10, tzinfo=UTC))
    s = ev.open_store(clock=clock)
    s.append("acc-1", NbOpened(owner="Ada"), stream_type="NbAccount")
    s.append("acc-1", NbDeposited(amount=10), stream_type="NbAccount")
    clock.advance(timedelta(days=1))
    s.append("acc-1", NbDeposited(amount=20), stream_type="NbAccount")
    s.append("acc-2", NbOpened(owner="Bram"), stream_type="NbAccount")
    clock.advance(timedelta(days=2))  # a day with no events in between
    s.append("acc-1", NbDeposited(amount=30), stream_type="NbAccount")
    return s


def test_explore_builds_a_vbox_whose_slider_spans_the_stream_versions(store: ev.EventStore) -> None:
    import ipywidgets as widgets

    box = ev.explore(store, "acc-1")
    assert isinstance(box, widgets.VBox)
    slider, event_box, state_box = box.children
    assert isinstance(slider, widgets.IntSlider)
    assert (slider.min, slider.max, slider.value) == (1, 4, 4)
    assert "nb.Deposited" in event_box.value and "30" in event_box.value
    assert state_box.value == ""


def test_moving_the_slider_changes_the_shown_event_and_state(store: ev.EventStore) -> None:
    box = ev.explore(store, "acc-1", aggregate=NbAccount)
    slider, event_box, state_box = box.children
    assert "balance" in state_box.value and "60" in state_box.value
    last_event, last_state = event_box.value, state_box.value
    slider.value = 1
    assert event_box.value != last_event
    assert "nb.Opened" in event_box.value and "Ada" in event_box.value
    assert "after version 1" in state_box.value and state_box.value != last_state
    slider.value = 3
    assert "Event 3 of" in event_box.value and "30" in state_box.value


def test_explore_displays_with_a_static_html_copy_of_what_it_shows(store: ev.EventStore) -> None:
    box = ev.explore(store, "acc-1", aggregate=NbAccount)
    bundle = box._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # the live widget, where widgets run
    static = bundle["text/html"]  # and what GitHub or nbconvert's HTML show instead
    assert "version 4 of 1–4" in static and "Event 4 of" in static and "60" in static
    box.children[0].value = 1
    static = box._repr_mimebundle_()["text/html"]
    assert "version 1 of 1–4" in static and "Ada" in static and "after version 1" in static


def test_explore_of_an_empty_stream_raises_invalid_input(store: ev.EventStore) -> None:
    with pytest.raises(ev.InvalidInputError, match="no events"):
        ev.explore(store, "nobody")
    with pytest.raises(ev.InvalidInputError):
        ev.explore(store, "")


def test_events_per_day_draws_a_bar_per_day_and_type(store: ev.EventStore) -> None:
    ax = ev.plot_events_per_day(store)
    # days 1..4 (day 3 empty) x two types, stacked
    assert len(ax.patches) == 4 * 2
    heights = sorted(p.get_height() for p in ax.patches)
    assert sum(heights) == 5
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["nb.Deposited", "nb.Opened"]


def test_events_per_day_without_groups_and_on_a_given_axes(store: ev.EventStore) -> None:
    _, given = plt.subplots()
    ax = ev.plot_events_per_day(store, by=None, ax=given)
    assert ax is given
    assert [p.get_height() for p in ax.patches] == [2, 2, 0, 1]


def test_events_per_day_of_an_empty_store_draws_nothing() -> None:
    ax = ev.plot_events_per_day(ev.open_store())
    assert len(ax.patches) == 0


def test_events_per_day_rejects_an_unknown_group(store: ev.EventStore) -> None:
    with pytest.raises(ev.InvalidInputError, match="by must be"):
        ev.plot_events_per_day(store, by="data; DROP TABLE events")  # type: ignore[arg-type]
    with pytest.raises(ev.InvalidInputError, match="time must be"):
        ev.plot_events_per_day(store, time="now")  # type: ignore[arg-type]


def test_timeline_draws_one_point_per_event(store: ev.EventStore) -> None:
    ax = ev.plot_timeline(store, "acc-1")
    (points,) = ax.collections
    assert len(points.get_offsets()) == 4
    assert [t.get_text() for t in ax.get_yticklabels()] == ["nb.Opened", "nb.Deposited"]
    with pytest.raises(ev.InvalidInputError):
        ev.plot_timeline(store, "nobody")


def test_the_notebook_progress_bar_carries_a_static_copy_of_its_state(capsys: pytest.CaptureFixture[str]) -> None:
    from eventador.progress import NotebookBar as _NotebookBar

    shown = _NotebookBar(365, "rebuild totals", "ev")  # outside a kernel, display() prints the bundle
    first = capsys.readouterr().out
    assert "application/vnd.jupyter.widget-view+json" in first and "value='0' max='365'" in first
    shown.update(365)
    shown.close()
    static = shown._bundle()["text/html"]
    assert "rebuild totals" in static and "value='365' max='365'" in static and "365/365" in static
