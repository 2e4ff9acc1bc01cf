"""Metrics and reprs: a row per actor, frozen snapshots, one-line reprs and HTML."""

from __future__ import annotations

import pandas as pd
import pytest

from eventador import ActorMetrics, ActorSystem
from tests.support.actors import Boom, Counter, Gate, Stuck, run


def test_metrics_dataframe_has_one_row_per_actor() -> None:
    async def main() -> pd.DataFrame:
        async with ActorSystem() as system:
            gate = Gate()
            counter = await system.spawn("counter", Counter)
            stuck = await system.spawn("stuck", lambda: Stuck(gate))
            for _ in range(3):
                counter.tell("inc")
            with pytest.raises(Boom):
                await counter.ask("boom")
            stuck.tell("a")
            stuck.tell("b")
            await gate.entered.wait()  # the stuck actor holds "a"; "b" stays queued
            return system.metrics()

    frame = run(main())
    assert list(frame.index) == ["counter", "stuck"]
    assert frame.index.name == "name"
    assert list(frame.columns) == [
        "state",
        "processed",
        "failures",
        "restarts",
        "mailbox_depth",
        "total_seconds",
        "mean_seconds",
    ]
    counter = frame.loc["counter"]
    assert (counter["state"], counter["processed"], counter["failures"], counter["restarts"]) == (
        "running",
        4,
        1,
        1,
    )
    assert counter["total_seconds"] > 0
    assert counter["mean_seconds"] == pytest.approx(counter["total_seconds"] / 4)
    assert (frame.loc["stuck", "processed"], frame.loc["stuck", "mailbox_depth"]) == (0, 1)
    assert str(frame["processed"].dtype) == "int64"


def test_metrics_of_an_empty_system_is_an_empty_frame_with_the_columns() -> None:
    frame = ActorSystem().metrics()
    assert frame.empty
    assert "mean_seconds" in frame.columns


def test_ref_metrics_is_a_frozen_snapshot() -> None:
    async def main() -> ActorMetrics:
        async with ActorSystem() as system:
            counter = await system.spawn("counter", Counter)
            await counter.ask("inc")
            return counter.metrics()

    metrics = run(main())
    assert (metrics.name, metrics.state, metrics.processed, metrics.mailbox_depth) == (
        "counter",
        "running",
        1,
        0,
    )
    with pytest.raises(AttributeError):
        metrics.processed = 5  # type: ignore[misc]


def test_repr_is_one_line_and_html_lists_the_actors() -> None:
    async def main() -> tuple[str, str, str]:
        async with ActorSystem() as system:
            ref = await system.spawn("<counter>", Counter)
            return repr(system), system._repr_html_(), repr(ref)

    text, html, ref_text = run(main())
    assert text == "ActorSystem(1 actors, 0 passivated, 0 dead letters, 0 failures)"
    assert "\n" not in text
    assert "&lt;counter&gt;" in html and "<table>" in html
    assert ref_text == "ActorRef('<counter>', running)"
