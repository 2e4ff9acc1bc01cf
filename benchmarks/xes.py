"""Reading XES beside pm4py, in the same run: ``ev.read_xes`` against ``pm4py.read_xes``.

    python -m benchmarks.xes [--quick]

``run(quick)`` returns one dict per measurement (name, value = the median, unit, budget,
min, max, reps, side, note, passed: None when quick, which judges nothing), for
benchmarks/run.py. Scenarios, over BPI Challenge 2012 (``data/bpic2012.xes.gz``, 262,200
events; quick: ``data/roadtraffic100traces.xes``):

1. ``ev.read_xes`` and ``pm4py.read_xes`` taking turns (ours, theirs, ours, ...), after one
   untimed warm-up each. Budget: our median <= pm4py's. pm4py (AGPL) is only ever a
   benchmark's peer, never a dependency: without it the row says it was skipped and why.
2. ``ev.read_xes`` with its own pure-Python reader (what runs without ``rustxes``): reported.
3. The whole import: ``ev.read_xes`` + ``open_store`` + ``import_dataframe`` + ``close``,
   durability 'fsync' (the default). Budget: <= 3 s median.

Data: BPI Challenge 2012, B.F. van Dongen (2012), 4TU.ResearchData,
DOI 10.4121/uuid:3926db30-f712-4394-aebc-75976070e91f (4TU.ResearchData General Terms of
Use); see ``data/README.md``. Skipped when the file is absent.
"""

from __future__ import annotations

import contextlib
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import eventador as ev  # noqa: E402
from benchmarks.common import log, result  # noqa: E402
from eventador.io.importing import _read_with_expat  # noqa: E402

perf = time.perf_counter
DATA = ROOT / "data"


def _result(name: str, values: list[float], side: str, budget: str, passed: bool | None,
            note: str = "") -> dict[str, Any]:
    return result(name, values, "s", budget, passed=passed, note=note, side=side)


def _skipped(name: str, side: str, budget: str, why: str) -> dict[str, Any]:
    log(f"  {name}: skipped, {why}")
    return {"name": f"{name} (skipped: {why})", "value": None, "unit": "s", "budget": budget,
            "side": side, "note": why, "passed": None}


def _pm4py_reader() -> tuple[Callable[[Path], Any] | None, str]:
    """pm4py's ``read_xes`` and its version, or None and why not."""
    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pm4py  # its import prints a banner: keep it off the report
    except ImportError:
        return None, "pm4py is not installed (pip install pm4py; AGPL, a benchmark peer only)"

    def read(path: Path) -> Any:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pm4py.read_xes(str(path))

    return read, f"pm4py {pm4py.__version__}"


def _timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    started = perf()
    fn()
    return perf() - started


def reads(source: Path, reps: int, quick: bool) -> list[dict[str, Any]]:
    """Scenarios 1 and 2."""
    ours_label = f"ev.read_xes({source.name})"
    pm4py_label = f"pm4py.read_xes({source.name}), same run"
    pm4py_read, about = _pm4py_reader()
    ours, theirs = [], []
    _timed(lambda: ev.read_xes(source))  # warm-ups: page cache, imports
    if pm4py_read is not None:
        _timed(lambda: pm4py_read(source))
    for _ in range(reps):
        ours.append(_timed(lambda: ev.read_xes(source)))
        if pm4py_read is not None:
            theirs.append(_timed(lambda: pm4py_read(source)))
    frame = ev.read_xes(source)
    shape = f"DataFrame {frame.shape[0]:,} x {frame.shape[1]}"
    out = []
    if pm4py_read is None:
        out.append(_result(ours_label, ours, "eventador", "<= pm4py (not measured)", None, shape))
        out.append(_skipped(pm4py_label, "pm4py", "reported (the peer)", about))
    else:
        mine, peer = statistics.median(ours), statistics.median(theirs)
        log(f"  read_xes: eventador {mine:.3f} s, {about} {peer:.3f} s (medians of {reps})")
        out.append(_result(ours_label, ours, "eventador", "<= pm4py's median, same run",
                           None if quick else mine <= peer, f"{shape}; {mine / peer:.2f}x pm4py's time"))
        out.append(_result(pm4py_label, theirs, "pm4py", "reported (the peer)", None, about))
    builtin = [_timed(lambda: _read_with_expat(source)) for _ in range(1 if not quick else reps)]
    out.append(_result(f"ev.read_xes({source.name}) without rustxes (the built-in reader)", builtin,
                       "eventador", "reported (no budget)", None))
    return out


def import_whole(source: Path, reps: int, quick: bool) -> list[dict[str, Any]]:
    """Scenario 3."""
    totals = []
    with tempfile.TemporaryDirectory(prefix="ev-bench-xes-") as tmp:
        for r in range(reps):
            gc.collect()
            started = perf()
            df = ev.read_xes(source)
            with ev.open_store(Path(tmp) / f"store-{r}") as store:
                written = store.import_dataframe(df, stream_type="Case", progress=False)
            totals.append(perf() - started)
            assert written == len(df), (written, len(df))
            del df
            shutil.rmtree(Path(tmp) / f"store-{r}", ignore_errors=True)
    total = statistics.median(totals)
    log(f"  import: {total:.3f} s median")
    return [_result(f"import {source.name} end to end: read_xes + open_store + import_dataframe + close, fsync",
                    totals, "eventador", "<= 3 s", None if quick else total <= 3.0)]


def run(quick: bool, *, reps: int | None = None) -> list[dict[str, Any]]:
    """Every XES benchmark; quick: the small log, nothing judged (passed is None)."""
    reps = reps or (2 if quick else 5)
    source = DATA / ("roadtraffic100traces.xes" if quick else "bpic2012.xes.gz")
    log(f"== xes: reading {source}")
    if not source.is_file():
        why = f"{source.relative_to(ROOT)} not found"
        return [_skipped(f"ev.read_xes({source.name})", "eventador", "<= pm4py", why)]
    return reads(source, reps, quick) + import_whole(source, reps, quick)


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=1, default=str))
