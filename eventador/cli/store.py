"""``eventador info|sql|check|import|repair DIR``: a store's contents, queries, checks and repairs."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from eventador.cli.common import (
    add_output_options,
    existing_store,
    is_store,
    print_frame,
    relation_frame,
    remove_entries,
)
from eventador.errors import EventLogColumnError, EventLogRowError, InvalidInputError
from eventador.store import open_store

__all__ = ["add_parsers", "cmd_check", "cmd_import", "cmd_info", "cmd_repair", "cmd_sql"]

_FLAGS = {"stream_id": "--case-id", "event_type": "--activity", "occurred_at": "--timestamp"}


def cmd_info(args: argparse.Namespace) -> int:
    """Streams, events, Parquet files, bytes on disk, event types and live views of a store."""
    with open_store(existing_store(args.dir), read_only=True) as store:
        info = store.info()
    info.pop("fsyncs", None)  # this read-only opener's own count: always 0
    if args.format == "json":
        print(json.dumps(info, ensure_ascii=False))
    elif args.format == "csv":
        import pandas as pd

        types = info["event_types"]
        print_frame(pd.DataFrame({"event_type": list(types), "events": list(types.values())}), "csv")
    else:
        for key in ("path", "streams", "events", "files", "hot_events", "bytes"):
            value = info[key]
            print(f"{key:>12}: {value:,}" if isinstance(value, int) else f"{key:>12}: {value}")
        print("event types:")
        for name, count in info["event_types"].items():
            print(f"  {count:>10,}  {name}")
        if info.get("views"):
            print("live views:")
            for view in info["views"]:
                print(f"  {view}")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """Run a query over the store, read-only; it reads only the store unless --allow-external."""
    with open_store(existing_store(args.dir), read_only=True, allow_external=args.allow_external) as store:
        frame = relation_frame(store.sql(args.query))
    print_frame(frame, args.format, args.limit)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Import an event log: one stream per case, one event per row.

    A failed import into a directory it created (or found empty) leaves nothing there.
    """
    from eventador.io.importing import find_column, locate_row, read_event_log

    target = Path(args.dir)
    if target.exists() and not target.is_dir():
        raise InvalidInputError(f"{target} is a file, not a store directory")
    existed = target.exists()
    was_empty = existed and not any(target.iterdir())
    if existed and not was_empty and not is_store(target):
        raise InvalidInputError(f"{target} exists and is not an eventador store; import into a new directory")
    started = time.perf_counter()
    df = read_event_log(args.file)  # before a store is made: a file that cannot be read leaves nothing
    try:
        with open_store(target) as store:
            written = store.import_dataframe(
                df, stream_id=args.case_id, event_type=args.activity, occurred_at=args.timestamp,
                tz=args.timezone, progress=sys.stderr.isatty(),
            )
    except BaseException as exc:
        if not existed:
            shutil.rmtree(target, ignore_errors=True)
        elif was_empty:
            remove_entries(target)
        if isinstance(exc, EventLogColumnError):
            flags = ", ".join(f"{flag} COLUMN" for flag in _FLAGS.values())
            raise InvalidInputError(
                f"{args.file}: {exc.reason}; its columns are: {', '.join(map(repr, exc.columns))}; "
                f"say which they are with {flags}"
            ) from None
        if isinstance(exc, EventLogRowError):
            raise InvalidInputError(
                f"{args.file}: {locate_row(args.file, exc.row)}, column {exc.column!r}: {exc.reason}"
            ) from None
        raise
    streams = df[find_column(df, "stream_id", args.case_id)].nunique()
    took = time.perf_counter() - started
    print(f"imported {written:,} events in {streams:,} streams from {args.file} in {took:.1f} s")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check every file of a store: Parquet checksums, log frames, catalog and manifest.

    Exit 0 when all is well, 1 on damage (each problem names the file and offset).
    """
    from eventador.store.lock import DirectoryLock
    from eventador.store.verify import verify_store

    path = existing_store(args.dir)
    lock = DirectoryLock(path)
    lock.acquire()  # no writer changes the files meanwhile (and DuckDB needs the catalog free)
    try:
        report = verify_store(path)
    finally:
        lock.release()
    if args.format == "table":
        print("\n".join(report.lines()))
    else:
        import pandas as pd

        problems = pd.DataFrame(
            {"path": [p.path for p in report.problems], "offset": [p.offset for p in report.problems],
             "problem": [p.reason for p in report.problems]}
        )
        print_frame(problems, args.format)
    return 0 if report.ok else 1


def cmd_repair(args: argparse.Namespace) -> int:
    """Rebuild a store's catalog and manifest from its data files and log, and say what was done."""
    from eventador.store.repair import repair_store

    print(repair_store(args.dir, dry_run=args.dry_run))
    return 0


def add_parsers(subparsers: Any) -> None:
    """Add ``info``, ``sql``, ``check``, ``import`` and ``repair`` to the ``eventador`` subcommands."""
    info = subparsers.add_parser(
        "info", help="streams, events, event types, files and bytes of a store", description=cmd_info.__doc__
    )
    info.add_argument("dir", help="the store directory")
    info.add_argument(
        "--format", choices=("table", "json", "csv"), default="table",
        help="output format (default: table; json: everything, csv: the event types)",
    )
    info.set_defaults(run=cmd_info)

    sql = subparsers.add_parser("sql", help="run a SQL query over a store's events and typed views")
    sql.add_argument("dir", help="the store directory")
    sql.add_argument("query", help="the query, e.g. \"SELECT event_type, count(*) FROM events GROUP BY 1\"")
    add_output_options(sql)
    sql.add_argument(
        "--allow-external",
        action="store_true",
        help="let the query read and write files outside the store and make scratch tables "
        "(default: it only reads the store)",
    )
    sql.set_defaults(run=cmd_sql)

    check = subparsers.add_parser(
        "check",
        help="check every file of a store (Parquet checksums, log frames, catalog, manifest); exit 1 on damage",
        description=cmd_check.__doc__,
    )
    check.add_argument("dir", help="the store directory (no process may have it open for writing)")
    add_output_options(check)
    check.set_defaults(run=cmd_check)

    imp = subparsers.add_parser(
        "import", help="import an event log (.xes, .xes.gz, .csv, .parquet): one stream per case",
        description=cmd_import.__doc__,
    )
    imp.add_argument("dir", help="the store directory (created if missing)")
    imp.add_argument("file", help="the event log")
    found = "default: the column named like it"
    imp.add_argument("--case-id", metavar="COLUMN", help=f"case column ({found}: case:concept:name, case, case_id...)")
    imp.add_argument("--activity", metavar="COLUMN", help=f"activity column ({found}: concept:name, activity...)")
    imp.add_argument("--timestamp", metavar="COLUMN", help=f"time column ({found}: time:timestamp, timestamp...)")
    imp.add_argument(
        "--timezone", metavar="ZONE",
        help="the zone of times written without one, e.g. Europe/Amsterdam or UTC (default: such times are refused)",
    )
    imp.set_defaults(run=cmd_import)

    repair = subparsers.add_parser(
        "repair", help="rebuild a store's catalog and manifest from its data files and log",
        description=cmd_repair.__doc__,
    )
    repair.add_argument("dir", help="the store directory (no writer may have it open)")
    repair.add_argument("--dry-run", action="store_true", help="only say what would be done")
    repair.set_defaults(run=cmd_repair)
