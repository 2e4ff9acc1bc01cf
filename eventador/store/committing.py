"""Committing appends: under the store's lock, each stream's expected version (and a
checkpoint's position) checked, positions assigned, one frame queued for the log (one per
append for ``commit_each``) and the rows added to the hot tier; then, out of the lock, the
group commit's fsync makes them durable and visible.

Everything that can fail on bad input happened before (``prepare_append``, appends.py).
``commit_each`` is the group commit of appends gathered from many actors (aio.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import cbor2

from eventador.clock import now_micros
from eventador.errors import CheckpointConflict, ConcurrencyError
from eventador.messages import Event
from eventador.store.appends import (
    PreparedAppend,
    check_checkpoint,
    joint_body,
    prepare_append,
    prepare_encoded,
    verify_expected,
)
from eventador.store.flushing import Flushing
from eventador.store.records import ANY, ExpectedVersion

__all__ = ["Committing"]


class Committing(Flushing):
    """The write path of ``append`` and ``append_many``; see ``EventStore``."""

    # The store's internal API for appends (docs/architecture.md): prepare_append, prepare_encoded,
    # commit_each, commit_together.

    def prepare_append(
        self,
        stream_id: str,
        events: Event | Sequence[Event],
        *,
        expected_version: int | ExpectedVersion = ANY,
        metadata: dict[str, Any] | None = None,
        occurred_at: datetime | Sequence[datetime] | None = None,
        stream_type: str | None = None,
    ) -> PreparedAppend:
        """Check and encode one stream's append, as ``append`` would: everything that can fail
        before writing, without the store's lock. ``commit_each`` writes it.

        Raises:
            SerializationError, InvalidInputError: as ``append``.
        """
        return prepare_append(
            stream_id, events, expected_version, metadata, occurred_at, stream_type, logged=self._wal is not None
        )

    def prepare_encoded(
        self, stream_id: str, event_type: str, schema_version: int, payloads: list[bytes],
        expected_version: int | ExpectedVersion = ANY,
    ) -> PreparedAppend:
        """One stream's append of events encoded already (``codec.encode_fields``): the
        payloads of `event_type` at `schema_version`. ``commit_together`` writes it.

        Raises:
            InvalidInputError: a bad stream id, event type or expected version.
        """
        return prepare_encoded(
            stream_id, event_type, schema_version, payloads, expected_version, logged=self._wal is not None
        )

    def commit_together(self, appends: list[PreparedAppend], checkpoint: tuple[str, int] | None = None) -> list[int]:
        """``append_streams`` of prepared appends (``prepare_append``, ``prepare_encoded``):
        all of them and `checkpoint` in one frame, or, on any conflict, none; returns the
        position of each event, in the order given.

        Raises:
            ConcurrencyError, CheckpointConflict: as ``append_streams``; nothing is written.
            StoreError: the store is closed or read-only, or the log failed.
        """
        return self._commit_together(appends, check_checkpoint(checkpoint))

    def _commit(self, appends: list[PreparedAppend]) -> list[int]:
        """All of `appends` or, on any conflict, none: one lock, one frame, one fsync; returns
        each stream's new version."""
        return self._commit_some(appends, each=False)[0]  # type: ignore[return-value]  # no errors when not each

    def _commit_together(self, appends: list[PreparedAppend], checkpoint: tuple[str, int] | None) -> list[int]:
        """All of `appends` and `checkpoint` in one frame, or, on any conflict, none; returns
        the position of each event, in the order given."""
        _, last = self._commit_some(appends, each=False, checkpoint=checkpoint)
        count = sum(len(a.payloads) for a in appends)
        return list(range(last - count + 1, last + 1))

    def commit_each(self, appends: list[PreparedAppend]) -> list[int | ConcurrencyError]:
        """Each of `appends` (from ``prepare_append``) on its own, in order, under one lock and
        one fsync; returns each stream's new version, or the ConcurrencyError of one whose
        expected version did not match (it fails alone): the group commit of appends gathered
        from many actors (``store/aio.py``).

        Raises:
            StoreError: the store is closed or read-only, or the log failed (nothing is acknowledged).
        """
        return self._commit_some(appends, each=True)[0]

    def _commit_some(
        self, appends: list[PreparedAppend], *, each: bool, checkpoint: tuple[str, int] | None = None
    ) -> tuple[list[int | ConcurrencyError], int]:
        """Write `appends` (and `checkpoint`); returns each stream's new version (or, `each`, its
        conflict) and the last position written (0: none). Not `each`: every check comes
        before the first write, and all go into one frame."""
        now = now_micros(self.clock)
        lsn = 0
        versions: list[int | ConcurrencyError] = []
        records: list[bytes] = []  # not each: the appends' records, for one frame
        previous = 0  # the checkpoint's position before this call
        with self._lock:
            self._check_writable()
            wal = self._wal  # this append's log, even if the store is closed meanwhile
            heads = self._heads
            if not each:
                pending: dict[str, int] = {}
                for a in appends:  # every check before the first write
                    current = pending.get(a.stream_id, heads.get(a.stream_id, 0))
                    verify_expected(a.stream_id, a.expected, current)
                    pending[a.stream_id] = current + len(a.payloads)
                if checkpoint is not None:
                    previous = self._checkpoints.get(checkpoint[0], 0)
                    if checkpoint[1] <= previous:
                        raise CheckpointConflict(checkpoint[0], checkpoint[1], previous)
            recorded = max(now, self._last_recorded_us)  # recorded_at never goes back
            buffer = self._buffer
            last = 0
            for a in appends:
                current = heads.get(a.stream_id, 0)
                if each:
                    try:
                        verify_expected(a.stream_id, a.expected, current)
                    except ConcurrencyError as conflict:
                        versions.append(conflict)
                        continue
                n = len(a.payloads)
                if not n:
                    versions.append(current)
                    continue
                first = buffer.first_position + len(buffer)
                if wal is not None:
                    # The columns were encoded before the lock: a 7-array whose last item is them.
                    head = cbor2.dumps([first, a.stream_id, current + 1, recorded, a.stream_type, a.metadata])
                    if each:
                        try:
                            lsn = wal.add(b"\x87" + head[1:] + a.logged, first + n - 1)
                        except BaseException:
                            self._forget_unlogged()  # this call's earlier streams, if any
                            raise
                    else:
                        records.append(b"\x87" + head[1:] + a.logged)
                buffer.add(
                    a.stream_id, current + 1, recorded, a.stream_type, a.metadata,
                    a.types, a.ids, a.occurred, a.payloads, a.events, a.versions,
                )
                heads[a.stream_id] = current + n
                versions.append(current + n)
                last = first + n - 1
            if wal is not None and (records or checkpoint is not None):
                # One frame: one append's record as it always was, or several and the checkpoint.
                body = records[0] if len(records) == 1 and checkpoint is None else joint_body(records, checkpoint)
                try:
                    lsn = wal.add(body, buffer.first_position + len(buffer) - 1)
                except BaseException:
                    self._forget_unlogged()  # the rows added above are past what is visible: never shown
                    raise
            if checkpoint is not None:
                self._checkpoints[checkpoint[0]] = checkpoint[1]
            self._last_recorded_us = recorded
            if self.durability != "fsync" and last:
                self._show(last)
            full = len(buffer) >= self.flush_every
        if not last and not lsn:
            return versions, 0
        if wal is not None and self.durability == "fsync":
            try:
                wal.sync(lsn)  # the round's leader has made these events visible (_durable)
            except BaseException:
                if wal.failed:
                    with self._lock:
                        self._forget_unlogged()
                        if checkpoint is not None and self._checkpoints.get(checkpoint[0]) == checkpoint[1]:
                            self._take_back(checkpoint[0], previous)
                raise
        else:
            self._notify()
        if full:
            self._flush_quietly()
        return versions, last

    def _take_back(self, name: str, previous: int) -> None:
        """Checkpoint `name` goes back to `previous` (0: none): the frame that moved it was not
        acknowledged, as its events (the caller holds the lock). Two such frames of one name
        in one failed fsync round may leave the later one's earlier position: after a failed
        fsync only reopening tells what the disk holds."""
        if previous:
            self._checkpoints[name] = previous
        else:
            self._checkpoints.pop(name, None)

    def _forget_unlogged(self) -> None:
        """After the log failed (the caller holds the lock): the streams' versions go back
        to their last visible event. Appends whose frames never reached the disk were not
        acknowledged and are not counted; their rows stay in the hot tier, past what is
        visible, never shown nor flushed: the failed log refuses every later append and
        flush until the store is opened again."""
        if self._wal is None or not self._wal.failed:
            return
        buffer = self._buffer
        first_unlogged: dict[str, int] = {}
        for row in range(max(0, self._visible + 1 - buffer.first_position), len(buffer)):
            first_unlogged.setdefault(buffer.stream_ids[row], buffer.versions[row])
        for stream_id, version in first_unlogged.items():
            if version > 1:
                self._heads[stream_id] = version - 1
            else:
                self._heads.pop(stream_id, None)
