"""Sharded writers: streams split by a stable hash over several stores, one writer each.

``open_sharded(root, shards=N)`` makes or opens one; ``open_shard(root, i)`` writes shard
``i`` alone (one process per shard). See docs/scaling.md.
"""

from eventador.shards.layout import DEFAULT_BUCKETS, ShardLayout, bucket_of
from eventador.shards.repository import ShardedRepository
from eventador.shards.store import ShardedStore, open_shard, open_sharded

__all__ = [
    "DEFAULT_BUCKETS",
    "ShardLayout",
    "ShardedRepository",
    "ShardedStore",
    "bucket_of",
    "open_shard",
    "open_sharded",
]
