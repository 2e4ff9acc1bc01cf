"""Passivation: idle actors hold no task, are passivated and come back with the next message."""

from __future__ import annotations

import asyncio

import pytest

from eventador import ActorNameInUseError, ActorStoppedError, ActorSystem, InvalidInputError, ManualClock, Supervisor
from tests.support.actors import Boom, Counter, Gate, Recorder, Stuck, run


def test_an_idle_actor_is_passivated_and_the_next_message_brings_it_back() -> None:
    events: list[str] = []

    class Sleepy(Counter):
        def pre_start(self) -> None:
            events.append("pre_start")

        def post_stop(self) -> None:
            events.append("post_stop")

    async def main() -> None:
        clock = ManualClock()
        async with ActorSystem(clock=clock, passivation_interval=None) as system:
            ref = await system.spawn("sleepy", Sleepy, passivate_after=30.0)
            await ref.ask("inc")
            clock.advance(seconds=29)
            assert await system.passivate_idle() == []
            clock.advance(seconds=1)
            assert await system.passivate_idle() == ["sleepy"]
            assert events == ["pre_start", "post_stop"]
            assert ref.metrics().state == "passivated"
            assert ref.is_alive
            assert system.lookup("sleepy") is ref
            with pytest.raises(ActorNameInUseError):
                await system.spawn("sleepy", Counter)

            ref.tell("inc")  # wakes a fresh instance from the factory
            assert await ref.ask("get") == 1
            assert events == ["pre_start", "post_stop", "pre_start"]
            assert ref.metrics().state == "running"
            assert ref.metrics().processed == 3
            assert list(system.dead_letters) == []

    run(main())


def test_a_busy_actor_or_one_without_passivate_after_is_not_passivated() -> None:
    async def main() -> None:
        clock = ManualClock()
        async with ActorSystem(clock=clock, passivation_interval=None) as system:
            gate = Gate()
            await system.spawn("forever", Counter)
            stuck = await system.spawn("stuck", lambda: Stuck(gate), passivate_after=1.0)
            stuck.tell("hold")
            await gate.entered.wait()
            clock.advance(seconds=100)
            assert await system.passivate_idle() == []

    run(main())


def test_stopping_a_passivated_actor_unregisters_it() -> None:
    async def main() -> None:
        clock = ManualClock()
        async with ActorSystem(clock=clock, passivation_interval=None) as system:
            ref = await system.spawn("sleepy", Counter, passivate_after=1.0)
            clock.advance(seconds=2)
            assert await system.passivate_idle() == ["sleepy"]
            await system.stop("sleepy")
            assert system.lookup("sleepy") is None
            with pytest.raises(ActorStoppedError):
                await ref.ask("get")

    run(main())


def test_messages_sent_while_an_actor_passivates_bring_it_back() -> None:
    async def main() -> None:
        gate = Gate()

        class Sleepy(Counter):
            async def post_stop(self) -> None:
                gate.entered.set()
                await gate.release.wait()

        clock = ManualClock()
        async with ActorSystem(clock=clock, passivation_interval=None) as system:
            ref = await system.spawn("sleepy", Sleepy, passivate_after=1.0)
            clock.advance(seconds=1)
            passivating = asyncio.ensure_future(system.passivate_idle())
            await gate.entered.wait()  # post_stop is running
            ref.tell("inc")
            answer = asyncio.ensure_future(ref.ask("get"))
            gate.release.set()
            assert await passivating == ["sleepy"]
            assert await answer == 1
            assert list(system.dead_letters) == []

    run(main())


def test_a_reactivation_that_fails_is_supervised_and_fails_the_waiting_ask() -> None:
    builds: list[int] = []

    def factory() -> Counter:
        builds.append(len(builds))
        if len(builds) > 1:
            raise Boom("store unavailable")
        return Counter()

    async def main() -> None:
        clock = ManualClock()
        async with ActorSystem(clock=clock, passivation_interval=None) as system:
            ref = await system.spawn("sleepy", factory, supervisor=Supervisor.escalate(), passivate_after=1.0)
            clock.advance(seconds=1)
            assert await system.passivate_idle() == ["sleepy"]
            with pytest.raises(ActorStoppedError):
                await ref.ask("get")
            [failure] = system.failures
            assert (failure.actor, failure.message, str(failure.error)) == (
                "sleepy",
                None,
                "store unavailable",
            )
            assert system.lookup("sleepy") is None

    run(main())


def test_invalid_passivate_after_is_refused_before_anything_is_registered() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            with pytest.raises(InvalidInputError, match="passivate_after"):
                await system.spawn("sleepy", Counter, passivate_after=0)
            assert system.lookup("sleepy") is None

    run(main())


def test_the_background_check_passivates_idle_actors() -> None:
    async def main() -> None:
        stopped = asyncio.Event()

        class Sleepy(Counter):
            def post_stop(self) -> None:
                stopped.set()

        clock = ManualClock()
        async with ActorSystem(clock=clock, passivation_interval=0.001) as system:
            ref = await system.spawn("sleepy", Sleepy, passivate_after=5.0)
            clock.advance(seconds=5)
            await stopped.wait()
            assert ref.metrics().state == "passivated"

    run(main())


def test_idle_actors_hold_no_task_and_the_next_message_wakes_them_in_order() -> None:
    events: list[str] = []

    class Tracked(Recorder):
        def post_stop(self) -> None:
            events.append("post_stop")

    async def main() -> None:
        async with ActorSystem(passivation_interval=None) as system:
            before = len(asyncio.all_tasks())
            refs = [await system.spawn(f"r-{i}", lambda: Tracked([])) for i in range(50)]
            for ref in refs:
                await ref.ask("hello")
            await asyncio.sleep(0)  # the tasks that parked finish
            assert len(asyncio.all_tasks()) == before  # 50 idle actors, no task each
            for i in range(5):
                refs[0].tell(i)  # wakes it; messages keep their order
            assert await refs[0].ask("get") == ["hello", 0, 1, 2, 3, 4]
            await system.stop(refs[1])  # stopping an idle actor still runs post_stop
            assert events == ["post_stop"] and not refs[1].is_alive

    run(main())
