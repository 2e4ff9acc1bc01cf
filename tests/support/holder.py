"""A store held open for writing by another process: what the command line meets when a
service or a notebook kernel has the store open."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# `python -c HOLD_THE_LOCK DIR`: opens DIR for writing, says "holding", holds it until stdin closes.
HOLD_THE_LOCK = """
import sys
import eventador as ev
store = ev.open_store(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()
store.close()
"""

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def held_by_another_process(path: Path) -> Iterator[int]:
    """Hold the store at `path` open for writing in a child process while the block runs;
    yields the child's pid."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(path)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "holding\n"
        yield child.pid
    finally:
        if child.stdin is not None:
            child.stdin.close()  # the child closes the store and exits
        child.wait(timeout=60)
        if child.stdout is not None:
            child.stdout.close()
