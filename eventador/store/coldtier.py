"""The cold tier: a store's Parquet files kept in object storage beside its lake table, the
local ``data/`` folder a bounded cache of them (``LakeTarget(local_bytes=...)``).

Each data file whose events the lake table holds is uploaded byte for byte to
``<lake uri>/_eventador/<shard>/<file name>`` (Delta ignores paths that begin with ``_``),
under a temporary name first and then moved, so that the final name only ever holds a
whole file. The catalog then records it as uploaded (``Catalog.mark_uploaded``, a DuckDB
commit, and the manifest, fsynced); only after that may the local copy be deleted, and only
while no reader pins it (``pins.remove_unless_pinned``). A read of a file that is not on
the local disk fetches it (``fetch``: a temporary name, fsync, rename, then its checksum
checked) through ``FileSegment._handles``, the one way a read reaches a file's bytes.

When compaction merges uploaded files away, the catalog moves their names from the uploaded
files to the discarded copies in the transaction that forgets them; the copies are deleted
(``delete``) an hour later (``flushing.COPY_GRACE_SECONDS``), since reads begun before the merge may still fetch them,
and never while a listed file has that name.

The log and the hot tier stay on the local disk: the cold tier only ever holds files
the store has flushed and the lake has committed.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from eventador.errors import CorruptionError, LakeError
from eventador.store.checksums import verify_file
from eventador.store.wal import fsync_directory

__all__ = ["FETCH_PREFIX", "ColdTier", "supports"]

FETCH_PREFIX = ".tmp-fetch-"  # a download in progress in data/ (removed on opening, as every .tmp-*)
_CHUNK = 4 << 20


class ColdTier:
    """The copies of one shard's data files in object storage (or a local directory)."""

    def __init__(self, uri: str, storage_options: dict[str, str], shard: str) -> None:
        self.uri = uri
        self.fs, self.root = _filesystem(uri, storage_options)
        self.base = f"{self.root}/_eventador/{shard}"
        self._local = isinstance(self.fs, pafs.LocalFileSystem)  # a local lake: copies fsynced like the store's
        self.where = f"{uri.rstrip('/')}/_eventador/{shard}"
        """The cold tier's location, as a URI (for messages)."""

    def upload(self, path: Path, twin: str | None = None) -> None:
        """Copy the local file `path` to the cold tier, whole under its final name or not at all.

        `twin`: where the lake's table holds the same bytes if the publish placed the store's
        own file there (a path under the lake's URI): in object storage the store copies it
        there itself (S3 CopyObject: whole or nothing, no bytes sent); the file is uploaded as
        any other where that copy fails or the twin is not there (or not of its size).

        Raises:
            LakeError: the object store failed (nothing is under the final name unless it is whole).
            FileNotFoundError: `path` is gone (merged away meanwhile).
        """
        final = f"{self.base}/{path.name}"
        temp = f"{self.base}/.tmp-{path.name}-{uuid.uuid4().hex[:8]}"
        size = path.stat().st_size
        try:
            if self._size(final) == size:
                return  # uploaded before a crash came between the upload and its record
            if self._local:
                _copy_durably(path, Path(temp), Path(final))
            elif twin is not None and self._copied(f"{self.root}/{twin}", final, size):
                pass
            else:
                with open(path, "rb") as source, self.fs.open_output_stream(temp) as sink:
                    while chunk := source.read(_CHUNK):
                        sink.write(chunk)
                self.fs.move(temp, final)  # S3: the object appears whole under its final name
            found = self._size(final)
        except FileNotFoundError:
            if not path.exists():
                raise
            raise LakeError(self.uri, f"cannot upload {path.name} to {self.where}: a directory is missing") from None
        except (OSError, pa.ArrowException) as exc:
            with contextlib.suppress(OSError):
                self.fs.delete_file(temp)
            raise LakeError(self.uri, f"cannot upload {path.name} to {self.where}: {exc}") from exc
        if found != size:
            raise LakeError(self.uri, f"{path.name} in {self.where} is {found} bytes after its upload, not {size}")

    def _copied(self, source: str, final: str, size: int) -> bool:
        """Whether the object store copied `source` (`size` bytes) to `final` itself."""
        try:
            if self._size(source) != size:
                return False
            self.fs.copy_file(source, final)
        except (OSError, pa.ArrowException):
            return False  # gone (a vacuum of the table), or no server-side copy: uploaded instead
        return True

    def fetch(self, path: Path) -> None:
        """Download the file named like `path` to `path` (a temporary name, fsync, rename) and
        check its checksum.

        Raises:
            LakeError: the object store cannot be reached, or does not hold the file (names both).
            CorruptionError: the copy's checksum does not match its bytes (the copy is not kept).
        """
        remote = f"{self.base}/{path.name}"
        temp = path.with_name(f"{FETCH_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}.part")
        try:
            with self.fs.open_input_stream(remote) as source:
                _write_durably(source, temp, path)
        except (OSError, pa.ArrowException) as exc:
            temp.unlink(missing_ok=True)
            cause = "it is not there" if isinstance(exc, FileNotFoundError) else str(exc)
            raise LakeError(
                self.uri, f"cannot fetch data file {path.name} from {self.where}/{path.name}: {cause}"
            ) from exc
        try:
            verify_file(path)
        except CorruptionError as exc:
            path.unlink(missing_ok=True)
            raise CorruptionError(f"{self.where}/{path.name}", f"the copy in the cold tier: {exc.reason}") from exc

    def delete(self, name: str) -> None:
        """Delete the copy of data file `name` (gone already: nothing to do).

        Raises:
            LakeError: the object store failed.
        """
        try:
            self.fs.delete_file(f"{self.base}/{name}")
        except FileNotFoundError:
            pass
        except (OSError, pa.ArrowException) as exc:
            raise LakeError(self.uri, f"cannot delete {name} from {self.where}: {exc}") from exc

    def _size(self, remote: str) -> int | None:
        info = self.fs.get_file_info(remote)
        return info.size if info.type == pafs.FileType.File else None


