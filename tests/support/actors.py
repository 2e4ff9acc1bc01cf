"""What the actor tests share: test actors, a gate, a recording sleep, and `run`, which runs a
coroutine under a deadline. Nothing in the actor tests sleeps to wait: they wait on asks,
events and futures, each run under a deadline so a hang fails instead of stalling."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from eventador import Actor
from tests.support.aio import run as run_bounded

T = TypeVar("T")

DEADLINE = 5.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    return run_bounded(coro, deadline=DEADLINE)


class Boom(Exception):
    """The failure the test actors raise on purpose."""


class Recorder(Actor):
    """Appends every message to a shared list; 'boom' raises, 'get' answers the list."""

    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    async def on_message(self, message: Any) -> Any:
        if message == "get":
            return list(self.seen)
        if message == "boom":
            raise Boom("boom")
        self.seen.append(message)
        return message


class Counter(Actor):
    """Counts 'inc' in its own state, so a new instance starts from zero."""

    def __init__(self) -> None:
        self.count = 0

    async def on_message(self, message: Any) -> Any:
        if message == "inc":
            self.count += 1
            return self.count
        if message == "get":
            return self.count
        if message == "boom":
            raise Boom("boom")
        self.unhandled(message)
        return None


class Gate:
    """Tells a test that a handler is inside (`entered`), and lets it out (`release`)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()


class Stuck(Actor):
    """Waits on every message until its gate is released (never, by default)."""

    def __init__(self, gate: Gate | None = None) -> None:
        self.gate = gate or Gate()

    async def on_message(self, message: Any) -> Any:
        self.gate.entered.set()
        await self.gate.release.wait()
        return message


async def until(condition: Callable[[], bool]) -> None:
    """Yields to the loop until `condition` holds; the run() deadline bounds the wait."""
    while not condition():
        await asyncio.sleep(0)


class RecordingSleep:
    """Stands in for asyncio.sleep: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def recorder(seen: list[Any]) -> Callable[[], Recorder]:
    return lambda: Recorder(seen)
