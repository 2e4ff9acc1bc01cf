"""Shared pieces of the benchmark runner: results, sizes, payloads, budgets, tables.

Nothing here measures anything. A `Results` object collects every measurement of a
run (median / min / max over repetitions); a `Row` of the comparison table pairs an
eventador measurement with the peer's and judges it against its budget.
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

perf = time.perf_counter
perf_ns = time.perf_counter_ns

CURRENCIES = ("EUR", "USD", "GBP", "CHF")
NOTE = "x"


def log(msg: str) -> None:
    """Progress line on stderr (stdout carries only the report)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def result(
    name: str, values: list[float], unit: str, budget: str = "", *, passed: bool | None = None, note: str = "",
    side: str = "eventador", value: float | None = None,
) -> dict[str, Any]:
    """One measurement as the module groups report it (median of `values` unless `value`), logged."""
    median = statistics.median(values) if value is None else value
    log(
        f"  {name}: median {median:,.4g} {unit} (min {min(values):,.4g}, max {max(values):,.4g})"
        + (f"; {note}" if note else "")
    )
    return {
        "name": name, "value": median, "unit": unit, "budget": budget, "min": min(values), "max": max(values),
        "reps": len(values), "side": side, "note": note, "passed": passed,
    }


def fmt(v: float | None) -> str:
    """A number with as many digits as are worth reading."""
    if v is None:
        return "-"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def pct(values: Iterable[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `values`."""
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100.0 * (len(s) - 1)))]


def repeat(reps: int, fn: Callable[[int], float]) -> list[float]:
    """Calls fn(rep) `reps` times after a full garbage collection each; returns its values."""
    out = []
    for r in range(reps):
        gc.collect()
        out.append(fn(r))
    return out


def dir_bytes(path: str) -> dict[str, int]:
    """Bytes on disk under `path`, by kind of file (parquet, duckdb, wal, other) and 'total'."""
    kinds: dict[str, int] = {"total": 0}
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                size = os.path.getsize(os.path.join(root, name))
            except FileNotFoundError:
                continue
            lower = name.lower()
            if lower.endswith(".parquet"):
                kind = "parquet"
            elif ".duckdb" in lower or lower.endswith(".db"):
                kind = "duckdb"
            elif "wal" in lower or lower.endswith(".log"):
                kind = "wal"
            else:
                kind = "other"
            kinds[kind] = kinds.get(kind, 0) + size
            kinds["total"] += size
    return kinds


# --------------------------------------------------------------------------
# Payloads: the same small events for eventador and the peer
# --------------------------------------------------------------------------


class Payloads:
    """Seeded random amounts and currencies, so both sides write the same events.

    The peer baseline's PAYLOAD is {account_id, amount 12.5, currency "EUR", note "x"};
    here the amount is random (2 decimals) and the currency one of four, because a
    constant payload compresses unrealistically well in Parquet.
    """

    def __init__(self, n: int, seed: int = 20260101) -> None:
        rng = random.Random(seed)
        self.amounts = [round(rng.random() * 10_000, 2) for _ in range(n)]
        self.currencies = [CURRENCIES[rng.randrange(4)] for _ in range(n)]
        self.n = n

    def amount(self, i: int) -> float:
        return self.amounts[i % self.n]

    def currency(self, i: int) -> str:
        return self.currencies[i % self.n]


# --------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """Every size the scenarios use; `quick()` shrinks them all for a smoke run."""

    single: int = 5_000  # single-event commits, one writer
    writers: int = 8  # concurrent writer threads
    per_writer: int = 2_500  # single-event commits per writer thread
    batched: int = 50_000  # events written in commits of `batch`
    batch: int = 100
    aggregates: int = 5_000  # many aggregates / streams ...
    per_aggregate: int = 10  # ... of this many events, one commit each
    stream_small: int = 1_000  # length of the streams read back
    stream_large: int = 10_000
    reads_small: int = 15  # repetitions of reading a small stream (the peer's count)
    reads_large: int = 5
    read_store: int = 1_000_000  # events in the store the streams are read from
    sql_events: int = 10_000_000  # events scanned by the SQL aggregate
    sql_per_append: int = 10_000
    fsync_commits: int = 2_000  # machine: 128 B appends + fsync

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            single=200,
            per_writer=50,
            batched=2_000,
            aggregates=200,
            stream_small=100,
            stream_large=1_000,
            reads_small=3,
            reads_large=3,
            read_store=20_000,
            sql_events=100_000,
            fsync_commits=200,
        )

    @property
    def read_all_events(self) -> int:
        return self.aggregates * self.per_aggregate


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One measurement: its values over the repetitions, and how to read them."""

    key: str
    group: str
    label: str
    unit: str
    values: tuple[float, ...]
    better: str  # "higher" or "lower"
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def cell(self) -> str:
        """'median [min – max]', or just the value when there was one repetition."""
        if len(self.values) == 1 or self.min == self.max:
            return f"{fmt(self.median)} {self.unit}"
        return f"{fmt(self.median)} {self.unit} [{fmt(self.min)} – {fmt(self.max)}]"

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "group": self.group,
            "label": self.label,
            "unit": self.unit,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "reps": len(self.values),
            "values": list(self.values),
            "better": self.better,
            "note": self.note,
        }


@dataclass
class Results:
    """Everything one run measured, plus what it skipped, failed and set up."""

    by_key: dict[str, Result] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # scenario -> "Type: message"
    skipped: dict[str, str] = field(default_factory=dict)  # group -> reason
    setup: list[tuple[str, str]] = field(default_factory=list)  # (what, how long / how)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        key: str,
        group: str,
        label: str,
        unit: str,
        values: Iterable[float],
        *,
        better: str,
        note: str = "",
    ) -> Result:
        r = Result(key, group, label, unit, tuple(values), better, note)
        self.by_key[key] = r
        log(
            f"  {label}: median {fmt(r.median)} {unit} (min {fmt(r.min)}, max {fmt(r.max)})"
            + (f"; {note}" if note else "")
        )
        return r

    def get(self, key: str | None) -> Result | None:
        return None if key is None else self.by_key.get(key)

    def add_setup(self, what: str, how: str) -> None:
        self.setup.append((what, how))
        log(f"  setup: {what}: {how}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "results": [r.as_dict() for r in self.by_key.values()],
            "errors": self.errors,
            "skipped": self.skipped,
            "setup": [{"what": w, "how": h} for w, h in self.setup],
        }


