"""The ``eventador`` command: a thin shell over the library.

Each command opens a store and calls one public function. Errors print one
line and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from eventador import __version__
from eventador.cli.common import add_output_options, existing_store, is_store, print_frame
from eventador.errors import EventadorError, EventLogColumnError, EventLogRowError, InvalidInputError, StoreLockedError
from eventador.store import open_store
from eventador.store.sqlguard import SqlRelation

__all__ = ["DEMO_DIR", "main"]

DEMO_DIR = "eventador-demo"
"""Where ``eventador demo`` builds its store when given no directory (in the current directory)."""
_DEMO_MARK = "DEMO"  # lists what the demo wrote, so that a rerun removes that and nothing else
_FLAGS = {"stream_id": "--case-id", "event_type": "--activity", "occurred_at": "--timestamp"}


def cmd_demo(args: argparse.Namespace) -> int:
    """Build a demo bank store and query it. Run again, it replaces its own files and nothing else."""
    from eventador.demo import QUERIES, build_demo

    path = Path(args.dir)
    _clear_demo(path)
    print(f"Building a demo bank in {path.resolve()}")
    started = time.perf_counter()
    with tqdm(total=90, desc="simulating days", unit="day", disable=not sys.stderr.isatty()) as bar:
        store = build_demo(path, accounts=args.accounts, progress=lambda done, total: bar.update(1))
    with store:
        written = sorted(entry.name for entry in path.iterdir())
        (path / _DEMO_MARK).write_text(
            "built by `eventador demo`, which replaces these entries (and only these) when run again:\n"
            + "".join(f"{name}\n" for name in written)
        )
        info = store.info()
        took = time.perf_counter() - started
        print(f"Built in {took:.1f} s:")
        print(
            f"  {info['streams']:,} accounts, {info['events']:,} events, "
            f"{info['files']} Parquet file(s), {info['bytes']:,} bytes on disk"
        )
        for name, count in info["event_types"].items():
            print(f"  {count:>7,}  {name}")
        for title, query in QUERIES:
            print(f"\n-- {title}\n{query};")
            print_frame(_frame(store.sql(query)), "table")
    print(f"\nAsk your own: eventador sql {path} \"SELECT count(*) FROM events\"")
    print(f"The demo store is in {path.resolve()}; delete it with: rm -r {path}")
    return 0


def _clear_demo(path: Path) -> None:
    """Make room for a demo store in `path`: remove what an earlier demo wrote there, nothing else.

    Raises:
        InvalidInputError: `path` is a file, or holds anything an earlier demo did not write.
    """
    if path.exists() and not path.is_dir():
        raise InvalidInputError(f"{path} is a file; choose a new or empty directory for the demo")
    if not path.exists() or not any(path.iterdir()):
        return
    mark = path / _DEMO_MARK
    if not mark.is_file():
        raise InvalidInputError(f"{path} exists and is not a demo store; choose an empty or new directory")
    ours = set(mark.read_text().splitlines()[1:]) | {_DEMO_MARK}
    other = sorted(entry.name for entry in path.iterdir() if entry.name not in ours)
    if other:
        raise InvalidInputError(
            f"{path} holds {', '.join(other)}, which `eventador demo` did not write; "
            "move it away or choose another directory"
        )
    _remove_entries(path)  # the directory stays: it may have been there before the demo


def _remove_entries(path: Path) -> None:
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def cmd_info(args: argparse.Namespace) -> int:
    """Streams, events, Parquet files, bytes on disk, event types and live views of a store."""
    with open_store(existing_store(args.dir), read_only=True) as store:
        info = store.info()
    info.pop("fsyncs", None)  # this read-only opener's own count: always 0
    if args.format == "json":
        print(json.dumps(info, ensure_ascii=False))
    elif args.format == "csv":
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
        frame = _frame(store.sql(args.query))
    print_frame(frame, args.format, args.limit)
    return 0


def _frame(relation: SqlRelation) -> pd.DataFrame:
    """A query's rows as Python values, as DuckDB gives them: a NULL integer stays None (not NaN
    in a float column), a DECIMAL stays exact, a DATE is a date."""
    return pd.DataFrame(relation.fetchall(), columns=relation.columns, dtype=object)


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
            _remove_entries(target)
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



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventador", description="Event sourcing on Arrow, Parquet and DuckDB.")
    parser.add_argument("--version", action="version", version=f"eventador {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="build a demo bank store and query it", description=cmd_demo.__doc__)
    demo.add_argument(
        "dir", nargs="?", default=DEMO_DIR, help=f"where to build it (default: ./{DEMO_DIR}, in the current directory)"
    )
    demo.add_argument("--accounts", type=int, default=400, help="number of accounts (default: 400)")
    demo.set_defaults(run=cmd_demo)

    info = sub.add_parser(
        "info", help="streams, events, event types, files and bytes of a store", description=cmd_info.__doc__
    )
    info.add_argument("dir", help="the store directory")
    info.add_argument(
        "--format", choices=("table", "json", "csv"), default="table",
        help="output format (default: table; json: everything, csv: the event types)",
    )
    info.set_defaults(run=cmd_info)

    sql = sub.add_parser("sql", help="run a SQL query over a store's events and typed views")
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

    check = sub.add_parser(
        "check",
        help="check every file of a store (Parquet checksums, log frames, catalog, manifest); exit 1 on damage",
        description=cmd_check.__doc__,
    )
    check.add_argument("dir", help="the store directory (no process may have it open for writing)")
    add_output_options(check)
    check.set_defaults(run=cmd_check)

    imp = sub.add_parser(
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

    repair = sub.add_parser(
        "repair", help="rebuild a store's catalog and manifest from its data files and log",
        description=cmd_repair.__doc__,
    )
    repair.add_argument("dir", help="the store directory (no writer may have it open)")
    repair.add_argument("--dry-run", action="store_true", help="only say what would be done")
    repair.set_defaults(run=cmd_repair)

    from eventador.cli import projections as projections_cli
    from eventador.cli import queue as queue_cli

    projections_cli.add_parser(sub)
    queue_cli.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except StoreLockedError as exc:
        print(
            f"eventador: error: store {exc.path} is open for writing by {exc.holder}; `eventador info` and "
            f"`eventador sql` read it meanwhile, or stop that process and run `eventador {args.command}` again",
            file=sys.stderr,
        )
        return 1
    except EventadorError as exc:
        print(f"eventador: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`eventador info DIR | head`): nothing more to say to it.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
