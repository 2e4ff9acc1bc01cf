"""What changed between two points of a store: ``diff(store, a, b)``.

A point is a position (events at or below it) or an aware datetime (events
recorded at or before it), as in ``store.as_of``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventador.errors import InvalidInputError

if TYPE_CHECKING:
    import pandas as pd

    from eventador.store.store import EventStore

__all__ = ["StoreDiff", "diff"]


@dataclass(frozen=True, slots=True)
class StoreDiff:
    """The events recorded after position `from_position`, up to and including `to_position`.

    ``events``: how many; ``streams``: the stream ids they touched (sorted);
    ``events_per_type``: event type -> count, largest first. ``df()`` reads the
    events themselves (one SQL query).
    """

    from_position: int
    to_position: int
    events: int
    streams: tuple[str, ...]
    events_per_type: dict[str, int]
    store: EventStore = field(repr=False, compare=False)

    def df(self) -> pd.DataFrame:
        """Returns the events between the two points as a DataFrame, in position order.

        Columns: position, stream_id, version, event_type, recorded_at, occurred_at, data.
        """
        frame: pd.DataFrame = self.store.sql(
            "SELECT position, stream_id, version, event_type, recorded_at, occurred_at, data "
            "FROM events WHERE position > ? AND position <= ? ORDER BY position",
            [self.from_position, self.to_position],
        ).df()
        return frame

    def __repr__(self) -> str:
        return (
            f"StoreDiff(positions {self.from_position}..{self.to_position}: "
            f"{self.events} events in {len(self.streams)} streams)"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(t)}</td><td style='text-align:right'>{n:,}</td></tr>"
            for t, n in list(self.events_per_type.items())[:20]
        )
        shown = ", ".join(html.escape(s) for s in self.streams[:10])
        more = f" and {len(self.streams) - 10:,} more" if len(self.streams) > 10 else ""
        return (
            f"<div><b>StoreDiff</b> positions {self.from_position:,} → {self.to_position:,}"
            f"<table><tr><th>events</th><td>{self.events:,}</td></tr>"
            f"<tr><th>streams touched</th><td>{len(self.streams):,}</td></tr></table>"
            f"<p>streams: {shown}{more}</p>"
            f"<table><tr><th>event type</th><th>events</th></tr>{rows}</table></div>"
        )


def _position(store: EventStore, point: Any, name: str) -> int:
    if isinstance(point, bool) or not isinstance(point, (int, datetime)):
        raise InvalidInputError(f"{name} must be a position or an aware datetime, got {point!r}")
    if isinstance(point, datetime) and point.utcoffset() is None:
        raise InvalidInputError(f"{name} must be an aware datetime (got naive {point!r}); add tzinfo, e.g. tzinfo=UTC")
    if isinstance(point, int) and point < 0:
        raise InvalidInputError(f"{name} must be a position >= 0, got {point}")
    return store.as_of(point).position


def diff(store: EventStore, a: int | datetime, b: int | datetime) -> StoreDiff:
    """Returns a ``StoreDiff``: the events after point `a` up to and including point `b`.

    Points are positions or aware datetimes (by recorded time); a point past the
    end means the end. Costs two SQL queries (plus one per datetime point).

    Raises:
        InvalidInputError: a naive datetime, a negative position, something else
            than a position or datetime, or `b` before `a`.

    >>> store.diff(0, store.last_position).events
    3
    """
    lo, hi = _position(store, a, "a"), _position(store, b, "b")
    if hi < lo:
        raise InvalidInputError(f"b (position {hi}) is before a (position {lo}); swap them")
    per_type = store.sql(
        "SELECT event_type, count(*) FROM events WHERE position > ? AND position <= ? "
        "GROUP BY event_type ORDER BY 2 DESC, 1",
        [lo, hi],
    ).fetchall()
    streams = store.sql(
        "SELECT DISTINCT stream_id FROM events WHERE position > ? AND position <= ? ORDER BY stream_id",
        [lo, hi],
    ).fetchall()
    counts = {str(t): int(n) for t, n in per_type}
    return StoreDiff(
        from_position=lo,
        to_position=hi,
        events=sum(counts.values()),
        streams=tuple(str(s) for (s,) in streams),
        events_per_type=counts,
        store=store,
    )
