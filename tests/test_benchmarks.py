"""The benchmarks still run (quick mode: tiny sizes, nothing judged). Speed is measured in benchmarks/, never here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_benchmark_runs_in_quick_mode() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = done.stdout
    assert "### Errors" not in report, report[report.find("### Errors") :]
    sections = (
        "single-event appends",
        "### The actor system",
        "### Aggregates",
        "### Projections",
        "### The durable",
        "### Time travel",
        "### Reading XES beside pm4py",
        "### Pages of the log",
        "### eventsourcing applications on eventador",
        "### Sharded writers",
        "### Publishing to the lake",
        "### Fleet-wide replays on Dask",
    )
    for section in sections:
        assert section in report, f"missing {section!r} in the benchmark report"
