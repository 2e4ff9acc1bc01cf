"""Every stored event gets a random version-4 UUID, unique, whether appended alone or in a batch."""

from __future__ import annotations

import uuid

import eventador as ev
from tests.domain import deposited


def test_event_ids_are_unique_version_4_uuids_alone_and_in_batches() -> None:
    store = ev.open_store()
    for i in range(200):
        store.append(f"acc-{i % 7}", deposited(str(i), f"acc-{i % 7}"))
    store.append("batch", [deposited(str(i), "batch") for i in range(300)])
    ids = [r.event_id for r in store.read_all()]
    assert len(ids) == 500 and len(set(ids)) == 500
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)
