"""``eventador projection list|status|rebuild DIR [NAME]``: the projections of a store, from the shell.

``add_parser(sub)`` adds them to the ``eventador`` parser. Each command opens the
store for writing (the projection tables are in the catalog, which DuckDB lets only
the writer open) and calls one public function: ``list_projections``,
``rebuild_projection``.
"""

from __future__ import annotations

import argparse
from typing import Any

from eventador.cli.common import add_output_options, existing_store, print_frame
from eventador.errors import InvalidInputError
from eventador.projections import list_projections, rebuild_projection
from eventador.store import open_store

__all__ = ["add_parser", "cmd_list", "cmd_rebuild", "cmd_status"]


def cmd_list(args: argparse.Namespace) -> int:
    """Every projection of the store: name, kind, checkpoint, lag, version, tables, errors."""
    with open_store(existing_store(args.dir)) as store:
        df = list_projections(store)
    print_frame(df[["name", "kind", "checkpoint", "lag", "version", "tables", "errors"]], args.format, args.limit)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """One projection (or all) in full, with its recent errors."""
    with open_store(existing_store(args.dir)) as store:
        df = list_projections(store)
        if args.name is not None:
            df = df[df["name"] == args.name]
            if df.empty:
                raise InvalidInputError(f"the store has no projection named {args.name!r}")
            errors = store.sql(
                "SELECT position, stream_id, event_type, policy, attempts, error, recorded_at "
                "FROM projection_errors WHERE projection = ? ORDER BY recorded_at DESC LIMIT 10",
                [args.name],
            ).df()
        else:
            errors = None
    print_frame(df, args.format, args.limit)
    if errors is not None and len(errors) and args.format == "table":
        print(f"\nlatest errors of {args.name}:")
        print_frame(errors, args.format)
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Rebuild a SqlProjection from its stored definition, beside the live version, then swap."""
    with open_store(existing_store(args.dir)) as store:
        checkpoint = rebuild_projection(store, args.name, progress=False if args.no_progress else None)
        listed = list_projections(store).set_index("name")
        version = listed.loc[args.name, "version"]
    print(f"rebuilt {args.name}: version {version}, checkpoint {checkpoint:,}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``projection`` (with ``list``, ``status``, ``rebuild``) to the ``eventador`` subcommands."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "projection",
        help="list, inspect and rebuild the projections (read models) of a store",
        description="Projections of a store. The commands open the store for writing: stop its writer first.",
    )
    actions = parser.add_subparsers(dest="projection_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="every projection: kind, checkpoint, lag, version, errors",
                                 description=cmd_list.__doc__)
    listing.add_argument("dir", help="the store directory")
    add_output_options(listing)
    listing.set_defaults(run=cmd_list)

    status = actions.add_parser("status", help="a projection in full, with its latest errors",
                                description=cmd_status.__doc__)
    status.add_argument("dir", help="the store directory")
    status.add_argument("name", nargs="?", help="the projection (default: all)")
    add_output_options(status)
    status.set_defaults(run=cmd_status)

    rebuild = actions.add_parser("rebuild", help="rebuild a SQL projection from its stored definition",
                                 description=cmd_rebuild.__doc__)
    rebuild.add_argument("dir", help="the store directory")
    rebuild.add_argument("name", help="the SqlProjection to rebuild")
    rebuild.add_argument("--no-progress", action="store_true", help="no progress bar")
    rebuild.set_defaults(run=cmd_rebuild)
    return parser
