"""``eventador demo [DIR]``: build a demo bank store and query it."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from eventador.cli.common import print_frame, relation_frame, remove_entries
from eventador.errors import InvalidInputError

__all__ = ["DEMO_DIR", "add_parser", "cmd_demo"]

DEMO_DIR = "eventador-demo"
"""Where ``eventador demo`` builds its store when given no directory (in the current directory)."""
_DEMO_MARK = "DEMO"  # lists what the demo wrote, so that a rerun removes that and nothing else


def cmd_demo(args: argparse.Namespace) -> int:
    """Build a demo bank store and query it. Run again, it replaces its own files and nothing else."""
    from tqdm.auto import tqdm

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
            print_frame(relation_frame(store.sql(query)), "table")
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
    remove_entries(path)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``demo`` to the ``eventador`` subcommands."""
    demo: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="build a demo bank store and query it", description=cmd_demo.__doc__
    )
    demo.add_argument(
        "dir", nargs="?", default=DEMO_DIR, help=f"where to build it (default: ./{DEMO_DIR}, in the current directory)"
    )
    demo.add_argument("--accounts", type=int, default=400, help="number of accounts (default: 400)")
    demo.set_defaults(run=cmd_demo)
    return demo
