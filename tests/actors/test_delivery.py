"""Delivery: tell and ask, order, timeouts, names, lookup and stopping; an actor's context."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventador import (
    Actor,
    ActorContext,
    ActorError,
    ActorNameInUseError,
    ActorNotFoundError,
    ActorStoppedError,
    ActorSystem,
    AskTimeoutError,
)
from tests.support.actors import Counter, Stuck, run


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
