"""Publishing a store's flushed events as a Delta Lake table (a local path or S3-compatible storage).

``open_store(path, lake="s3://bucket/events")`` (or ``lake=LakeTarget(...)``) attaches a
``LakePublisher``. The flush writes its data file in the lake's layout (``layout``: the
store's columns and the lake's beside them, store/lake_schema.py), and wakes the publisher's
thread, which adds that very file to the table: a hard link into the table's folder (a copy
across file systems), or one upload to object storage, and one Delta commit of its add
action and an application transaction (``txn``: app id ``eventador:<shard>``, version = the
last position published). A file the table cannot take as it is (written before the lake was
configured, merged, imported, or whose lake columns have other types than the table's) has
its events converted to the lake's schema and written as a new file (store/lake_files.py).
The add and the watermark land together or not at all, so a re-run (after a crash, a timeout
whose commit did land, a reopen) publishes from the watermark and nothing twice. Opening
publishes what the store flushed while no publisher ran (the catalog's files past the
watermark, read back). The store's compaction compacts the shard's lake files too: Delta's
optimize, removes plus adds with ``dataChange=false``.

The store never waits for the lake: its log and files are the record. A lake that fails (the
object store away, a timeout) is retried by the thread with a growing delay; the table catches
up when it returns. `max_lag` flushes the hot tier on a timer, so the table lags the log by at
most about `max_lag` seconds (plus a publish) while the lake is reachable.

deltalake is imported here only when a lake is configured (the ``eventador[lake]`` extra).
delta-rs does not survive ``fork``: processes that publish must be started with ``spawn``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from eventador.errors import InvalidInputError, LakeError
from eventador.store.lake_files import add_action, encode_file, file_stats, link_file, put_file, table_path
from eventador.store.lake_schema import LAKE_ENVELOPE, SHARD, lake_rows, matches_table, to_lake, with_lake_columns
from eventador.store.segments import FileSegment, Segment

if TYPE_CHECKING:
    from eventador.store.store import EventStore

__all__ = ["LakePublisher", "LakeTarget", "load_table", "storage_options_for", "table_schema"]

log = logging.getLogger("eventador.lake")

_CONFLICT_TRIES = 5  # commits in a row that another shard's schema change may beat
COMPACT_FILES = 8  # a shard's lake files before the store's compaction compacts them too
_RETRY_FIRST, _RETRY_MAX = 0.5, 30.0  # seconds between publishing attempts while the lake fails
# Defaults for object stores: an unreachable endpoint fails in seconds, not minutes.
_QUICK = {"connect_timeout": "3s", "timeout": "30s", "max_retries": "2", "retry_timeout": "10s"}


@dataclass(frozen=True)
class LakeTarget:
    """Where and how a store publishes its lake table.

    `uri`: a local directory or ``s3://bucket/prefix``. `storage_options`: deltalake's (for S3:
    ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
    ``AWS_ALLOW_HTTP``...). `shard`: this writer's partition value (one writer per shard).
    `max_lag`: seconds after which unflushed events are flushed (and so published); None: only
    flushes by size and at closing. `payload_json`: False leaves the ``payload_json`` column
    null (it is built from the typed columns with Arrow compute where they hold the payload, else from
    a CBOR decode and a JSON encode per event, in Python: store/lake_json.py).
    `local_bytes`: None keeps every data file on the local disk; a number makes the local
    ``data/`` folder a cache of at most that many bytes of them (0: none), the files living in
    object storage beside the table once it holds their events (store/coldtier.py).
    """

    uri: str
    storage_options: dict[str, str] = field(default_factory=dict)
    shard: str = "main"
    max_lag: float | None = 60.0
    payload_json: bool = True
    local_bytes: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.uri, str) or not self.uri:
            raise InvalidInputError(f"a lake needs a URI (a path or s3://bucket/prefix), got {self.uri!r}")
        if not isinstance(self.shard, str) or not self.shard or "/" in self.shard:
            raise InvalidInputError(f"a lake shard is a non-empty name without '/', got {self.shard!r}")
        if self.max_lag is not None and not self.max_lag > 0:
            raise InvalidInputError(f"max_lag must be a positive number of seconds or None, got {self.max_lag!r}")
        if self.local_bytes is not None and (
            isinstance(self.local_bytes, bool) or not isinstance(self.local_bytes, int) or self.local_bytes < 0
        ):
            raise InvalidInputError(f"local_bytes must be a number of bytes >= 0 or None, got {self.local_bytes!r}")

    @property
    def app_id(self) -> str:
        """The application-transaction id whose version is the shard's last published position."""
        return f"eventador:{self.shard}"


