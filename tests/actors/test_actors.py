"""The in-process actor system: delivery, asks, dead letters, supervision, lifecycle,
metrics, passivation and shutdown. Nothing here sleeps to wait: tests wait on asks,
events and futures, each run under a deadline so a hang fails instead of stalling."""

from __future__ import annotations

import asyncio
import doctest
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pandas as pd
import pytest

import eventador as ev
import eventador.actors
import eventador.actors.actor
import eventador.actors.supervision
import eventador.actors.system
from eventador.actors import (
    Actor,
    ActorContext,
    ActorMetrics,
    ActorRef,
    ActorSystem,
    DeadLetter,
    LocalActorSystem,
    Supervisor,
)
from eventador.clock import ManualClock
from eventador.errors import (
    ActorError,
    ActorNameInUseError,
    ActorNotFoundError,
    ActorStoppedError,
    AskTimeoutError,
    InvalidInputError,
)
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


# -- delivery -----------------------------------------------------------------------


def test_messages_are_handled_one_at_a_time_in_order() -> None:
    class Careful(Actor):
        def __init__(self) -> None:
            self.seen: list[int] = []
            self.inside = 0
            self.overlapped = False

        async def on_message(self, message: Any) -> Any:
            if message == "report":
                return self.seen, self.overlapped
            self.inside += 1
            self.overlapped |= self.inside > 1
            await asyncio.sleep(0)  # give any other delivery the chance to interleave
            self.seen.append(message)
            self.inside -= 1
            return None

    async def main() -> tuple[list[int], bool]:
        async with ActorSystem() as system:
            ref = await system.spawn("careful", Careful)
            for i in range(1000):
                ref.tell(i)
            result: tuple[list[int], bool] = await ref.ask("report")
            return result

    seen, overlapped = run(main())
    assert seen == list(range(1000))
    assert not overlapped


def test_ask_returns_what_on_message_returned() -> None:
    async def main() -> list[Any]:
        async with ActorSystem() as system:
            counter = await system.spawn("counter", Counter)
            return [await counter.ask("inc"), await counter.ask("inc"), await counter.ask("get")]

    assert run(main()) == [1, 2, 2]


def test_tell_returns_before_the_message_is_handled() -> None:
    async def main() -> tuple[int, int]:
        async with ActorSystem() as system:
            counter = await system.spawn("counter", Counter)
            counter.tell("inc")
            before = counter.metrics().processed
            after: int = await counter.ask("get")
            return before, after

    assert run(main()) == (0, 1)


def test_actors_reach_each_other_through_their_context() -> None:
    class Forwarder(Actor):
        async def on_message(self, message: Any) -> Any:
            assert self.context.name == "forwarder"
            assert self.self_ref is self.system.lookup("forwarder")
            target = self.system.lookup("counter")
            assert target is not None
            return await target.ask(message)

    async def main() -> int:
        async with ActorSystem() as system:
            await system.spawn("counter", Counter)
            forwarder = await system.spawn("forwarder", Forwarder)
            await forwarder.ask("inc")
            total: int = await forwarder.ask("inc")
            return total

    assert run(main()) == 2


def test_context_outside_a_system_raises_actor_error() -> None:
    with pytest.raises(ActorError, match="not running in an ActorSystem"):
        _ = Counter().context


def test_system_tell_and_ask_reach_actors_by_name() -> None:
    async def main() -> int:
        async with ActorSystem() as system:
            await system.spawn("counter", Counter)
            system.tell("counter", "inc")
            total: int = await system.ask("counter", "inc")
            return total

    assert run(main()) == 2


def test_ask_timeout_raises_ask_timeout_error_which_is_a_timeout_error() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            stuck = await system.spawn("stuck", Stuck)
            with pytest.raises(AskTimeoutError) as caught:
                await stuck.ask("hello", timeout=0.01)
            assert isinstance(caught.value, TimeoutError)
            assert caught.value.name == "stuck"
            assert caught.value.timeout == 0.01

    run(main())


def test_message_that_timed_out_is_still_handled_later() -> None:
    async def main() -> list[Any]:
        release = asyncio.Event()
        seen: list[Any] = []

        class Gate(Actor):
            async def on_message(self, message: Any) -> Any:
                if message == "wait":
                    await release.wait()
                    return None
                if message == "get":
                    return list(seen)
                seen.append(message)
                return message

        async with ActorSystem() as system:
            gate = await system.spawn("gate", Gate)
            gate.tell("wait")
            with pytest.raises(AskTimeoutError):
                await gate.ask("late", timeout=0.01)
            release.set()
            result: list[Any] = await gate.ask("get")
            return result

    assert run(main()) == ["late"]


def test_ask_to_stopped_actor_raises_immediately() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            counter = await system.spawn("counter", Counter)
            await system.stop(counter)
            assert not counter.is_alive
            # No timeout at all: only an immediate error can end this await.
            with pytest.raises(ActorStoppedError) as caught:
                await counter.ask("inc", timeout=None)
            assert caught.value.name == "counter"

    run(main())


def test_spawn_with_a_name_in_use_raises() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            await system.spawn("counter", Counter)
            with pytest.raises(ActorNameInUseError) as caught:
                await system.spawn("counter", Counter)
            assert caught.value.name == "counter"

    run(main())


