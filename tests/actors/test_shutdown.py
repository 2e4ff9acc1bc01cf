"""Shutdown and event loops: pending asks fail, post_stop runs, one loop at a time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventador import Actor, ActorError, ActorRef, ActorStoppedError, ActorSystem, LocalActorSystem
from tests.support.actors import DEADLINE, Counter, Gate, Stuck, run, until


def test_shutdown_fails_pending_asks_and_calls_post_stop() -> None:
    events: list[str] = []

    class Hooked(Stuck):
        async def post_stop(self) -> None:
            events.append("post_stop")

    async def main() -> None:
        gate = Gate()
        system = ActorSystem()
        stuck = await system.spawn("stuck", lambda: Hooked(gate))
        counter = await system.spawn("counter", Counter)
        pending = [asyncio.ensure_future(stuck.ask(i, timeout=None)) for i in range(3)]
        await gate.entered.wait()
        await until(lambda: stuck.metrics().mailbox_depth == 2)
        await system.shutdown()
        for ask in pending:
            with pytest.raises(ActorStoppedError):
                await ask
        assert not stuck.is_alive and not counter.is_alive
        with pytest.raises(ActorError, match="shut down"):
            await system.spawn("late", Counter)
        counter.tell("inc")
        assert system.dead_letters[-1].reason == "stopped"
        await system.shutdown()  # a second call does nothing

    run(main())
    assert events == ["post_stop"]


def test_an_actor_can_shut_the_system_down_from_its_handler() -> None:
    class Closer(Actor):
        async def on_message(self, message: Any) -> Any:
            await self.system.shutdown()
            return "closed"

    async def main() -> None:
        system = ActorSystem()
        closer = await system.spawn("closer", Closer)
        counter = await system.spawn("counter", Counter)
        assert await closer.ask("close") == "closed"
        await until(lambda: not closer.is_alive)
        assert not counter.is_alive
        assert system.lookup("closer") is None

    run(main())


def test_async_with_shuts_the_system_down() -> None:
    async def main() -> tuple[ActorRef, ActorSystem]:
        async with ActorSystem() as system:
            ref = await system.spawn("counter", Counter)
        return ref, system

    ref, system = run(main())
    assert not ref.is_alive
    assert system.is_shut_down


def test_a_system_built_outside_the_loop_runs_inside_one() -> None:
    system = LocalActorSystem()  # as a notebook cell would, before any await

    async def main() -> int:
        # The whole conversation runs in one already-running loop, as under Jupyter.
        counter = await system.spawn("counter", Counter)
        await asyncio.gather(*(counter.ask("inc") for _ in range(10)))
        total: int = await counter.ask("get")
        await system.shutdown()
        return total

    assert run(main()) == 10
    assert LocalActorSystem is ActorSystem


def test_a_system_refuses_a_second_loop_while_its_actors_run_on_the_first() -> None:
    system = ActorSystem()
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(asyncio.wait_for(system.spawn("counter", Counter), DEADLINE))
        with pytest.raises(ActorError, match="another event loop"):
            run(system.spawn("other", Counter))
        first.run_until_complete(asyncio.wait_for(system.shutdown(), DEADLINE))
    finally:
        first.close()
    assert system.lookup("counter") is None
