"""Supervision: restart, resume, stop and escalate, restart limits and backoff; a rejected command is no failure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import eventador as ev
from eventador import ActorStoppedError, ActorSystem, InvalidInputError, ManualClock, Supervisor
from tests.support.actors import Boom, Counter, RecordingSleep, recorder, run


def test_handler_error_reaches_the_asker_and_restart_builds_a_fresh_instance() -> None:
    built: list[Counter] = []

    def factory() -> Counter:
        built.append(Counter())
        return built[-1]

    async def main() -> None:
        async with ActorSystem() as system:
            counter = await system.spawn("counter", factory)
            await counter.ask("inc")
            with pytest.raises(Boom):
                await counter.ask("boom")
            assert await counter.ask("get") == 0  # the new instance starts over
            assert len(built) == 2
            metrics = counter.metrics()
            assert (metrics.failures, metrics.restarts, metrics.processed) == (1, 1, 3)
            assert [(d.message, d.reason) for d in system.dead_letters] == [("boom", "failed: Boom: boom")]
            assert list(system.failures) == []

    run(main())


def test_resume_keeps_the_instance_and_its_state() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            counter = await system.spawn("counter", Counter, supervisor=Supervisor.resume())
            await counter.ask("inc")
            with pytest.raises(Boom):
                await counter.ask("boom")
            assert await counter.ask("inc") == 2
            assert counter.metrics().restarts == 0

    run(main())


def test_stop_directive_stops_the_actor_without_recording_a_system_failure() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            counter = await system.spawn("counter", Counter, supervisor=Supervisor.stop())
            counter.tell("boom")
            counter.tell("inc")
            with pytest.raises(ActorStoppedError):
                await counter.ask("get")
            assert not counter.is_alive
            assert system.lookup("counter") is None
            assert list(system.failures) == []
            assert [(d.message, d.reason) for d in system.dead_letters][1:] == [
                ("inc", "stopped"),
                ("get", "stopped"),
            ]

    run(main())


def test_escalate_records_the_failure_in_the_system_and_stops_the_actor() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            counter = await system.spawn("counter", Counter, supervisor=Supervisor.escalate())
            with pytest.raises(Boom):
                await counter.ask("boom")
            with pytest.raises(ActorStoppedError):
                await counter.ask("inc")
            [failure] = system.failures
            assert failure.actor == "counter"
            assert failure.message == "boom"
            assert isinstance(failure.error, Boom)
            assert failure.outcome.startswith("escalated")

    run(main())


def test_restart_gives_up_after_more_than_max_restarts_within_the_window() -> None:
    async def main() -> None:
        clock = ManualClock()
        supervisor = Supervisor.restart(max_restarts=2, within=10.0)
        async with ActorSystem(clock=clock) as system:
            counter = await system.spawn("counter", Counter, supervisor=supervisor)
            for _ in range(2):
                with pytest.raises(Boom):
                    await counter.ask("boom")
                clock.advance(seconds=1)
            assert counter.is_alive
            with pytest.raises(Boom):
                await counter.ask("boom")
            with pytest.raises(ActorStoppedError):
                await counter.ask("get")
            assert counter.metrics().restarts == 2
            [failure] = system.failures
            assert failure.outcome == "gave up after 2 restarts within 10 s: stopped"

    run(main())


def test_restarts_older_than_the_window_do_not_count() -> None:
    async def main() -> None:
        clock = ManualClock()
        supervisor = Supervisor.restart(max_restarts=2, within=10.0)
        async with ActorSystem(clock=clock) as system:
            counter = await system.spawn("counter", Counter, supervisor=supervisor)
            for _ in range(5):
                with pytest.raises(Boom):
                    await counter.ask("boom")
                clock.advance(seconds=6)  # at most two restarts in any 10 s
            assert await counter.ask("inc") == 1
            assert counter.metrics().restarts == 5
            assert list(system.failures) == []

    run(main())


def test_backoff_doubles_from_min_to_max_using_the_injected_sleep() -> None:
    sleep = RecordingSleep()

    async def main() -> None:
        supervisor = Supervisor.restart(max_restarts=10, backoff=(0.1, 1.0))
        async with ActorSystem(sleep=sleep) as system:
            counter = await system.spawn("counter", Counter, supervisor=supervisor)
            for _ in range(5):
                with pytest.raises(Boom):
                    await counter.ask("boom")
            await counter.ask("inc")  # a success ends the run of consecutive restarts
            with pytest.raises(Boom):
                await counter.ask("boom")

    run(main())
    assert sleep.delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 0.1])


def test_a_fixed_backoff_waits_the_same_each_time_and_no_backoff_never_sleeps() -> None:
    fixed, none = RecordingSleep(), RecordingSleep()

    async def fail_three_times(system: ActorSystem, supervisor: Supervisor) -> None:
        counter = await system.spawn("counter", Counter, supervisor=supervisor)
        for _ in range(3):
            with pytest.raises(Boom):
                await counter.ask("boom")

    async def main() -> None:
        async with ActorSystem(sleep=fixed) as system:
            await fail_three_times(system, Supervisor.restart(backoff=0.5))
        async with ActorSystem(sleep=none) as system:
            await fail_three_times(system, Supervisor.restart())

    run(main())
    assert fixed.delays == [0.5, 0.5, 0.5]
    assert none.delays == []


def test_the_mailbox_and_its_order_survive_a_restart() -> None:
    seen: list[Any] = []

    async def main() -> list[Any]:
        async with ActorSystem() as system:
            ref = await system.spawn("recorder", recorder(seen))
            for message in [1, 2, "boom", 3, 4, "boom", 5]:
                ref.tell(message)
            result: list[Any] = await ref.ask("get")
            assert ref.metrics().restarts == 2
            return result

    assert run(main()) == [1, 2, 3, 4, 5]


def test_a_failing_restart_is_retried_until_the_limit() -> None:
    attempts: list[int] = []

    class Fragile(Counter):
        def pre_start(self) -> None:
            attempts.append(len(attempts))
            if 1 <= len(attempts) - 1 <= 1:  # the first restart's start fails once
                raise Boom("cannot start")

    async def main() -> None:
        async with ActorSystem() as system:
            ref = await system.spawn("fragile", Fragile, supervisor=Supervisor.restart(max_restarts=3))
            with pytest.raises(Boom):
                await ref.ask("boom")
            assert await ref.ask("inc") == 1
            metrics = ref.metrics()
            assert (metrics.restarts, metrics.failures) == (2, 2)

    run(main())
    assert attempts == [0, 1, 2]


def test_supervisor_rejects_nonsense_and_reads_well() -> None:
    with pytest.raises(InvalidInputError, match="max_restarts"):
        Supervisor.restart(max_restarts=-1)
    with pytest.raises(ValueError, match="within"):
        Supervisor.restart(within=0)
    with pytest.raises(ValueError, match="min <= max"):
        Supervisor.restart(backoff=(2.0, 1.0))
    with pytest.raises(ValueError, match="min must be above 0"):
        Supervisor.restart(backoff=(0.0, 1.0))
    assert repr(Supervisor.restart()) == "Supervisor.restart(max_restarts=3, within=60, backoff=0)"
    assert repr(Supervisor.escalate()) == "Supervisor.escalate()"


def test_a_rejected_command_answers_the_asker_without_counting_as_a_failure() -> None:
    class Strict(ev.Actor):
        async def on_message(self, message: object) -> object:
            if message == "bad":
                raise ev.CommandRejected("no")
            return "ok"

    async def scenario() -> None:
        async with ev.ActorSystem() as system:
            ref = await system.spawn("strict", Strict)
            for _ in range(5):  # more than the default restart limit
                with pytest.raises(ev.CommandRejected):
                    await ref.ask("bad")
            assert await ref.ask("good") == "ok"
            metrics = ref.metrics()
            assert metrics.failures == 0 and metrics.restarts == 0

    asyncio.run(scenario())
