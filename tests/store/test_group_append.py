"""Durable appends from many actors of one loop share one lock, one log write and one fsync."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import eventador as ev
from tests.support.aggregate_domain import CounterActor, CounterIncrementedEvent, IncrementCommand
from tests.support.aio import run


def inc(actor: str, value: int = 1) -> IncrementCommand:
    return IncrementCommand(aggregate_id=actor, value=value)


def test_appends_of_many_actors_all_land_and_share_fsyncs(tmp_path: Path) -> None:
    async def main() -> None:
        with ev.open_store(tmp_path / "store", durability="fsync") as store:
            counters = [CounterActor(persistence_id=f"c-{i}", event_store=store) for i in range(100)]
            wal = store._wal
            assert wal is not None
            before = wal.syncs
            for round_ in range(3):
                await asyncio.gather(*(c.on_message(inc(c.persistence_id, round_ + 1)) for c in counters))
            syncs = wal.syncs - before
            assert all(c.value == 6 and c.sequence_number == 3 for c in counters)
            assert all(store.stream_version(f"c-{i}") == 3 for i in range(100))
            assert syncs <= 30, f"{syncs} fsyncs for 300 appends"  # 300 alone; a few per round together
        with ev.open_store(tmp_path / "store") as reopened:  # and they are durable
            assert [e.event.value for e in reopened.read_stream("c-42")] == [1, 2, 3]

    run(main())


def test_a_conflict_fails_only_its_own_append_in_a_shared_batch(tmp_path: Path) -> None:
    async def main() -> None:
        with ev.open_store(tmp_path / "store", durability="fsync") as store:
            store.append("twin", CounterIncrementedEvent(aggregate_id="twin", value=1))
            first = CounterActor(persistence_id="twin", event_store=store)
            second = CounterActor(persistence_id="twin", event_store=store)  # a second incarnation
            other = CounterActor(persistence_id="other", event_store=store)
            for actor in (first, second, other):
                await actor.start()
            results = await asyncio.gather(
                first.on_message(inc("twin", 10)),
                second.on_message(inc("twin", 100)),
                other.on_message(inc("other", 5)),
                return_exceptions=True,
            )
            assert results[0] == 11 and results[2] == 5
            assert isinstance(results[1], ev.ConcurrencyError)
            assert [e.event.value for e in store.read_stream("twin")] == [1, 10]
            assert await second.on_message("get") == 11  # it caught up with the winner's event

    run(main())


def test_a_bad_event_fails_its_command_at_once_and_writes_nothing(tmp_path: Path) -> None:
    class Broken(ev.Event, event_type="test.group.Broken"):
        value: object

    class Writer(ev.PersistentActor):
        async def command_handler(self, command: object) -> None:
            await self.persist_events([CounterIncrementedEvent(aggregate_id="w", value=1), Broken(value=object())])

    async def main() -> None:
        with ev.open_store(tmp_path / "store", durability="fsync") as store:
            writer = Writer(persistence_id="w", event_store=store)
            with pytest.raises(ev.SerializationError):
                await writer.on_message("go")
            assert store.stream_version("w") == 0 and store.last_position == 0

    run(main())
