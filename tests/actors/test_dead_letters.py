"""Dead letters: what is sent to no one, left unhandled or left in a stopped mailbox."""

from __future__ import annotations

import asyncio
import logging

import pytest

from eventador import Actor, ActorNotFoundError, ActorStoppedError, ActorSystem, DeadLetter, ManualClock
from tests.support.actors import Counter, Gate, Stuck, run, until


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
