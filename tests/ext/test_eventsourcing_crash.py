"""An eventsourcing process application killed with SIGKILL at random moments: after each
restart its events and its tracking records agree, so no leader event is processed twice
or skipped (issue 18, part 5)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eventsourcing.application import AggregateNotFoundError

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.workers.es_follower_child import AUDIT_ID, Audit, AuditTrail, Ledger, environment

CHILD = Path(__file__).resolve().parents[1] / "workers" / "es_follower_child.py"


def _run_and_kill(directory: Path, seed: int, rng: random.Random) -> None:
    """Start the child, let it work a random while, kill it with SIGKILL."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), str(seed)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        for _ in range(rng.randint(1, 6)):  # some steps done and acknowledged ...
            assert child.stdout.readline(), "the child stopped early"
        time.sleep(rng.uniform(0, 0.05))  # ... then anywhere in the next ones
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL


def _check(directory: Path) -> tuple[int, int]:
    """Restart both applications, check the follower against its tracking, catch up and check
    again. Returns (leader notifications, follower's tracked position) after catching up."""
    env = environment(str(directory))
    ledger, audit = Ledger(env=env), Audit(env=env)
    try:
        for catch_up in (False, True):
            if catch_up:
                audit.follow(ledger.name, ledger.notification_log)
                audit.pull_and_process(ledger.name)
            tracked = audit.recorder.max_tracking_id(ledger.name) or 0
            try:
                trail: AuditTrail = audit.repository.get(AUDIT_ID)
                seen = trail.seen
            except AggregateNotFoundError:  # nothing processed yet
                seen = []
            # Each leader notification up to the tracked position processed exactly once, none past it.
            assert seen == list(range(1, tracked + 1)), (tracked, seen[-5:])
        leader_max = ledger.recorder.max_notification_id() or 0
        assert tracked == leader_max
        return leader_max, tracked
    finally:
        ledger.close()
        audit.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_a_killed_process_application_never_processes_a_leader_event_twice_or_skips_one(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    rounds = 4
    last = 0
    for round_no in range(rounds):
        _run_and_kill(tmp_path, seed * 100 + round_no, rng)
        leader_max, _tracked = _check(tmp_path)
        assert leader_max >= last  # acknowledged leader events survive
        last = leader_max
    assert last > 0


@pytest.mark.slow
def test_many_kills_of_a_process_application(tmp_path: Path) -> None:
    rng = random.Random(7)
    for round_no in range(40):
        _run_and_kill(tmp_path, round_no, rng)
        _check(tmp_path)