def supports(uri: str) -> bool:
    """Whether a cold tier can live at lake `uri` (a local path or ``s3://``)."""
    return urlparse(uri).scheme in ("", "file", "s3", "s3a")


def _copy_durably(path: Path, temp: Path, final: Path) -> None:
    """`path` copied to `final` on the local disk (see ``_write_durably``)."""
    with open(path, "rb") as source:
        _write_durably(source, temp, final)


def _write_durably(source: Any, temp: Path, final: Path) -> None:
    """The bytes of `source` (a readable stream) written to `final`: a temporary name, fsync,
    rename, fsync of the folder, so `final` only ever holds a whole file."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(temp, "wb") as sink:
        while chunk := source.read(_CHUNK):
            sink.write(chunk)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(temp, final)
    fsync_directory(final.parent)


def _filesystem(uri: str, options: dict[str, str]) -> tuple[pafs.FileSystem, str]:
    """A pyarrow file system for `uri` (S3 with deltalake's storage options, or the local disk)
    and the path of `uri` within it."""
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "s3a"):
        opts = {k.upper(): v for k, v in options.items()}
        endpoint = opts.get("AWS_ENDPOINT_URL") or opts.get("AWS_ENDPOINT")
        kwargs: dict[str, Any] = {
            "access_key": opts.get("AWS_ACCESS_KEY_ID"), "secret_key": opts.get("AWS_SECRET_ACCESS_KEY"),
            "session_token": opts.get("AWS_SESSION_TOKEN"), "region": opts.get("AWS_REGION", "us-east-1"),
            "connect_timeout": 3, "request_timeout": 30,
        }
        if endpoint:
            target = urlparse(endpoint)
            kwargs["endpoint_override"] = target.netloc or endpoint
            kwargs["scheme"] = target.scheme or "https"
        return pafs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None}), (
            f"{parsed.netloc}{parsed.path}".rstrip("/")
        )
    if not supports(uri):
        raise LakeError(uri, f"a cold tier (local_bytes) needs a local path or s3:// URI, not {parsed.scheme}://")
    root = parsed.path if parsed.scheme == "file" else uri
    return pafs.LocalFileSystem(), str(Path(root).absolute())
