"""Clocks: the store, the actors and the queue ask one of these for the time.

Tests and notebooks pass a ``ManualClock`` so that outputs and timings are
deterministic; everything else uses ``SystemClock``.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock", "datetime_to_micros", "micros_to_datetime", "now_micros"]


@runtime_checkable
class Clock(Protocol):
    """Tells the wall time (aware UTC) and a monotonic time in seconds."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def __repr__(self) -> str:
        return "SystemClock()"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros_to_datetime(us: int) -> datetime:
    """Microseconds since 1970 (UTC) as an aware datetime (how the store keeps its times)."""
    return _EPOCH + timedelta(microseconds=us)


def datetime_to_micros(when: datetime) -> int:
    """An aware datetime as microseconds since 1970 (UTC)."""
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def now_micros(clock: Clock) -> int:
    """`clock`'s time in microseconds since 1970 (UTC); the real clock's without making a
    datetime (the store reads it at every append)."""
    if type(clock) is SystemClock:
        return time.time_ns() // 1000  # datetime.now floors to the microsecond alike
    return datetime_to_micros(clock.now())


class ManualClock:
    """A clock that moves only when told to; `tick` advances it after every reading.

    >>> clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    >>> clock.advance(seconds=5).now()
    datetime.datetime(2026, 1, 1, 0, 0, 5, tzinfo=datetime.timezone.utc)
    """

    def __init__(self, start: datetime | None = None, *, tick: timedelta = timedelta(0)) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime, e.g. datetime(2026, 1, 1, tzinfo=UTC)")
        self._now = start.astimezone(UTC)
        self._mono = 0.0
        self._tick = tick
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            current = self._now
            if self._tick:
                self._now += self._tick
                self._mono += self._tick.total_seconds()
            return current

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, delta: timedelta | None = None, *, seconds: float = 0.0) -> ManualClock:
        """Move the clock forward; returns the clock, so calls chain."""
        step = (delta or timedelta(0)) + timedelta(seconds=seconds)
        if step < timedelta(0):
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += step
            self._mono += step.total_seconds()
        return self

    def __repr__(self) -> str:
        return f"ManualClock({self._now.isoformat()})"
