"""Helpers of the cold-tier tests (tests/lake/test_lake_cold_*.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow.fs as pafs

import eventador as ev
from eventador.store.coldtier import ColdTier


@contextmanager
def hidden(target: ev.LakeTarget) -> Iterator[None]:
    """Every copy in the lake's cold tier moved aside for the block (a fetch meanwhile fails)."""
    cold = ColdTier(target.uri, target.storage_options, target.shard)
    copies = [c.path for c in cold.fs.get_file_info(pafs.FileSelector(cold.base)) if c.path.endswith(".parquet")]
    assert copies
    for path in copies:
        cold.fs.move(path, f"{path}.hidden")
    try:
        yield
    finally:
        for path in copies:
            cold.fs.move(f"{path}.hidden", path)
