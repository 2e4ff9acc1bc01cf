"""Fixtures shared by the test suite.

``store_factory`` (and ``store``, opened from it) runs a test on every kind of store:
in memory, on disk, and both with a tiny ``flush_every`` so that reads span flushed
segments (Parquet files on disk) and the hot tier.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventador import EventStore
from eventador.testing import DirectoryStoreFactory, MemoryStoreFactory, StoreFactory
from eventador.upcasting import upcasters

STORE_KINDS = ["memory", "memory-tiny-flush", "disk", "disk-tiny-flush"]


@pytest.fixture(autouse=True)
def _forget_upcasters() -> Iterator[None]:
    """Upcasters are process-wide: those a test registers are removed after it."""
    before = {(u.event_type, u.from_version) for u in upcasters}
    yield
    for u in list(upcasters):
        if (u.event_type, u.from_version) not in before:
            upcasters.remove(u.event_type, u.from_version)


def make_factory(kind: str, directory: Path) -> StoreFactory:
    """A factory for one kind of store; on-disk stores live in `directory`."""
    if kind == "memory":
        return MemoryStoreFactory()
    if kind == "memory-tiny-flush":
        return MemoryStoreFactory(flush_every=2)
    if kind == "disk":
        return DirectoryStoreFactory(directory)
    if kind == "disk-tiny-flush":
        return DirectoryStoreFactory(directory, flush_every=2)
    raise ValueError(f"unknown store kind {kind!r}")


@pytest.fixture(params=STORE_KINDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    with make_factory(request.param, tmp_path / "store") as factory:
        yield factory


@pytest.fixture
def store(store_factory: StoreFactory) -> EventStore:
    return store_factory.open()


@pytest.fixture
def disk_factory(tmp_path: Path) -> Iterator[DirectoryStoreFactory]:
    """On-disk stores in one directory, with a small flush_every so that files pile up."""
    with DirectoryStoreFactory(tmp_path / "store", flush_every=4) as factory:
        yield factory
