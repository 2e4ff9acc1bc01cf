"""The queue and saga commands: ``eventador queue stats|dead-letters|requeue`` and ``eventador saga list``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

import eventador as ev
from eventador import EventadorError, QueueManager, RetryPolicy, SagaCoordinator
from eventador.cli import queue as queue_cli
from eventador.sagas import COMMANDS_QUEUE
from tests.support.holder import held_by_another_process
from tests.support.saga_domain import CreateOrder, OrderSaga, spawn_targets


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eventador")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    queue_cli.add_parsers(sub)
    return p


def run(argv: Sequence[str]) -> int:
    """What eventador.cli.main does with these commands: errors are one line and exit 1."""
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except EventadorError as exc:
        print(f"eventador: error: {exc}", file=sys.stderr)
        return 1


def saga_factory(order_id: str, store: ev.EventStore, qm: QueueManager) -> Callable[[], OrderSaga]:
    return lambda: OrderSaga(persistence_id=order_id, event_store=store, duraq_manager=qm)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a completed saga, a compensated one, and a dead letter."""
    path = tmp_path_factory.mktemp("cli") / "store"
    clock = ev.ManualClock(datetime(2026, 1, 1, tzinfo=UTC))

    async def build() -> None:
        store = ev.open_store(path, clock=clock)
        qm = QueueManager(store, retry_policy=RetryPolicy(max_attempts=2, jitter=False))
        system = ev.ActorSystem(clock=clock)
        await spawn_targets(system, store)
        coordinator = SagaCoordinator(qm, store, system)
        orders = [
            CreateOrder(order_id="o-1", amount=5.0),
            CreateOrder(order_id="o-2", amount=5.0, fail_at="shipping"),
            CreateOrder(order_id="o-3", amount=5.0, cooling_off=60.0),
        ]
        for order in orders:
            saga = await system.spawn(order.order_id, saga_factory(order.order_id, store, qm))
            await saga.ask(order)
        await coordinator.run_until_idle()
        qm.enqueue("emails", {"to": "ada@example.com"})
        for _ in range(2):
            lease = qm.dequeue("emails")
            assert lease is not None
            qm.nack(lease, "smtp down")
            clock.advance(seconds=10)
        await coordinator.stop()
        await system.shutdown()
        qm.close()
        store.close()

    asyncio.run(build())
    return path


def test_queue_stats(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["queue", "stats", str(store_dir), "--format", "json"]) == 0
    rows = {row["queue"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["emails"]["dead"] == 1
    assert rows["eventador.saga.timeouts"]["depth"] == 1  # o-3 waits on its cooling-off timer
    assert COMMANDS_QUEUE not in rows or rows[COMMANDS_QUEUE]["depth"] == 0


def test_dead_letters_and_requeue(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["queue", "dead-letters", str(store_dir), "--queue", "emails", "--format", "json"]) == 0
    (dead,) = json.loads(capsys.readouterr().out)
    assert dead["queue"] == "emails" and dead["attempts"] == 2 and "smtp down" in dead["error"]
    assert run(["queue", "dead-letters", str(store_dir), "--messages"]) == 0
    assert "ada@example.com" in capsys.readouterr().out
    assert run(["queue", "requeue", str(store_dir), str(dead["id"])]) == 0
    assert capsys.readouterr().out.strip() == "requeued 1 message"
    assert run(["queue", "requeue", str(store_dir), str(dead["id"])]) == 1
    assert "no message with id" in capsys.readouterr().err
    assert run(["queue", "requeue", str(store_dir), "--all"]) == 0
    assert capsys.readouterr().out.strip() == "requeued 0 messages"
    assert run(["queue", "requeue", str(store_dir)]) == 1
    assert "pass --all" in capsys.readouterr().err


def test_saga_list(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["saga", "list", str(store_dir), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "saga_id,saga_type,status,updated_at"
    assert [line.split(",")[2] for line in lines[1:]] == ["COMPLETED", "COMPENSATED", "RUNNING"]
    assert run(["saga", "list", str(store_dir), "--status", "completed", "--status", "RUNNING"]) == 0
    out = capsys.readouterr().out
    assert "o-1" in out and "o-3" in out and "o-2" not in out
    assert run(["saga", "list", str(store_dir), "--active", "--state", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["saga_id"] == "o-3" and '"cooling_off": 60.0' in row["state"]


def test_a_store_held_by_a_writer_gives_one_clear_line(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with held_by_another_process(store_dir):
        for argv in (["queue", "stats"], ["saga", "list"], ["queue", "dead-letters"]):
            assert run([*argv, str(store_dir)]) == 1
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0
            assert err.startswith("eventador: error: store") and "stop it, then run this command again" in err


def test_not_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["queue", "stats", str(tmp_path)]) == 1
    assert "no eventador store" in capsys.readouterr().err


def test_every_command_has_help() -> None:
    top = parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        assert command.description, name
        actions = next(a for a in command._actions if isinstance(a, argparse._SubParsersAction))
        for action_name, action in actions.choices.items():
            assert action.description, f"{name} {action_name}"
        assert all(choice.help for choice in actions._choices_actions)


def test_bad_status_is_a_usage_error(store_dir: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["saga", "list", str(store_dir), "--status", "DONE"])
    assert exit_info.value.code == 2
