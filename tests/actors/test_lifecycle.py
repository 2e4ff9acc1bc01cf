"""Lifecycle: start and stop hooks, in order, and what a failing or interrupted start leaves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventador import Actor, ActorStoppedError, ActorSystem
from tests.support.actors import Boom, Counter, Gate, Recorder, run, until


def test_lifecycle_hooks_run_in_order_and_may_be_async() -> None:
    events: list[str] = []

    class Noisy(Actor):
        def __init__(self) -> None:
            events.append("factory")

        async def pre_start(self) -> None:
            events.append("pre_start")

        async def start(self) -> None:
            events.append("start")

        async def on_message(self, message: Any) -> Any:
            events.append(f"message {message}")
            if message == "boom":
                raise Boom("boom")
            return None

        def pre_restart(self, error: BaseException) -> None:
            events.append(f"pre_restart {error}")

        async def post_restart(self, error: BaseException) -> None:
            events.append(f"post_restart {error}")

        def post_stop(self) -> None:
            events.append("post_stop")

    async def main() -> None:
        async with ActorSystem() as system:
            ref = await system.spawn("noisy", Noisy)
            events.append("spawned")
            await ref.ask(1)
            with pytest.raises(Boom):
                await ref.ask("boom")
            await ref.ask(2)
            await system.stop(ref)
            events.append("stopped")

    run(main())
    assert events == [
        "factory",
        "pre_start",
        "start",
        "spawned",
        "message 1",
        "message boom",
        "pre_restart boom",
        "factory",
        "post_restart boom",
        "start",
        "message 2",
        "post_stop",
        "stopped",
    ]


def test_default_restart_hooks_call_post_stop_and_pre_start() -> None:
    events: list[str] = []

    class Plain(Counter):
        def pre_start(self) -> None:
            events.append("pre_start")

        async def post_stop(self) -> None:
            events.append("post_stop")

    async def main() -> None:
        async with ActorSystem() as system:
            ref = await system.spawn("plain", Plain)
            with pytest.raises(Boom):
                await ref.ask("boom")
            await ref.ask("get")

    run(main())
    assert events == ["pre_start", "post_stop", "pre_start", "post_stop"]


def test_messages_sent_while_start_runs_wait_in_order() -> None:
    async def main() -> list[Any]:
        entered, release = asyncio.Event(), asyncio.Event()
        seen: list[Any] = []

        class SlowStart(Recorder):
            async def start(self) -> None:
                entered.set()
                await release.wait()
                self.seen.append("started")

        async with ActorSystem() as system:
            spawning = asyncio.ensure_future(system.spawn("slow", lambda: SlowStart(seen)))
            await entered.wait()
            early = system.lookup("slow")
            assert early is not None
            for i in range(3):
                early.tell(i)
            assert not spawning.done()
            release.set()
            ref = await spawning
            assert ref is early
            result: list[Any] = await ref.ask("get")
            return result

    assert run(main()) == ["started", 0, 1, 2]


def test_spawn_raises_what_start_raised_and_frees_the_name() -> None:
    events: list[str] = []

    class Broken(Actor):
        def pre_start(self) -> None:
            events.append("pre_start")

        async def start(self) -> None:
            raise Boom("recovery failed")

        def post_stop(self) -> None:
            events.append("post_stop")

    async def main() -> None:
        async with ActorSystem() as system:
            with pytest.raises(Boom, match="recovery failed"):
                await system.spawn("broken", Broken)
            assert system.lookup("broken") is None
            await system.spawn("broken", Counter)

    run(main())
    assert events == ["pre_start", "post_stop"]


def test_stopping_an_actor_while_it_starts_makes_spawn_raise() -> None:
    events: list[str] = []

    async def main() -> None:
        gate = Gate()

        class SlowStart(Counter):
            def pre_start(self) -> None:
                events.append("pre_start")

            async def start(self) -> None:
                gate.entered.set()
                await gate.release.wait()

            def post_stop(self) -> None:
                events.append("post_stop")

        async with ActorSystem() as system:
            spawning = asyncio.ensure_future(system.spawn("slow", SlowStart))
            await gate.entered.wait()
            await system.stop("slow")
            with pytest.raises(ActorStoppedError):
                await spawning
            assert system.lookup("slow") is None

    run(main())
    assert events == ["pre_start", "post_stop"]


def test_stopping_an_actor_before_its_task_first_runs_still_cleans_up() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            spawning = asyncio.ensure_future(system.spawn("early", Counter))
            # The spawn registers the name and schedules the actor's task; stop it
            # before that task has taken a single step.
            await until(lambda: system.lookup("early") is not None)
            await system.stop("early")
            with pytest.raises(ActorStoppedError):
                await spawning
            assert system.lookup("early") is None

    run(main())


def test_a_failing_pre_start_owes_no_post_stop() -> None:
    events: list[str] = []

    class Broken(Actor):
        def pre_start(self) -> None:
            raise Boom("no")

        def post_stop(self) -> None:
            events.append("post_stop")

    async def main() -> None:
        async with ActorSystem() as system:
            with pytest.raises(Boom):
                await system.spawn("broken", Broken)

    run(main())
    assert events == []
