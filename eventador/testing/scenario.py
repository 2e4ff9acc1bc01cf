"""Given / when / then tests for aggregates, in memory, with readable failures.

    AggregateScenario(BankAccount).given(Opened(...)).when(Deposit(amount=5)).then(Deposited(amount=5))

``given`` events are already in the aggregate's stream; ``when`` is the command;
``then`` names exactly the events the command must produce, ``then_rejected`` the
error it must raise (nothing persisted), ``then_state`` what the state must be.
Each scenario runs on its own in-memory store with a fixed clock, through a
``Repository``: the same code path as ``repo.execute``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from eventador.aggregates.repository import Repository
from eventador.aggregates.root import AggregateRoot
from eventador.clock import Clock, ManualClock
from eventador.errors import CommandRejected, InvalidInputError
from eventador.messages import Command, Event, State
from eventador.store import open_store

__all__ = ["AggregateScenario"]

S = TypeVar("S", bound=State)

# Fields the framework sets; then_state(expected_state) compares them only when asked.
_FRAMEWORK_FIELDS = ("version", "last_modified")
_UNSET: Any = object()


class AggregateScenario(Generic[S]):
    """Returns a scenario for one aggregate of `aggregate_class`; chain given/when/then on it.

    The command runs at the first ``then*`` call, on a fresh in-memory store whose
    clock is a ``ManualClock`` at `start` (so ``last_modified`` is predictable). Every
    ``then*`` returns the scenario, so checks chain; failures raise ``AssertionError``
    with a diff of expected and actual.

    >>> scenario = AggregateScenario(BankAccount).given(Deposited(amount=10.0)).when(Deposit(amount=5.0))
    >>> scenario.then(Deposited(amount=5.0)).then_state(balance=15.0)
    AggregateScenario(...)
    """

    def __init__(
        self,
        aggregate_class: type[AggregateRoot[S]],
        *,
        aggregate_id: str = "aggregate-1",
        start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
        clock: Clock | None = None,
    ) -> None:
        if not (isinstance(aggregate_class, type) and issubclass(aggregate_class, AggregateRoot)):
            raise InvalidInputError(f"AggregateScenario needs an ev.AggregateRoot subclass, got {aggregate_class!r}")
        self.aggregate_class = aggregate_class
        self.aggregate_id = aggregate_id
        self.clock = clock or ManualClock(start)
        self._given: list[Event] = []
        self._command: Any = _UNSET
        self._ran = False
        self._produced: list[Event] = []
        self._error: Exception | None = None
        self._error_checked = False
        self._state: S | None = None

    # -- building --------------------------------------------------------------------------

    def given(self, *events: Event) -> AggregateScenario[S]:
        """Returns the scenario, with `events` already in the aggregate's stream (in order)."""
        self._check_not_run("given")
        for event in events:
            if not isinstance(event, Event):
                raise InvalidInputError(f"given() takes ev.Event instances, got {event!r}")
        self._given.extend(events)
        return self

    def when(self, command: Command) -> AggregateScenario[S]:
        """Returns the scenario, with `command` as the one command it runs."""
        self._check_not_run("when")
        if self._command is not _UNSET:
            raise InvalidInputError("a scenario runs one command: start a new AggregateScenario for the next")
        self._command = command
        return self

    # -- checking ----------------------------------------------------------------------------

    def then(self, *expected: Event) -> AggregateScenario[S]:
        """Returns the scenario, after checking the command produced exactly `expected` (none: nothing).

        Raises:
            AssertionError: other events, or the command raised.
        """
        self._run()
        self._fail_on_unexpected_error("then")
        if self._produced != list(expected):
            raise AssertionError(
                "the command produced other events than expected\n"
                + _diff([repr(e) for e in expected], [repr(e) for e in self._produced], "expected", "produced")
            )
        return self

    def then_rejected(
        self, expected: type[BaseException] | str | re.Pattern[str] = CommandRejected, *, match: str | None = None
    ) -> AggregateScenario[S]:
        """Returns the scenario, after checking the command raised `expected` and stored nothing.

        `expected`: an exception class (default ``ev.CommandRejected``), or a regular
        expression the message of a ``CommandRejected`` must contain; `match`: such a
        regular expression as well as a class.

        Raises:
            AssertionError: the command succeeded, or raised something else.
        """
        self._run()
        error_type: type[BaseException] = CommandRejected
        pattern: str | re.Pattern[str] | None = match
        if isinstance(expected, type):
            error_type = expected
        else:
            pattern = expected
        error = self._error
        if error is None:
            produced = "\n".join(f"  {e!r}" for e in self._produced) or "  (none)"
            raise AssertionError(f"expected {error_type.__name__}, but the command succeeded; events:\n{produced}")
        if not isinstance(error, error_type):
            raise AssertionError(
                f"expected {error_type.__name__}, but the command raised {type(error).__name__}: {error}"
            ) from error
        if pattern is not None and not re.search(pattern, str(error)):
            raise AssertionError(f"the {type(error).__name__} message {str(error)!r} does not match {pattern!r}")
        if self._produced:
            raise AssertionError(f"the command was rejected, yet events were stored: {self._produced!r}")
        self._error_checked = True
        return self

    def then_state(
        self, expected: S | Callable[[S], object] | None = None, /, **fields: Any
    ) -> AggregateScenario[S]:
        """Returns the scenario, after checking the state the command left.

        `expected`: a state (compared field by field; ``version`` and ``last_modified``,
        which the framework sets, only when also passed as keywords), or a predicate
        that must not return False; `fields`: values individual fields must have.

        Raises:
            AssertionError: a field differs, or the predicate returned False.
        """
        self._run()
        self._fail_on_unexpected_error("then_state")
        state = self.state
        wanted: dict[str, Any] = {}
        if isinstance(expected, State):
            wanted = {
                f.name: getattr(expected, f.name)
                for f in dataclasses.fields(expected)
                if f.name not in _FRAMEWORK_FIELDS
            }
            if type(expected) is not type(state):
                raise AssertionError(f"expected a {type(expected).__name__}, got {state!r}")
        elif callable(expected):
            result = expected(state)
            if result is False or (result is not None and not result):
                raise AssertionError(f"the state does not satisfy {getattr(expected, '__name__', expected)}: {state!r}")
        elif expected is not None:
            raise InvalidInputError(f"then_state takes a state or a predicate, got {expected!r}")
        wanted.update(fields)
        differences = []
        for name, value in wanted.items():
            if not hasattr(state, name):
                differences.append(f"  {name}: expected {value!r}, but {type(state).__name__} has no such field")
                continue
            actual = getattr(state, name)
            if actual != value:
                differences.append(f"  {name}: expected {value!r}, got {actual!r}")
        if differences:
            raise AssertionError("the state differs from the expected one:\n" + "\n".join(differences))
        return self

    # -- results -------------------------------------------------------------------------------

    @property
    def events(self) -> list[Event]:
        """Returns the events the command produced (runs the scenario if it has not run)."""
        self._run()
        return list(self._produced)

    @property
    def state(self) -> S:
        """Returns the state after the command (before it, if the command raised)."""
        self._run()
        assert self._state is not None
        return self._state

    @property
    def error(self) -> Exception | None:
        """Returns what the command raised, or None."""
        self._run()
        return self._error

    # -- internals -----------------------------------------------------------------------------

    def _check_not_run(self, step: str) -> None:
        if self._ran:
            raise InvalidInputError(f"{step}() after then(): the scenario has already run")

    def _run(self) -> None:
        if self._ran:
            return
        self._ran = True
        store = open_store(clock=self.clock)
        try:
            if self._given:
                store.append(self.aggregate_id, self._given, stream_type=self.aggregate_class.aggregate_type)
            repo = Repository(store, self.aggregate_class)
            self._state = repo.get(self.aggregate_id)
            if self._command is _UNSET:
                return
            try:
                self._state = repo.execute(self.aggregate_id, self._command)
            except Exception as exc:
                self._error = exc
            self._produced = [r.event for r in store.read_stream(self.aggregate_id, from_version=len(self._given) + 1)]
        finally:
            store.close()

    def _fail_on_unexpected_error(self, step: str) -> None:
        error = self._error
        if error is not None and not self._error_checked:
            raise AssertionError(
                f"{step}(): the command raised {type(error).__name__}: {error} "
                "(use then_rejected() if that is expected)"
            ) from error

    def __repr__(self) -> str:
        command = "" if self._command is _UNSET else f".when({self._command!r})"
        return f"AggregateScenario({self.aggregate_class.__name__}).given({len(self._given)} events){command}"


def _diff(expected: list[str], actual: list[str], a: str, b: str) -> str:
    lines = difflib.unified_diff(expected, actual, fromfile=a, tofile=b, lineterm="", n=len(expected) + len(actual))
    body = "\n".join(lines)
    return body or f"{a}: {expected}\n{b}: {actual}"
