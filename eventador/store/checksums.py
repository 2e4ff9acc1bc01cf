"""Whole-file checksums of the store's Parquet files, checked once per file per process.

DuckDB does not check Parquet page checksums, pyarrow checks only the pages it
reads, and nothing checks a footer: a damaged statistic can hide a row group
from every reader. So each file the store writes carries a CRC-32 of all its
bytes in its own footer (key-value ``eventador.crc32``, 8 hex digits, taken
while they read ``00000000``), and before a process first uses a file it reads
the file once and checks that sum: a sequential read at disk speed, remembered
per file (path, inode, size, times) for the life of the process.

Files written before the sum was added have none: they are decoded in full
instead (which checks their page checksums) and their position, version and
stream statistics are compared with the decoded values.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from eventador.errors import CorruptionError

__all__ = ["CHECKSUM_KEY", "PLACEHOLDER", "remember", "seal", "verify_file", "verify_once"]

CHECKSUM_KEY = "eventador.crc32"
PLACEHOLDER = {CHECKSUM_KEY: "00000000"}  # what ``ParquetWriter.add_key_value_metadata`` writes first
# In the footer (Thrift compact protocol) the pair is: a field header, the key's length
# and bytes, a field header and 8, then the 8 digits.
_KEY_PATTERN = b"\x18" + bytes([len(CHECKSUM_KEY)]) + CHECKSUM_KEY.encode() + b"\x18\x08"
_DIGITS = 8
_CHUNK = 1 << 20
# Columns whose statistics the store uses to skip row groups (an unchecked file's footer).
_STATISTIC_COLUMNS = ("stream_id", "version", "position", "recorded_at")

_verified: set[tuple[str, int, int, int, int, int]] = set()
_verified_lock = threading.Lock()


def seal(path: Path) -> None:
    """Returns nothing; writes the CRC-32 of file `path` into its placeholder (before the
    file is fsynced and renamed: a crash leaves a temporary file, removed on open)."""
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        at = _digits_offset(f, size)
        if at is None:
            raise CorruptionError(str(path), "no checksum placeholder in the footer just written")
        digits = b"%08x" % _crc(f, size, at)
        f.seek(at)
        f.write(digits)


def verify_file(path: Path) -> bool:
    """True when `path` carries a checksum and it matches; False for a file without one,
    decoded in full instead. Remembers the file as verified for this process.

    Costs one sequential read of the file (a full decode for a file without a sum).

    Raises:
        CorruptionError: the checksum does not match, or the file cannot be decoded.
    """
    key = _identity(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            at = _digits_offset(f, size)
            if at is not None:
                f.seek(at)
                stored = f.read(_DIGITS)
                computed = b"%08x" % _crc(f, size, at)
                if stored != computed:
                    raise CorruptionError(
                        str(path), f"file checksum {stored.decode(errors='replace')!r} does not match "
                        f"its bytes ({computed.decode()}): the file is damaged"
                    )
    except OSError as exc:
        raise CorruptionError(str(path), f"cannot read: {exc}") from exc
    if at is None:
        _decode_everything(path)
    with _verified_lock:
        _verified.add(key)
    return at is not None


def verify_once(path: Path) -> None:
    """Returns nothing; verifies `path` (``verify_file``) unless this process already did.

    Raises:
        CorruptionError: as ``verify_file``.
    """
    if _identity(path) not in _verified:
        verify_file(path)


def remember(path: Path) -> None:
    """Returns nothing; records `path`, just written and sealed by this process, as verified."""
    key = _identity(path)
    with _verified_lock:
        _verified.add(key)


def _identity(path: Path) -> tuple[str, int, int, int, int, int]:
    """What changes when a file is replaced or rewritten (the change time cannot be set back)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CorruptionError(str(path), f"cannot read: {exc}") from exc
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _digits_offset(f: BinaryIO, size: int) -> int | None:
    """Where the checksum's 8 digits are in the file, or None when its footer has none."""
    if size < 12:
        return None
    f.seek(size - 8)
    tail = f.read(8)
    (footer_length,) = struct.unpack("<I", tail[:4])
    if tail[4:] != b"PAR1" or footer_length > size - 12:
        return None
    start = size - 8 - footer_length
    f.seek(start)
    footer = f.read(footer_length)
    found = footer.rfind(_KEY_PATTERN)
    return None if found < 0 else start + found + len(_KEY_PATTERN)


def _crc(f: BinaryIO, size: int, digits_at: int) -> int:
    """CRC-32 of the file's bytes, with the checksum's digits read as the placeholder's."""
    crc = 0
    f.seek(0)
    position = 0
    while position < size:
        chunk = f.read(min(_CHUNK, size - position))
        if not chunk:
            raise OSError(f"the file ended at byte {position} of {size}")
        if position <= digits_at < position + len(chunk):
            cut = digits_at - position
            chunk = chunk[:cut] + PLACEHOLDER[CHECKSUM_KEY].encode() + chunk[cut + _DIGITS :]
        crc = zlib.crc32(chunk, crc)
        position += len(chunk)
    return crc


def _decode_everything(path: Path) -> None:
    """Decode every page of a file without a checksum (checking the page checksums it
    has) and compare the statistics readers rely on with the decoded values."""
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True, pre_buffer=False)
        with parquet:
            meta = parquet.metadata
            names = parquet.schema_arrow.names
            flat = meta.num_columns == len(names)
            for g in range(meta.num_row_groups):
                table = parquet.read_row_group(g, use_threads=False)
                group = meta.row_group(g)
                for name in _STATISTIC_COLUMNS if flat else ():
                    if name not in names:
                        continue
                    stats = group.column(names.index(name)).statistics
                    if stats is not None and stats.has_min_max:
                        column = table.column(name)
                        if pa.types.is_timestamp(column.type):
                            column = column.cast(pa.int64())
                            low, high = stats.min_raw, stats.max_raw
                        else:
                            low, high = stats.min, stats.max
                        found = pc.min_max(column).as_py()
                        if (found["min"], found["max"]) != (low, high):
                            raise CorruptionError(
                                str(path), f"row group {g}: the footer's statistics of {name} do not match its data"
                            )
    except (OSError, pa.ArrowException) as exc:
        raise CorruptionError(str(path), f"unreadable Parquet file: {exc}") from exc
