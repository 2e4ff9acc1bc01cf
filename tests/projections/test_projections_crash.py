"""A projection killed (SIGKILL, a real child process) in the middle of a batch or a rebuild
restarts without counting an event twice or missing one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import eventador as ev
from eventador import ProjectionRunner, SqlProjection
from tests.support.domain import Deposited, Withdrawn, deposited, withdrawn

ROOT = Path(__file__).resolve().parents[2]

SETUP = "CREATE TABLE balances (account_id VARCHAR PRIMARY KEY, balance DECIMAL(38, 12), events BIGINT)"
APPLY = """
    INSERT INTO balances
    SELECT account_id, sum(amount), count(*) FROM (
        SELECT account_id, amount FROM new_test_Deposited
        UNION ALL SELECT account_id, -amount FROM new_test_Withdrawn
    ) GROUP BY account_id
    ON CONFLICT (account_id) DO UPDATE SET balance = balance + excluded.balance, events = events + excluded.events
"""

# The child follows the store live in small batches and prints each checkpoint it
# reaches; in "rebuild" mode it then rebuilds (blue/green, in small batches too).
CHILD = """
import asyncio, sys
import eventador as ev
import tests.support.domain
from eventador.projections import ProjectionRunner, SqlProjection
from tests.projections.test_projections_crash import SETUP, APPLY

path, batch, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
store = ev.open_store(path, durability="none")
runner = ProjectionRunner(
    store, [SqlProjection("balances", setup_sql=SETUP, apply_sql=APPLY)], batch_size=batch, progress=False
)

async def main():
    task = asyncio.create_task(runner.run())
    print("ready", flush=True)
    last, reached = store.last_position, 0
    while reached < last:
        await runner.wait_for_position_async(reached + 1)
        reached = runner.checkpoints["balances"]
        print("checkpoint", reached, flush=True)
    if mode == "rebuild":
        print("rebuild", flush=True)
        await runner.rebuild_async("balances")
    print("done", flush=True)
    await runner.stop()
    await task

asyncio.run(main())
"""


def expected(store: ev.EventStore, upto: int) -> dict[str, tuple[Decimal, int]]:
    out: dict[str, tuple[Decimal, int]] = {}
    for r in store.read_all(to_position=upto, event_types=[Deposited, Withdrawn]):
        e = r.event
        assert isinstance(e, (Deposited, Withdrawn))
        sign = 1 if isinstance(e, Deposited) else -1
        balance, n = out.get(e.account_id, (Decimal(0), 0))
        out[e.account_id] = (balance + sign * e.amount, n + 1)
    return out


def read_model(store: ev.EventStore, name: str = "balances") -> dict[str, tuple[Decimal, int]]:
    rows = store.sql(f"SELECT account_id, balance, events FROM {name}").fetchall()
    return {a: (Decimal(b), int(n)) for a, b, n in rows}


def stored_checkpoint(store: ev.EventStore) -> int:
    con = store.connect()
    try:
        rows = con.execute("SELECT position FROM projection_checkpoints WHERE name = 'balances'").fetchall()
        has_table = con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'balances'").fetchall()
    finally:
        con.close()
    return int(rows[0][0]) if rows and has_table[0][0] else -1


def grow_log(path: Path, rng: random.Random, accounts: int = 30, appends: int = 40) -> None:
    """Append about 4,000 events in `appends` appends to random accounts."""
    with ev.open_store(path, durability="none", flush_every=5_000) as store:
        for _ in range(appends):
            sid = f"acc-{rng.randrange(accounts):03d}"
            events: list[ev.Event] = [
                deposited(f"{rng.randint(1, 99_999) / 100:.2f}", sid) if rng.random() < 0.7
                else withdrawn(f"{rng.randint(1, 9_999) / 100:.2f}", sid)
                for _ in range(rng.randint(50, 150))
            ]
            store.append(sid, events)


def run_child(path: Path, batch: int, mode: str, kill_after_lines: int | None, kill_wait: float | None) -> bool:
    """Start the child; SIGKILL it after `kill_after_lines` checkpoint lines (or, in rebuild
    mode, at most `kill_wait` seconds into the rebuild). Returns True if it was killed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(batch), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    assert proc.stdout is not None
    lines = 0
    killed = False
    try:
        for line in proc.stdout:
            if line.startswith("checkpoint"):
                lines += 1
                if kill_after_lines is not None and lines >= kill_after_lines:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = True
                    break
            elif line.startswith("rebuild") and kill_wait is not None:
                try:
                    proc.wait(timeout=kill_wait)  # the child exits early only if the rebuild ended
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = True
                break
            elif line.startswith("done"):
                break
    finally:
        proc.wait(timeout=120)
        stderr = proc.stderr.read() if proc.stderr else ""
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    if not killed:
        assert proc.returncode == 0, stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    return killed


@pytest.mark.slow
def test_a_projection_killed_mid_batch_restarts_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "store"
    rng = random.Random(20260101)
    kills = 0
    checkpoints = []
    for round_ in range(12):
        grow_log(path, rng)
        # Round 0 makes the projection (one build); then follow in small batches, or rebuild.
        rebuild = round_ in (4, 8)
        killed = run_child(
            path,
            batch=rng.randint(200, 700),
            mode="rebuild" if rebuild else "follow",
            kill_after_lines=None if rebuild or round_ == 0 else rng.randint(1, 3),
            kill_wait=rng.uniform(0.05, 0.4) if rebuild else None,
        )
        kills += killed
        # After every crash: the live table is exactly the fold of the events up to its checkpoint.
        with ev.open_store(path, durability="none") as store:
            checkpoint = stored_checkpoint(store)
            if checkpoint >= 0:
                assert read_model(store) == expected(store, checkpoint), f"round {round_}, checkpoint {checkpoint}"
            checkpoints.append(checkpoint)
    assert kills >= 10, (kills, checkpoints)
    assert len(set(checkpoints)) > 5, checkpoints
    with ev.open_store(path, durability="none") as store:
        runner = ProjectionRunner(store, [SqlProjection("balances", setup_sql=SETUP, apply_sql=APPLY)])
        runner.run_until_caught_up()
        fresh = SqlProjection(
            "fresh",
            setup_sql=SETUP.replace("balances", "fresh"),
            apply_sql=APPLY.replace("INTO balances", "INTO fresh"),
        )
        fresh_runner = ProjectionRunner(store, [fresh])
        fresh_runner.run_until_caught_up()
        everything = expected(store, store.last_position)
        assert read_model(store) == read_model(store, "fresh") == everything
        assert sum(n for _, n in everything.values()) == store.last_position
        # Builds cut short left no schema behind.
        schemas = store.sql("SELECT schema_name FROM duckdb_schemas() WHERE schema_name LIKE 'balances__v%'")
        assert len(schemas.fetchall()) == 1
        runner.close()
        fresh_runner.close()
