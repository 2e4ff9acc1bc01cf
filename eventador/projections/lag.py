"""How far a projection is behind the store: ``Lag``, measured and said in words."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eventador.store.store import EventStore

__all__ = ["Lag", "human_duration", "lag_behind"]


@dataclass(frozen=True, slots=True)
class Lag:
    """How far a projection is behind the store: events not yet applied, and how old the oldest is."""

    events: int
    seconds: float


def lag_behind(store: EventStore, checkpoint: int, now: datetime, last: int) -> Lag:
    """The lag of a projection at `checkpoint` when the store's last position is `last`.

    Reads one event (the first not applied) for its recorded time.
    """
    behind = max(0, last - checkpoint)
    seconds = 0.0
    if behind:
        first = next(iter(store.read_all(from_position=checkpoint + 1, to_position=checkpoint + 1)), None)
        if first is not None:
            seconds = max(0.0, (now - first.recorded_at).total_seconds())
    return Lag(behind, seconds)


def human_duration(seconds: float) -> str:
    """`seconds` as a reader says it: "0.4 s", "42 s", "3 min 20 s", "2 h 5 min", "1 d 2 h"."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s"
    if seconds < 86400:
        hours, minutes = divmod(round(seconds / 60), 60)
        return f"{hours} h {minutes} min"
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days} d {hours} h"
