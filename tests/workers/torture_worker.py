"""The writer tests/store/test_torture.py kills: 1-4 threads append, flush and compact until SIGKILL.

It runs in a process forked from a forkserver that has imported eventador already
(see test_torture.py), so a life starts in milliseconds; it never ends by itself.

Every event is a ``Deposited`` whose ``note`` is ``"<tag>/<part>/<index>/<size>"``:
the append it belongs to (``append_many`` writes one part per stream), its place
in the part and the part's size, so the parent can tell a partial append from a
whole one. Each thread loops over single appends, batched appends to one stream,
``append_many`` across streams, ``flush()`` and ``compact()``, with expected
versions (a conflict with another thread is simply not acknowledged).

The report is a file of JSON lines, each written with one ``os.write`` on an
``O_APPEND`` descriptor, so the lines of different threads never mix:

    {"ready": last_position}                      the store is open
    {"tag": t, "parts": [[stream, version, [amount, ...]], ...]}
                                                  written only after the append returned
    {"begin": "flush" | "compact", "op": id}      right before the call ...
    {"end": id}                                   ... and after it returned
    {"error": text}                               anything unexpected (the process then exits)

A SIGKILL may cut the last line short: the parent reads only whole lines.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import traceback
import warnings
from decimal import Decimal
from typing import Any

import eventador as ev
from tests.support.domain import Deposited

STREAMS = 8
LIFETIME = 60.0  # seconds; a life the parent forgot to kill ends with an error line


class Report:
    """The report file: one whole line per ``os.write``, so concurrent threads never interleave."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def line(self, **fields: Any) -> None:
        os.write(self.fd, (json.dumps(fields) + "\n").encode())

    def fail(self, text: str) -> None:
        self.line(error=text)
        os._exit(3)


def main(directory: str, report_path: str, seed: int, threads: int, flush_every: int) -> None:
    """Open the store and let `threads` writers loose on it; ends only when killed."""
    report = Report(report_path)

    def warn(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        report.fail(f"{category.__name__}: {message}")  # e.g. "flush failed, will retry"

    warnings.showwarning = warn
    try:
        store = ev.open_store(directory, flush_every=flush_every)
    except Exception:
        report.fail(traceback.format_exc())
    report.line(ready=store.last_position)
    for n in range(threads):
        writer = Writer(store, report, f"{seed}-{n}", random.Random(seed * 10 + n))
        threading.Thread(target=writer.run, daemon=True).start()
    time.sleep(LIFETIME)
    report.fail(f"not killed within {LIFETIME:g} s")


class Writer:
    """One writer thread: a random mix of appends, flushes and compactions, reported as they return."""

    def __init__(self, store: ev.EventStore, report: Report, name: str, rnd: random.Random) -> None:
        self.store, self.report, self.name, self.rnd = store, report, name, rnd

    def run(self) -> None:
        try:
            for seq in range(10**9):
                self.step(f"{self.name}-{seq}")
        except BaseException:
            self.report.fail(traceback.format_exc())

    def step(self, tag: str) -> None:
        rnd, store = self.rnd, self.store
        action = rnd.random()
        if action < 0.05:
            self.call("flush", tag, store.flush)
        elif action < 0.09:
            self.call("compact", tag, lambda: store.compact(max_rows=rnd.choice([10, 40, 200]), min_files=2))
        elif action < 0.23:  # one atomic append over a few streams
            streams = rnd.sample(range(STREAMS), rnd.randint(2, 3))
            parts = [(f"s-{s}", self.events(tag, part, rnd.randint(1, 3))) for part, s in enumerate(streams)]
            try:
                versions = store.append_many(parts, expected_version=ev.ANY)
            except ev.ConcurrencyError:
                return
            self.acknowledge(tag, [(s, v, events) for (s, events), v in zip(parts, versions, strict=True)])
        else:  # one stream, one event or a batch, mostly with the version this thread last saw
            stream = f"s-{rnd.randrange(STREAMS)}"
            events = self.events(tag, 0, rnd.choice([1, 1, 1, 2, 3, 5]))
            expected = store.stream_version(stream) if rnd.random() < 0.7 else ev.ANY
            try:
                version = store.append(stream, events, expected_version=expected)
            except ev.ConcurrencyError:
                return  # another thread got there first: not acknowledged, not written
            self.acknowledge(tag, [(stream, version, events)])

    def events(self, tag: str, part: int, size: int) -> list[Deposited]:
        amounts = [Decimal(self.rnd.randrange(1, 100_000)) / 100 for _ in range(size)]
        return [Deposited(account_id="-", amount=a, note=f"{tag}/{part}/{i}/{size}") for i, a in enumerate(amounts)]

    def acknowledge(self, tag: str, parts: list[tuple[str, int, list[Deposited]]]) -> None:
        """Report an append that returned: per stream, its new version and the amounts appended."""
        self.report.line(tag=tag, parts=[[s, v, [str(e.amount) for e in events]] for s, v, events in parts])

    def call(self, what: str, tag: str, action: Any) -> None:
        self.report.line(begin=what, op=tag)
        action()
        self.report.line(end=tag)
