"""The ``eventador`` command: a thin shell over the library.

Each command opens a store and calls one public function. Errors print one
line and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from eventador.errors import EventadorError, InvalidInputError
from eventador.store import open_store

__all__ = ["main"]

_DEMO_MARK = "DEMO"


def _print_frame(df: pd.DataFrame, fmt: str) -> None:
    if fmt == "json":
        print(df.to_json(orient="records", date_format="iso", default_handler=str))
    elif fmt == "csv":
        print(df.to_csv(index=False), end="")
    else:
        with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 160):
            print(df.to_string(index=False) if len(df) else "(no rows)")


def cmd_demo(args: argparse.Namespace) -> int:
    from eventador.demo import QUERIES, build_demo

    path = Path(args.dir)
    if path.exists() and any(path.iterdir()):
        if not (path / _DEMO_MARK).exists():
            raise InvalidInputError(f"{path} exists and is not a demo store; choose an empty or new directory")
        shutil.rmtree(path)
    started = time.perf_counter()
    with tqdm(total=90, desc="simulating days", unit="day", disable=not sys.stderr.isatty()) as bar:
        store = build_demo(path, accounts=args.accounts, progress=lambda done, total: bar.update(1))
    (path / _DEMO_MARK).write_text("built by `eventador demo`; safe to delete\n")
    with store:
        info = store.info()
        took = time.perf_counter() - started
        print(f"Built a demo bank in {path} in {took:.1f} s:")
        print(
            f"  {info['streams']:,} accounts, {info['events']:,} events, "
            f"{info['files']} Parquet file(s), {info['bytes']:,} bytes on disk"
        )
        for name, count in info["event_types"].items():
            print(f"  {count:>7,}  {name}")
        for title, query in QUERIES:
            print(f"\n-- {title}\n{query};")
            _print_frame(store.sql(query).df(), "table")
    print(f"\nAsk your own: eventador sql {path} \"SELECT count(*) FROM events\"")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with open_store(_existing(args.dir), read_only=True) as store:
        info = store.info()
    if args.format == "table":
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
    else:
        types = pd.DataFrame(
            {"event_type": list(info["event_types"]), "events": list(info["event_types"].values())}
        )
        _print_frame(types, args.format)
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    with open_store(_existing(args.dir), read_only=True) as store:
        _print_frame(store.sql(args.query).df(), args.format)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from eventador.importing import read_event_log

    started = time.perf_counter()
    df = read_event_log(args.file)
    with open_store(args.dir) as store:
        written = store.import_dataframe(
            df, stream_id=args.case_id, event_type=args.activity, occurred_at=args.timestamp,
            progress=sys.stderr.isatty(),
        )
        streams = df[args.case_id].nunique()
    took = time.perf_counter() - started
    print(f"imported {written:,} events in {streams:,} streams from {args.file} in {took:.1f} s")
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    """Rebuild a store's catalog and manifest from its data files and log, and say what was done."""
    from eventador.store.repair import repair_store

    print(repair_store(args.dir, dry_run=args.dry_run))
    return 0


def _existing(directory: str) -> Path:
    path = Path(directory)
    if not (path / "manifest.json").exists() and not (path / "wal").is_dir():
        raise InvalidInputError(f"no eventador store at {path}")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventador", description="Event sourcing on Arrow, Parquet and DuckDB.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt: dict[str, Any] = {
        "choices": ("table", "json", "csv"),
        "default": "table",
        "help": "output format (default: table)",
    }

    demo = sub.add_parser("demo", help="build a demo bank store and query it", description=cmd_demo.__doc__)
    demo.add_argument("dir", nargs="?", default="eventador-demo", help="where to build it (default: ./eventador-demo)")
    demo.add_argument("--accounts", type=int, default=400, help="number of accounts (default: 400)")
    demo.set_defaults(run=cmd_demo)

    info = sub.add_parser("info", help="streams, events, event types, files and bytes of a store")
    info.add_argument("dir", help="the store directory")
    info.add_argument("--format", **fmt)
    info.set_defaults(run=cmd_info)

    sql = sub.add_parser("sql", help="run a SQL query over a store's events and typed views")
    sql.add_argument("dir", help="the store directory")
    sql.add_argument("query", help="the query, e.g. \"SELECT event_type, count(*) FROM events GROUP BY 1\"")
    sql.add_argument("--format", **fmt)
    sql.set_defaults(run=cmd_sql)

    imp = sub.add_parser("import", help="import an event log (.xes, .xes.gz, .csv, .parquet): one stream per case")
    imp.add_argument("dir", help="the store directory (created if missing)")
    imp.add_argument("file", help="the event log")
    imp.add_argument("--case-id", default="case:concept:name", help="case column (default: case:concept:name)")
    imp.add_argument("--activity", default="concept:name", help="activity column (default: concept:name)")
    imp.add_argument("--timestamp", default="time:timestamp", help="timestamp column (default: time:timestamp)")
    imp.set_defaults(run=cmd_import)

    repair = sub.add_parser(
        "repair", help="rebuild a store's catalog and manifest from its data files and log",
        description=cmd_repair.__doc__,
    )
    repair.add_argument("dir", help="the store directory (no writer may have it open)")
    repair.add_argument("--dry-run", action="store_true", help="only say what would be done")
    repair.set_defaults(run=cmd_repair)

    from eventador import projections_cli, queue_cli

    projections_cli.add_parser(sub)
    queue_cli.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
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