def test_a_stopped_actors_name_can_be_spawned_again_with_a_new_ref() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            first = await system.spawn("counter", Counter)
            await first.ask("inc")
            await system.stop("counter")
            assert system.lookup("counter") is None
            second = await system.spawn("counter", Counter)
            assert second is not first
            assert await second.ask("get") == 0
            assert not first.is_alive

    run(main())


def test_lookup_returns_the_ref_or_none() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            ref = await system.spawn("counter", Counter)
            assert system.lookup("counter") is ref
            assert system.lookup("nobody") is None
            assert ref.name == "counter"
            assert ref.is_alive

    run(main())


def test_stop_of_an_unknown_name_raises_actor_not_found() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            with pytest.raises(ActorNotFoundError):
                await system.stop("nobody")

    run(main())


def test_stopping_twice_does_nothing_the_second_time() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            ref = await system.spawn("counter", Counter)
            await system.stop(ref)
            await system.stop(ref)
            assert not ref.is_alive

    run(main())


def test_an_actor_can_stop_itself_after_the_current_message() -> None:
    class Quitter(Actor):
        async def on_message(self, message: Any) -> Any:
            await self.system.stop(self.self_ref)
            return "bye"

    async def main() -> None:
        async with ActorSystem() as system:
            quitter = await system.spawn("quitter", Quitter)
            quitter.tell("first")
            quitter.tell("second")
            with pytest.raises(ActorStoppedError):
                await quitter.ask("third")
            assert not quitter.is_alive
            assert [d.message for d in system.dead_letters] == ["second", "third"]

    run(main())


# -- dead letters -------------------------------------------------------------------


def test_tell_to_a_stopped_actor_is_a_dead_letter(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()

    async def main() -> list[DeadLetter]:
        async with ActorSystem(clock=clock) as system:
            ref = await system.spawn("counter", Counter)
            await system.stop(ref)
            with caplog.at_level(logging.WARNING, logger="eventador.actors"):
                ref.tell("inc")
            return list(system.dead_letters)

    assert run(main()) == [DeadLetter("counter", "inc", "stopped", clock.now())]
    assert "dead letter for actor 'counter' (stopped)" in caplog.text


def test_tell_to_an_unknown_name_is_a_dead_letter_and_ask_raises() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            system.tell("nobody", "hello")
            with pytest.raises(ActorNotFoundError):
                await system.ask("nobody", "anyone?")
            assert [(d.recipient, d.message, d.reason) for d in system.dead_letters] == [
                ("nobody", "hello", "unknown actor"),
                ("nobody", "anyone?", "unknown actor"),
            ]

    run(main())


def test_an_unhandled_message_is_a_dead_letter(caplog: pytest.LogCaptureFixture) -> None:
    class Deaf(Actor):
        pass

    async def main() -> None:
        async with ActorSystem() as system:
            deaf = await system.spawn("deaf", Deaf)
            counter = await system.spawn("counter", Counter)
            with caplog.at_level(logging.WARNING, logger="eventador.actors"):
                assert await deaf.ask("hello") is None
                assert await counter.ask("jump") is None
            assert [(d.recipient, d.message, d.reason) for d in system.dead_letters] == [
                ("deaf", "hello", "unhandled"),
                ("counter", "jump", "unhandled"),
            ]

    run(main())
    assert "(unhandled): 'hello'" in caplog.text


def test_messages_left_in_the_mailbox_at_stop_become_dead_letters() -> None:
    async def main() -> None:
        gate = Gate()
        async with ActorSystem() as system:
            stuck = await system.spawn("stuck", lambda: Stuck(gate))
            busy = asyncio.ensure_future(stuck.ask("in progress", timeout=None))
            await gate.entered.wait()
            stuck.tell("queued 1")
            waiting = asyncio.ensure_future(stuck.ask("queued 2", timeout=None))
            await until(lambda: stuck.metrics().mailbox_depth == 2)
            await system.stop(stuck)
            with pytest.raises(ActorStoppedError):
                await busy
            with pytest.raises(ActorStoppedError):
                await waiting
            assert [(d.message, d.reason) for d in system.dead_letters] == [
                ("queued 1", "stopped"),
                ("queued 2", "stopped"),
            ]

    run(main())


def test_dead_letters_are_bounded_by_history_limit() -> None:
    async def main() -> None:
        async with ActorSystem(history_limit=3) as system:
            for i in range(10):
                system.tell("nobody", i)
            assert [d.message for d in system.dead_letters] == [7, 8, 9]

    run(main())


# -- supervision --------------------------------------------------------------------


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


# -- lifecycle ----------------------------------------------------------------------


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


# -- metrics and reprs --------------------------------------------------------------


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


# -- passivation --------------------------------------------------------------------


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


# -- shutdown and loops -------------------------------------------------------------


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


def test_context_fields_are_the_name_ref_and_system() -> None:
    async def main() -> None:
        class Introspective(Actor):
            async def on_message(self, message: Any) -> Any:
                return self.context

        async with ActorSystem() as system:
            ref = await system.spawn("me", Introspective)
            context = await ref.ask("who")
            assert context == ActorContext(name="me", self_ref=ref, system=system)

    run(main())


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
