"""Clocks for tests: ``ScriptedClock``, a wall clock that jumps (``ev.ManualClock`` only moves forward)."""

from __future__ import annotations

from datetime import UTC, datetime

from eventador.errors import InvalidInputError

__all__ = ["ScriptedClock"]


class ScriptedClock:
    """A clock that reads out the given wall times in order, then keeps the last one.

    For testing what happens when the wall clock jumps, backwards included (an NTP
    step): ``ScriptedClock(t10, t0)`` says t10, then t0, then t0 forever.
    ``monotonic()`` counts the readings, so it never goes back.

    Raises:
        InvalidInputError: no times, or a naive one.
    """

    def __init__(self, *times: datetime) -> None:
        if not times:
            raise InvalidInputError("ScriptedClock needs at least one time")
        for t in times:
            if t.utcoffset() is None:
                raise InvalidInputError(f"ScriptedClock needs aware datetimes, got {t!r}")
        self._times = [t.astimezone(UTC) for t in times]
        self._readings = 0

    def now(self) -> datetime:
        current = self._times[min(self._readings, len(self._times) - 1)]
        self._readings += 1
        return current

    def monotonic(self) -> float:
        return float(self._readings)

    def __repr__(self) -> str:
        return f"ScriptedClock({len(self._times)} times, {self._readings} read)"