# --------------------------------------------------------------------------
# Budgets and the comparison table
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """One condition of a budget: eventador's median against a fixed or a relative bound.

    `of` names the measurement the bound is relative to (then `value` is a factor);
    without `of`, `value` is the bound itself, in `unit`.
    """

    op: str  # ">=" or "<="
    value: float
    of: str | None = None
    of_name: str = ""
    unit: str = ""

    def threshold(self, results: Results) -> float | None:
        if self.of is None:
            return self.value
        ref = results.get(self.of)
        return None if ref is None else self.value * ref.median

    def describe(self, results: Results) -> str:
        if self.of is None:
            value = f"{self.value:,.0f}" if self.value == int(self.value) else fmt(self.value)
            return f"{self.op} {value} {self.unit}".strip()
        thr = self.threshold(results)
        factor = f"{self.value * 100:.0f}% of" if self.value < 1 else f"{self.value:g}x"
        where = "not measured" if thr is None else fmt(thr)
        return f"{self.op} {factor} {self.of_name} ({where})"

    def holds(self, value: float, results: Results) -> bool | None:
        thr = self.threshold(results)
        if thr is None:
            return None
        return value >= thr if self.op == ">=" else value <= thr


@dataclass(frozen=True)
class Row:
    """A line of the comparison table."""

    scenario: str
    ours: str | None  # result key of the eventador measurement
    peer: str | None  # result key of the peer measurement
    limits: tuple[Limit, ...] = ()
    error_key: str | None = None  # the eventador scenario whose failure this row shows


def verdict(row: Row, results: Results, *, quick: bool, ours_skip: str | None) -> tuple[str, str]:
    """(budget text, verdict) for one row."""
    budget = " and ".join(lim.describe(results) for lim in row.limits) or "-"
    ours = results.get(row.ours)
    if row.error_key and row.error_key in results.errors:
        return budget, "ERROR"
    if ours is None:
        if row.ours is None:
            return budget, "info (peer only)"
        return budget, "skipped" if ours_skip else "not run"
    if not row.limits:
        return budget, "info"
    if quick:
        return budget, "not judged (--quick)"
    checks = [lim.holds(ours.median, results) for lim in row.limits]
    if any(c is False for c in checks):
        return budget, "**FAIL**"
    if any(c is None for c in checks):
        return budget, "unjudged (reference not measured)"
    return budget, "PASS"


def comparison_table(rows: Iterable[Row], results: Results, *, quick: bool, ours_skip: str | None) -> str:
    lines = [
        "| scenario | eventador | peer | ratio (eventador / peer) | budget | verdict |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        ours, peer = results.get(row.ours), results.get(row.peer)
        if ours is not None:
            ours_cell = ours.cell()
        elif row.error_key and row.error_key in results.errors:
            ours_cell = "error"
        elif row.ours is None:
            ours_cell = "-"
        else:
            ours_cell = "n/a"
        peer_cell = peer.cell() if peer is not None else "-"
        ratio = f"{ours.median / peer.median:.2f}x" if ours is not None and peer is not None and peer.median else "-"
        budget, v = verdict(row, results, quick=quick, ours_skip=ours_skip)
        lines.append(f"| {row.scenario} | {ours_cell} | {peer_cell} | {ratio} | {budget} | {v} |")
    return "\n".join(lines)


def results_table(results: Iterable[Result]) -> str:
    lines = ["| measurement | median | min | max | reps | note |", "|---|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(
            f"| {r.label} | {fmt(r.median)} {r.unit} | {fmt(r.min)} | {fmt(r.max)} | {len(r.values)} | {r.note} |"
        )
    return "\n".join(lines)


@dataclass
class Context:
    """What every group of scenarios gets: where to write, how big, how often."""

    run_dir: str  # fresh, removed at the end unless --keep
    sizes: Sizes
    reps: int
    quick: bool
    results: Results
    payloads: Payloads
    cache_dir: str | None = None  # where big eventador stores are kept between runs
    rebuild_cache: bool = False
    parts: frozenset[str] = frozenset()  # eventador parts to run (writes, reads, sql)
    module_results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per module group

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)


STORE_SOURCES = ("eventador/store", "eventador/codec.py", "eventador/messages.py")
_ROOT = Path(__file__).resolve().parent.parent


def source_hash() -> str:
    """A short hash of the store's source: cached benchmark stores are rebuilt when it changes."""
    h = hashlib.sha256()
    for rel in STORE_SOURCES:
        p = _ROOT / rel
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p] if p.exists() else []
        for f in files:
            h.update(str(f.relative_to(_ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]