def storage_options_for(uri: str, options: dict[str, str]) -> dict[str, str]:
    """deltalake's storage options for `uri`: the caller's, and quick timeouts for object stores."""
    return options if "://" not in uri or uri.startswith("file://") else {**_QUICK, **options}


def _local_root(uri: str) -> Path | None:
    """The table's folder when `uri` is on the local file system (a path or ``file://``), else None."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    return None if "://" in uri else Path(uri)


def _deltalake() -> Any:
    try:
        import deltalake
    except ImportError as exc:
        raise InvalidInputError("a lake needs deltalake: pip install 'eventador[lake]'") from exc
    return deltalake


_CAUSES = (  # what delta-rs's long error texts come down to
    (("NoSuchBucket",), "the bucket does not exist"),
    (("SignatureDoesNotMatch", "InvalidAccessKeyId", "403 Forbidden", "AccessDenied"), "the credentials were refused"),
    (("Connection refused", "tcp connect", "dns error", "timed out", "error sending request"), "it cannot be reached"),
)


def reason(exc: BaseException) -> str:
    """A short account of a deltalake / object-store failure: its cause first, then its text on one line."""
    text = re.sub(r"\x1b\[[0-9;]*m|↳", "", str(exc))
    text = " / ".join(line.strip() for line in text.splitlines() if line.strip())
    causes = [cause for needles, cause in _CAUSES if any(n in text for n in needles)]
    return f"{causes[0]} ({text})" if causes else text


def table_schema(table: Any) -> pa.Schema:
    """A ``DeltaTable``'s schema as a pyarrow schema (deltalake hands out arro3's)."""
    return pa.schema(table.schema().to_arrow())


def load_table(uri: str, storage_options: dict[str, str]) -> Any:
    """The Delta table at `uri` (a ``deltalake.DeltaTable``).

    Raises:
        LakeError: there is no table, or it cannot be reached (names the URI and the cause).
    """
    deltalake = _deltalake()
    try:
        return deltalake.DeltaTable(uri, storage_options=storage_options_for(uri, storage_options))
    except Exception as exc:  # delta-rs raises its own (TableNotFoundError, OSError...) for every cause
        raise LakeError(uri, reason(exc)) from exc


class LakePublisher:
    """Publishes one store's flushed events into a lake table; see the module's doc."""

    def __init__(self, store: EventStore, target: LakeTarget, store_id: str) -> None:
        self.store = store
        self.target = target
        self.store_id = store_id
        self.published = 0
        """The last position in the table (the watermark)."""
        self.error: LakeError | None = None
        """Why the last attempt failed (None: it did not)."""
        self.last_seconds = 0.0
        """How long the last publish that committed events took (reading, converting, committing)."""
        self.last_parts: dict[str, float] = {}
        """Where `last_seconds` went, in seconds. A data file added as it is: ``stats`` (the
        add action's statistics), ``upload`` (the file into the table's storage: a link, a copy
        or an upload), ``commit`` (the Delta commit and reading its new version). A file
        converted: ``convert`` (the rows in the lake's schema, ``payload_json`` included),
        ``encode`` (the new file's bytes and statistics), ``upload``, ``commit``; one that adds
        columns to the table has one ``write and commit`` instead of the last three."""
        self.layout_seconds = 0.0
        """How long the last flush took to add the lake's columns to its file (``layout``): the
        part of publishing that the flush does, once for the store and the table."""
        self._deltalake = _deltalake()
        self._options = storage_options_for(target.uri, target.storage_options)
        self._table: Any = None
        self._lock = threading.Lock()  # one publish or compaction at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._retry_at = 0.0
        self._delay = _RETRY_FIRST
        self._flushed_at = time.monotonic()
        self._thread: threading.Thread | None = None
        self._compact_wanted = False
        self._offered: tuple[int, int, pa.Table] | None = None
        self._files: Any = None  # deltalake's file system handler of the table, made at the first file
        self._schema = LAKE_ENVELOPE  # the table's, as of its last snapshot here (read by flushes)
        self._local = _local_root(target.uri)

    # -- opening and closing --------------------------------------------------------------

    def open(self, flushed: int) -> None:
        """Reach the table (made if missing), read its watermark, and start publishing.

        `flushed`: the store's last position in its data files.

        Raises:
            LakeError: the lake cannot be reached or created (bad URI, credentials, missing
                bucket), or its shard is another store's: claimed by one, or holding positions
                past this store's.
        """
        self._table = self._open_table()
        self._schema = table_schema(self._table)
        self.published = self._watermark()
        if self.published > flushed:
            raise LakeError(
                self.target.uri,
                f"shard {self.target.shard!r} already holds positions up to {self.published}, past this store's "
                f"{flushed}: it is another store's shard (give this store its own shard)",
            )
        self._claim()
        if self._local is not None:  # placings a crash cut short (Delta's vacuum skips hidden names)
            folder = self._local / table_path(self.target.shard, "")
            for temp in folder.glob(f".{self._file_name('*')}.tmp"):
                temp.unlink(missing_ok=True)
        self._thread = threading.Thread(target=self._run, name=f"eventador-lake-{self.target.shard}", daemon=True)
        self._thread.start()
        self._wake.set()  # publish what the store flushed while no publisher ran

    def close(self) -> None:
        """Publish what is flushed (one attempt: a failing lake catches up at the next open), then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(LakeError):
            self.sync()

    def _open_table(self) -> Any:
        uri, deltalake = self.target.uri, self._deltalake
        try:
            if not deltalake.DeltaTable.is_deltatable(uri, storage_options=self._options):
                with contextlib.suppress(Exception):  # another shard may create it first: loaded below
                    deltalake.DeltaTable.create(
                        uri, schema=LAKE_ENVELOPE, partition_by=[SHARD], storage_options=self._options,
                        name="eventador events",
                    )
            table = deltalake.DeltaTable(uri, storage_options=self._options)
        except Exception as exc:
            raise LakeError(uri, f"cannot be opened or created: {reason(exc)}") from exc
        names = set(table_schema(table).names)
        if not set(LAKE_ENVELOPE.names) <= names:
            raise LakeError(uri, f"is a Delta table without eventador's columns ({sorted(names)})")
        return table

    def _claim(self) -> None:
        """Make this store the shard's one writer, or refuse: the table records the writer of each
        shard as an application transaction (``eventador-owner:<shard>``, version: 60 bits of the
        store id's SHA-256), set by the first store that publishes there. Two stores claiming a shard
        at once both commit from the same snapshot: Delta lets one win and the other reads it.

        Raises:
            LakeError: another store claimed the shard.
        """
        owner_id = f"eventador-owner:{self.target.shard}"
        mine = int(hashlib.sha256(self.store_id.encode()).hexdigest()[:15], 16)  # a version is an int64
        owner = self._table.transaction_version(owner_id)
        if owner is None:
            deltalake = self._deltalake
            properties = deltalake.CommitProperties(
                app_transactions=[deltalake.Transaction(owner_id, mine)],
                custom_metadata={"eventador.store_id": self.store_id, "eventador.claims": self.target.shard},
            )
            failure: Exception | None = None
            try:
                self._table.create_write_transaction(
                    [], mode="append", schema=self._schema, partition_by=[SHARD], commit_properties=properties,
                )
            except Exception as exc:  # another store's claim landed first (read below), or the lake failed
                failure = exc
            try:
                self._table.update_incremental()
            except Exception as exc:
                raise LakeError(self.target.uri, f"cannot claim shard {self.target.shard!r}: {reason(exc)}") from exc
            owner = self._table.transaction_version(owner_id)
            if owner is None and failure is not None:
                raise LakeError(self.target.uri, f"cannot claim shard {self.target.shard!r}: {reason(failure)}")
        if owner != mine:
            raise LakeError(
                self.target.uri,
                f"shard {self.target.shard!r} is written by another store (the table records its writer): "
                "give this store its own shard",
            )

    def _watermark(self) -> int:
        return int(self._table.transaction_version(self.target.app_id) or 0)

    # -- publishing -----------------------------------------------------------------------

    def flushed(self) -> None:
        """The store wrote a data file: publish it soon (in the publisher's thread)."""
        self._flushed_at = time.monotonic()
        self._wake.set()

    def sync(self) -> int:
        """Publish every flushed event now, in this thread; returns the watermark.

        Raises:
            LakeError: the lake failed (the next attempt publishes from the watermark).
        """
        with self._lock:
            try:
                self._publish()
                self.store.offload_files(self.published, self.target.local_bytes, self._path_in_table)
            except LakeError as exc:
                self._failed(exc)
                raise
            self._succeeded()
        return self.published

    def layout(self, rows: pa.Table) -> pa.Table:
        """The rows of a data file the store is about to write, in the layout the table takes
        as it is: the lake's columns beside the store's (store/lake_schema.py); called by the
        flush, in the flushing thread. Where they cannot be built, the rows as they are (logged):
        their publish converts them."""
        started = time.perf_counter()
        try:
            layout = with_lake_columns(
                rows, self.target.shard, self._schema, payload_json=self.target.payload_json,
                classes=self.store.registry.classes(),
            )
        except Exception as exc:  # the lake never fails a flush: the publish converts the file's rows
            log.warning("lake %s: the flush writes its file without the lake's columns: %s", self.target.uri, exc)
            layout = rows
        self.layout_seconds = time.perf_counter() - started
        return layout

    def offer(self, first: int, last: int, rows: pa.Table) -> None:
        """The rows of the data file of positions `first`..`last` the store just wrote: their
        publish takes them from memory instead of reading the file back (only the latest is
        kept; a backlog, or a file merged since, is read)."""
        self._offered = (first, last, rows)

    def _publish(self) -> None:
        """One commit per data file past the watermark (a backlog's memory stays one file's)."""
        segments = [s for s in self.store.state().segments if s.last_position > self.published]
        if not segments:
            return
        try:
            if self.error is not None:  # a failed commit may have landed: read the watermark again
                self._table.update_incremental()
                self._schema = table_schema(self._table)
                self.published = self._watermark()
            for segment in segments:
                if segment.last_position <= self.published:
                    continue
                for attempt in range(_CONFLICT_TRIES):
                    try:
                        self._publish_segment(segment)
                        break
                    except self._deltalake.exceptions.CommitFailedError:
                        # Another shard changed the table's schema meanwhile (its new columns): the
                        # commit did not land; again from the new snapshot.
                        if attempt == _CONFLICT_TRIES - 1:
                            raise
                        self._table.update_incremental()
                        self._schema = table_schema(self._table)
        except Exception as exc:  # delta-rs's errors, an object store away, a file merged away
            raise LakeError(self.target.uri, f"publishing from position {self.published + 1}: {reason(exc)}") from exc

    def _publish_segment(self, segment: Segment) -> None:
        """The events of `segment` past the watermark in one commit: its file as it is, or converted."""
        started = time.perf_counter()
        offered = self._offered
        if offered is not None and offered[:2] == (segment.first_position, segment.last_position):
            table = offered[2]
        else:
            table = segment.read_table()
        schema = self._schema
        parts: dict[str, float] = {}
        whole = segment.first_position > self.published
        if whole and isinstance(segment, FileSegment) and matches_table(table, schema):
            self._add_file(segment, table, schema, parts)
        else:
            if segment.first_position <= self.published:  # partly published (a file merged since)
                table = table.filter(pc.greater(table.column("position"), self.published))
            converting = time.perf_counter()
            rows = self._rows(table, schema)
            parts["convert"] = time.perf_counter() - converting
            self._commit(rows, schema, segment.last_position, parts)
        self._schema = table_schema(self._table)
        self.published = segment.last_position
        self.last_seconds = time.perf_counter() - started
        self.last_parts = parts
        if offered is not None and offered[1] <= self.published:
            self._offered = None

    def _rows(self, table: pa.Table, schema: pa.Schema) -> pa.Table:
        return to_lake(
            table, self.target.shard, schema, payload_json=self.target.payload_json,
            classes=self.store.registry.classes(),
        )

    def _add_file(self, segment: FileSegment, table: pa.Table, schema: pa.Schema, parts: dict[str, float]) -> None:
        """The store's own data file of `segment` (`table`: its rows, in the lake's layout) into
        the table as it is, and the watermark, in one Delta commit; seconds go into `parts`."""
        started = time.perf_counter()
        stats = file_stats(lake_rows(table))
        source = segment.path
        path = self._path_in_table(source.name)
        placing = time.perf_counter()
        if self._local is not None:
            link_file(source, self._local / path)
        else:
            put_file(self._handler(), path, source.read_bytes())
        committing = time.perf_counter()
        parts["stats"], parts["upload"] = placing - started, committing - placing
        add = add_action(path, source.stat().st_size, self.target.shard, stats)
        self._commit_add(add, schema, segment.last_position)
        parts["commit"] = time.perf_counter() - committing

    def _file_name(self, stem: str) -> str:
        """The name in the table of the store's data file `stem`.parquet: unique to this store."""
        return f"{stem}-{self.store_id[:12]}.parquet"

    def _path_in_table(self, name: str) -> str:
        """Where the table holds the store's data file `name` once added as it is (the cold
        tier copies it from there: store/coldtier.py; a file converted is not there)."""
        return table_path(self.target.shard, self._file_name(name.removesuffix(".parquet")))

    def _commit(self, rows: pa.Table, schema: pa.Schema, last: int, parts: dict[str, float]) -> None:
        """`rows` written as a new file, and the watermark `last`, in one Delta commit
        (`schema`: the table's); the seconds of writing the file and of the commit go into `parts`."""
        started = time.perf_counter()
        if not set(rows.column_names) <= set(schema.names):  # a new type's columns: delta-rs merges the schema
            self._deltalake.write_deltalake(
                self._table, rows, mode="append", partition_by=[SHARD], schema_mode="merge",
                storage_options=self._options, commit_properties=self._properties(last),
            )
            parts["write and commit"] = time.perf_counter() - started
            return
        path, body, stats = encode_file(rows, self.target.shard)
        uploading = time.perf_counter()
        put_file(self._handler(), path, body.to_pybytes())
        committing = time.perf_counter()
        parts["encode"], parts["upload"] = uploading - started, committing - uploading
        self._commit_add(add_action(path, body.size, self.target.shard, stats), schema, last)
        parts["commit"] = time.perf_counter() - committing

    def _commit_add(self, add: Any, schema: pa.Schema, last: int) -> None:
        """One Delta commit: the data file's `add` action and the watermark `last`."""
        self._table.create_write_transaction(
            [add], mode="append", schema=schema, partition_by=[SHARD], commit_properties=self._properties(last),
        )
        self._table.update_incremental()  # else the next commit, from this snapshot, conflicts with this one

    def _properties(self, last: int) -> Any:
        deltalake = self._deltalake
        return deltalake.CommitProperties(
            app_transactions=[deltalake.Transaction(self.target.app_id, last)],
            custom_metadata={"eventador.store_id": self.store_id, "eventador.last_position": str(last)},
        )

    def _handler(self) -> Any:
        """deltalake's file system handler of the table's storage (its URI and options)."""
        if self._files is None:
            from deltalake._internal import DeltaFileSystemHandler

            self._files = DeltaFileSystemHandler(self.target.uri, self._options)
        return self._files

    def compact(self) -> None:
        """The store merged files: merge this shard's small lake files too, soon (in the publisher's thread)."""
        self._compact_wanted = True
        self._wake.set()

    def _compact(self) -> None:
        """Merge this shard's small lake files, once there are `COMPACT_FILES`: Delta's optimize,
        removes and adds without data change."""
        self._compact_wanted = False
        with self._lock:
            try:
                self._table.update_incremental()
                files = pa.table(self._table.get_add_actions(flatten=True)).to_pylist()
                mine = [f for f in files if f.get(f"partition.{SHARD}") == self.target.shard]
                if len(mine) >= COMPACT_FILES:
                    self._table.optimize.compact(partition_filters=[(SHARD, "=", self.target.shard)])
            except Exception as exc:
                log.warning("lake %s: compaction failed, will retry: %s", self.target.uri, reason(exc))

    def _failed(self, exc: LakeError) -> None:
        if self.error is None:
            log.warning("lake %s: publishing failed, the store keeps every event and retries: %s", self.target.uri, exc)
        self.error = exc
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, _RETRY_MAX)

    def _succeeded(self) -> None:
        if self.error is not None:
            log.warning("lake %s: publishing again, up to position %d", self.target.uri, self.published)
        self.error = None
        self._delay = _RETRY_FIRST

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        lag = self.target.max_lag
        tick = min(lag / 4, 1.0) if lag is not None else 1.0
        while not self._stop.is_set():
            woken = self._wake.wait(tick)
            self._wake.clear()
            if self._stop.is_set():
                return
            if lag is not None and time.monotonic() - self._flushed_at >= lag:
                self._flushed_at = time.monotonic()
                self._flush_store()
                continue  # the flush wakes us
            if (woken or self.error is not None) and time.monotonic() >= self._retry_at:
                with contextlib.suppress(LakeError):
                    self.sync()
                    if self._compact_wanted:
                        self._compact()

    def _flush_store(self) -> None:
        try:
            if self.store.last_position > self._flushed_position():
                self.store.flush()
        except Exception as exc:  # a closing store, a full disk: the next flush writes them
            log.warning("lake %s: the timed flush failed: %s", self.target.uri, exc)

    def _flushed_position(self) -> int:
        segments = self.store.state().segments
        return segments[-1].last_position if segments else 0
