"""A spy on a store's stream reads, for tests that count them."""

from __future__ import annotations

from typing import Any

import eventador as ev


class ReadSpy:
    """Wraps store.read_stream and store.replay; records (stream_id, from_version) of each call."""

    def __init__(self, store: ev.EventStore) -> None:
        self.calls: list[tuple[str, int]] = []
        self._read = store.read_stream
        self._replay = store.replay
        store.read_stream = self  # type: ignore[method-assign]
        store.replay = self.replay  # type: ignore[method-assign]

    def __call__(self, stream_id: str, *, from_version: int = 1, to_version: int | None = None) -> Any:
        self.calls.append((stream_id, from_version))
        return self._read(stream_id, from_version=from_version, to_version=to_version)

    def replay(self, stream_id: str, *, from_version: int = 1) -> Any:
        self.calls.append((stream_id, from_version))
        return self._replay(stream_id, from_version=from_version)
