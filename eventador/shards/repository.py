"""Aggregates over a sharded store: each one a ``Repository`` on its stream's shard."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from eventador.aggregates import AggregateRoot, Repository
from eventador.errors import InvalidInputError
from eventador.messages import Command, State

if TYPE_CHECKING:
    import pandas as pd

    from eventador.shards.store import ShardedStore

__all__ = ["ShardedRepository"]

S = TypeVar("S", bound=State)


class ShardedRepository(Generic[S]):
    """Returns the aggregates of `aggregate_class` in a ``ShardedStore``: ``Repository`` per shard.

    ``execute``, ``get`` and ``history`` go to the aggregate's shard (its stream lives
    there, with its snapshots); ``states`` unites every shard's. Past points are aware
    datetimes only: a position is a shard's, not the store's. Options (``cache_size``,
    ``max_retries``) go to each shard's ``Repository``.
    """

    def __init__(self, store: ShardedStore, aggregate_class: type[AggregateRoot[S]], **options: Any) -> None:
        self.store = store
        self.aggregate_class = aggregate_class
        self._options = options
        self._repos: dict[int, Repository[S]] = {}
        self._lock = threading.Lock()

    def execute(self, aggregate_id: str, command: Command) -> S:
        """``Repository.execute`` on the aggregate's shard.

        Raises:
            ShardNotWritableError: another process writes that shard.
            CommandRejected, ConcurrencyError: as ``Repository.execute``.
        """
        self.store._writer(aggregate_id)  # names the shard when this process does not write it
        return self._repo(aggregate_id).execute(aggregate_id, command)

    def get(self, aggregate_id: str, *, as_of: datetime | None = None) -> S:
        """``Repository.get`` on the aggregate's shard."""
        _check_point(as_of)
        return self._repo(aggregate_id).get(aggregate_id, as_of=as_of)

    def history(self, aggregate_id: str) -> pd.DataFrame:
        """``Repository.history`` on the aggregate's shard."""
        return self._repo(aggregate_id).history(aggregate_id)

    def states(self, *, as_of: datetime | None = None) -> pd.DataFrame:
        """Every shard's ``Repository.states`` in one DataFrame, ordered by aggregate id."""
        import pandas as pd

        _check_point(as_of)
        frames = [self._shard_repo(shard).states(as_of=as_of) for shard in self._shards()]
        frame = pd.concat(frames).sort_index()
        frame.index.name = "aggregate_id"
        return frame

    def _shards(self) -> list[int]:
        return [s for s in range(self.store.shards) if self.store._reader(s) is not None]

    def _repo(self, aggregate_id: str) -> Repository[S]:
        return self._shard_repo(self.store.shard_of(aggregate_id))

    def _shard_repo(self, shard: int) -> Repository[S]:
        with self._lock:
            repo = self._repos.get(shard)
            if repo is None:
                repo = self._repos[shard] = Repository(self.store.shard(shard), self.aggregate_class, **self._options)
            return repo

    def __repr__(self) -> str:
        return f"ShardedRepository({self.aggregate_class.__name__}, store={self.store!r})"


def _check_point(as_of: object) -> None:
    if as_of is not None and not isinstance(as_of, datetime):
        raise InvalidInputError(
            f"a sharded store has no global position: as_of takes an aware datetime, got {as_of!r}"
        )
