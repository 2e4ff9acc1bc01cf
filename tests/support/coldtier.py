"""Helpers of the cold-tier and lake tests (tests/lake/)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs as pafs

import eventador as ev
from eventador.store.coldtier import ColdTier


@contextmanager
def hidden(target: ev.LakeTarget) -> Iterator[None]:
    """Every copy in the lake's cold tier moved aside for the block (a fetch meanwhile fails)."""
    cold = ColdTier(target.uri, target.storage_options, target.shard)
    copies = [c.path for c in cold.fs.get_file_info(pafs.FileSelector(cold.base)) if c.path.endswith(".parquet")]
    assert copies
    for path in copies:
        cold.fs.move(path, f"{path}.hidden")
    try:
        yield
    finally:
        for path in copies:
            cold.fs.move(f"{path}.hidden", path)


CHILD = Path(__file__).resolve().parents[1] / "workers" / "coldtier_child.py"


def kill_writer_after(
    seconds: float, *args: str, acknowledged: dict[str, int], until: Callable[[], bool] | None = None
) -> None:
    """Run tests/workers/coldtier_child.py with `args` for `seconds` once it has opened its
    store (and longer, up to 30 s, until `until()` holds: a loaded machine is slow), record
    each append it acknowledged (stream -> version) in `acknowledged`, then SIGKILL it."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "OPEN", "the child did not open the store"
        started = time.monotonic()
        while time.monotonic() < started + seconds or (until is not None and not until()):
            assert time.monotonic() < started + 30, "the writer did not get there in 30 s"
            line = child.stdout.readline()
            if not line:
                break
            append = json.loads(line)
            acknowledged[append["stream"]] = append["version"]
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
