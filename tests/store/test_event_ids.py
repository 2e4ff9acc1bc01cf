"""Every stored event gets a random version-4 UUID, unique, whether appended alone or in a batch."""

from __future__ import annotations

import os
import uuid

import eventador as ev
from tests.support.domain import deposited


def test_event_ids_are_unique_version_4_uuids_alone_and_in_batches() -> None:
    store = ev.open_store()
    for i in range(200):
        store.append(f"acc-{i % 7}", deposited(str(i), f"acc-{i % 7}"))
    store.append("batch", [deposited(str(i), "batch") for i in range(300)])
    ids = [r.event_id for r in store.read_all()]
    assert len(ids) == 500 and len(set(ids)) == 500
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)


def test_a_forked_child_and_its_parent_never_draw_the_same_ids() -> None:
    """The id generator is seeded again in a forked child: a real fork, ids compared."""
    from eventador.store.appends import new_event_ids, split_ids

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: draw ids and hand them over
        try:
            os.write(write, new_event_ids(1) + new_event_ids(63))
        finally:
            os._exit(0)
    os.close(write)
    child = b""
    while chunk := os.read(read, 4096):
        child += chunk
    os.close(read)
    os.waitpid(pid, 0)
    parent = new_event_ids(1) + new_event_ids(63)
    assert len(child) == len(parent) == 64 * 16
    assert not set(split_ids(child)) & set(split_ids(parent))


def test_seeding_the_random_module_does_not_make_ids_repeat() -> None:
    import random

    from eventador.store.appends import new_event_ids

    random.seed(7)
    first = new_event_ids(1)
    random.seed(7)
    assert new_event_ids(1) != first
