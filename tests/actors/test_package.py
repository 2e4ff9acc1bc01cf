"""The actors package: its docstring examples run and its public names are exported."""

from __future__ import annotations

import doctest

import eventador.actors
import eventador.actors.actor
import eventador.actors.supervision
import eventador.actors.system


def test_docstring_examples_run() -> None:
    for module in (
        eventador.actors,
        eventador.actors.actor,
        eventador.actors.supervision,
        eventador.actors.system,
    ):
        failed, _ = doctest.testmod(module, raise_on_error=False)
        assert failed == 0, module.__name__


def test_public_names_are_exported() -> None:
    assert sorted(eventador.actors.__all__) == eventador.actors.__all__
    for name in eventador.actors.__all__:
        assert hasattr(eventador.actors, name)
