"""The actor system: tell throughput into one actor, ask round trips.

    python -m benchmarks.actors [--quick]

``run(quick)`` returns one dict per measurement (name, value, unit, budget, passed, details),
for benchmarks/run.py. Nothing is stored: this measures the mailbox and the event loop only.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
from typing import Any

import eventador as ev


class _Counter(ev.Actor):
    def __init__(self) -> None:
        self.seen = 0
        self.done: asyncio.Future[None] | None = None
        self.expected = 0

    async def on_message(self, message: Any) -> Any:
        if message == "ping":
            return "pong"
        if isinstance(message, tuple):  # ("expect", n, future)
            _, self.expected, self.done = message
            return None
        self.seen += 1
        if self.seen == self.expected and self.done is not None:
            self.done.set_result(None)
        return None


async def _tell_rate(n: int) -> float:
    async with ev.ActorSystem() as system:
        ref = await system.spawn("counter", _Counter)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await ref.ask(("expect", n, done))
        gc.collect()
        started = time.perf_counter()
        for i in range(n):
            ref.tell(i)
        await done
        return n / (time.perf_counter() - started)


async def _ask_latencies(n: int) -> list[float]:
    async with ev.ActorSystem() as system:
        ref = await system.spawn("echo", _Counter)
        for _ in range(100):
            await ref.ask("ping")
        out = []
        for _ in range(n):
            started = time.perf_counter_ns()
            await ref.ask("ping")
            out.append((time.perf_counter_ns() - started) / 1_000)
        return out


def _result(name: str, values: list[float], unit: str, budget: str, passed: bool | None) -> dict[str, Any]:
    return {
        "name": name,
        "value": statistics.median(values),
        "unit": unit,
        "budget": budget,
        "passed": passed,
        "details": {"min": min(values), "max": max(values), "reps": len(values)},
    }


def run(quick: bool) -> list[dict[str, Any]]:
    """tell into one actor (messages/s) and ask round trip (µs), medians over repetitions."""
    reps = 3 if quick else 7
    n = 20_000 if quick else 200_000
    rates = [asyncio.run(_tell_rate(n)) for _ in range(reps)]
    latencies = asyncio.run(_ask_latencies(2_000 if quick else 20_000))
    rate = statistics.median(rates)
    latency = statistics.median(latencies)
    print(f"  tell: median {rate:,.0f} msgs/s; ask: median {latency:.1f} us", file=sys.stderr)
    return [
        _result(f"tell into one actor ({n:,} messages)", rates, "messages/s", ">= 200k messages/s",
                None if quick else rate >= 200_000),
        _result("ask round trip (one actor, answered at once)", latencies, "us", "<= 50 us median",
                None if quick else latency <= 50),
    ]


if __name__ == "__main__":
    for row in run("--quick" in sys.argv):
        print(row)
