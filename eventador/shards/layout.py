"""Where each stream lives in a sharded store: stream -> bucket -> shard -> directory.

A stream's bucket is ``crc32(UTF-8 stream id) % buckets``: the same in every process, on
every machine, in every Python (unlike ``hash``). Buckets map to shards by a table fixed
when the store is made and kept in ``shards.json`` at its root, with each shard's
directory; opening with another shard or bucket count is refused, since moving a stream
to another shard would give it two writers' histories.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eventador.errors import InvalidInputError, ShardLayoutError, store_os_error

__all__ = ["DEFAULT_BUCKETS", "LAYOUT_FILE", "ShardLayout", "bucket_of"]

LAYOUT_FILE = "shards.json"
DEFAULT_BUCKETS = 256
_FORMAT = 1


def bucket_of(stream_id: str, buckets: int) -> int:
    """The bucket of `stream_id`: crc32 of its UTF-8 bytes, modulo `buckets` (stable everywhere).

    >>> bucket_of("acc-1", 256)
    161
    """
    return zlib.crc32(stream_id.encode("utf-8")) % buckets


@dataclass(frozen=True, slots=True)
class ShardLayout:
    """The fixed map of a sharded store: bucket count, bucket -> shard, and each shard's directory."""

    root: Path
    buckets: int
    shard_of_bucket: tuple[int, ...]
    directories: tuple[Path, ...]

    @property
    def shards(self) -> int:
        """How many shards there are."""
        return len(self.directories)

    def shard_of(self, stream_id: str) -> int:
        """The shard that holds (and alone writes) `stream_id`."""
        return self.shard_of_bucket[bucket_of(stream_id, self.buckets)]

    @classmethod
    def open(
        cls, root: Path, *, shards: int | None, buckets: int | None,
        directories: Sequence[str | os.PathLike[str]] | None,
    ) -> ShardLayout:
        """The layout recorded at `root`, checked against what is asked; made there if none is.

        A new layout needs `shards` (buckets default to 256, directories to
        ``root/shard-<i>``); bucket ``b`` goes to shard ``b % shards``.

        Raises:
            ShardLayoutError: the recorded layout has other counts or directories, or is damaged.
            InvalidInputError: the counts or directories asked for make no layout.
        """
        path = root / LAYOUT_FILE
        if not path.exists():
            if shards is None:
                raise InvalidInputError(f"no sharded store at {root}: give shards=N to make one")
            cls._create(root, cls._new(root, shards, buckets, directories))
        layout = cls._load(root)
        asked = [
            ("shards", shards, layout.shards),
            ("buckets", buckets, layout.buckets),
        ]
        for what, wanted, recorded in asked:
            if wanted is not None and wanted != recorded:
                raise ShardLayoutError(
                    str(path),
                    f"the store has {recorded} {what}, not {wanted}: a layout is fixed when the store is made "
                    "(streams cannot move between shards)",
                )
        if directories is not None and tuple(_resolve(root, d) for d in directories) != layout.directories:
            raise ShardLayoutError(str(path), f"the shards' directories are {[str(d) for d in layout.directories]}")
        return layout

    @classmethod
    def _new(
        cls, root: Path, shards: int, buckets: int | None, directories: Sequence[str | os.PathLike[str]] | None
    ) -> ShardLayout:
        buckets = DEFAULT_BUCKETS if buckets is None else buckets
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise InvalidInputError(f"shards must be a positive int, got {shards!r}")
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < shards:
            raise InvalidInputError(f"buckets must be an int of at least shards ({shards}), got {buckets!r}")
        if directories is None:
            dirs = tuple(root / f"shard-{i}" for i in range(shards))
        else:
            dirs = tuple(_resolve(root, d) for d in directories)
            if len(dirs) != shards or len(set(dirs)) != shards:
                raise InvalidInputError(f"directories must name {shards} different directories, got {directories!r}")
        return cls(root, buckets, tuple(b % shards for b in range(buckets)), dirs)

    @staticmethod
    def _create(root: Path, layout: ShardLayout) -> None:
        """Write ``shards.json`` whole, once: a second maker at the same moment keeps the first one's."""
        document = {
            "format": _FORMAT,
            "buckets": layout.buckets,
            "shards": [_stored(root, d) for d in layout.directories],
            "bucket_to_shard": list(layout.shard_of_bucket),
        }
        final, tmp = root / LAYOUT_FILE, root / f"{LAYOUT_FILE}.{os.getpid()}.tmp"
        try:
            root.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(document, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # made by another process meanwhile: theirs stands
                os.link(tmp, final)
            fd = os.open(root, os.O_RDONLY)
            try:
                os.fsync(fd)  # the new name is durable only once its directory is
            finally:
                os.close(fd)
        except OSError as exc:
            raise store_os_error(exc, final, "write the shard layout") from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    @classmethod
    def _load(cls, root: Path) -> ShardLayout:
        path = root / LAYOUT_FILE
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            buckets = int(document["buckets"])
            dirs = tuple(_resolve(root, d) for d in document["shards"])
            table = tuple(int(s) for s in document["bucket_to_shard"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ShardLayoutError(str(path), f"cannot be read ({exc})") from exc
        if document.get("format") != _FORMAT or len(table) != buckets or not all(0 <= s < len(dirs) for s in table):
            raise ShardLayoutError(str(path), "is not a shard layout this version can read")
        return cls(root, buckets, table, dirs)


def _resolve(root: Path, directory: str | os.PathLike[str]) -> Path:
    """A shard's directory: as given when absolute, else under `root`."""
    path = Path(directory)
    return path if path.is_absolute() else root / path


def _stored(root: Path, directory: Path) -> str:
    """How ``shards.json`` names a directory: relative to `root` when inside it (the store can move)."""
    try:
        return str(directory.relative_to(root))
    except ValueError:
        return str(directory)
