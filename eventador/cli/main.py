"""The ``eventador`` command: a thin shell over the library.

Each command opens a store and calls one public function. This module builds the
parser from the command groups (``demo``, ``store``, ``schema``, ``projections``, ``queue``) and
runs the command asked for. Errors print one line and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from eventador import __version__
from eventador.cli import demo, projections, queue, schema, store
from eventador.cli.demo import DEMO_DIR
from eventador.errors import EventadorError, StoreLockedError

__all__ = ["DEMO_DIR", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command, in the order ``eventador --help`` lists them."""
    parser = argparse.ArgumentParser(prog="eventador", description="Event sourcing on Arrow, Parquet and DuckDB.")
    parser.add_argument("--version", action="version", version=f"eventador {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(sub)
    store.add_parsers(sub)
    schema.add_parser(sub)
    projections.add_parser(sub)
    queue.add_parsers(sub)
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
