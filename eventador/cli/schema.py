"""``eventador schema DIR``: the event types, versions and field sets stored, and whether today's classes read them.

A thin shell over ``eventador.testing.check_history`` (which does the work; its report
prints itself). Exit 0 when every stored event reads under the classes and upcasters
of the ``--module``s, 1 when some do not: a CI job can run it against a copy of a
real store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from eventador.cli.common import existing_store

__all__ = ["add_parser", "cmd_schema"]


def cmd_schema(args: argparse.Namespace) -> int:
    """List every stored event type with its schema versions, their field sets and counts, and
    check that the classes and upcasters of the --module's read every stored event.

    The first stored event of each (type, version, field set) is decoded and upcast;
    --every-event reads the whole history through read_all instead, counting each
    event that does not read. Exit 0 when all read, 1 when some do not (each failure
    names type, version, field and position). The store is opened read-only: a writer
    may run meanwhile.
    """
    from eventador.testing.history import check_history

    path = existing_store(args.dir)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # --module names the project's modules, as `python -m` finds them
    report = check_history(
        path, modules=args.module, every_event=args.every_event, allow_unknown=args.allow_unknown
    )
    if args.format == "json":
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(report)
    return 0 if report.ok else 1


def add_parser(subparsers: Any) -> None:
    """Add ``schema`` to the ``eventador`` subcommands."""
    schema = subparsers.add_parser(
        "schema",
        help="the event types, schema versions and field sets a store holds; exit 1 if today's classes "
        "cannot read some",
        description=cmd_schema.__doc__,
    )
    schema.add_argument("dir", help="the store directory")
    schema.add_argument(
        "--module", action="append", default=[], metavar="M",
        help="import module M first: it defines the event classes and registers the upcasters (repeat for more)",
    )
    schema.add_argument(
        "--every-event", action="store_true",
        help="read every stored event through read_all, counting those that do not read "
        "(default: judge each field set by its first event)",
    )
    schema.add_argument(
        "--allow-unknown", action="store_true",
        help="events of a type with no class here (they read as UnknownEvent) are fine (default: they fail)",
    )
    schema.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format (default: table)"
    )
    schema.set_defaults(run=cmd_schema)
