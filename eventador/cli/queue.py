"""``eventador queue stats|dead-letters|requeue DIR`` and ``eventador saga list DIR``, from the shell.

``add_parsers(sub)`` adds them to the ``eventador`` parser. Each command opens the
store and calls one public function (``QueueManager.stats``, ``dead_letters``,
``requeue``, ``list_sagas``). The queues live in the store's catalog, which DuckDB
lets only one process open: the commands need the store to themselves, and say so in
one line while a writer has it open.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventador.cli.common import add_output_options, existing_store, print_frame
from eventador.errors import InvalidInputError, QueueError, StoreLockedError
from eventador.queue.manager import QueueManager
from eventador.sagas import SagaStatus, list_sagas
from eventador.store import EventStore, open_store

__all__ = ["add_parsers", "cmd_dead_letters", "cmd_requeue", "cmd_saga_list", "cmd_stats"]


@contextmanager
def _opened(directory: str) -> Iterator[EventStore]:
    """The store in `directory`, opened for writing (the queues are in its catalog).

    Raises:
        InvalidInputError: there is no store there.
        QueueError: another process has the store open for writing.
    """
    path = existing_store(directory)
    try:
        store = open_store(path)
    except StoreLockedError as exc:
        raise QueueError(
            f"store {exc.path} is open for writing by {exc.holder}; its queues and sagas are in its catalog, "
            "which only that process can open: stop it, then run this command again"
        ) from exc
    with store:
        yield store


def cmd_stats(args: argparse.Namespace) -> int:
    """One row per queue: depth, delayed, in flight, dead letters, age of the oldest message."""
    with _opened(args.dir) as store, QueueManager(store) as qm:
        print_frame(qm.stats(), args.format, args.limit)
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """The dead letters (of one queue, or all): id, queue, type, attempts, the last error, when."""
    with _opened(args.dir) as store, QueueManager(store) as qm:
        frame = qm.dead_letters(args.queue)
    if not args.messages:
        frame = frame.drop(columns="message")
    else:
        frame["message"] = frame["message"].map(repr)
    print_frame(frame, args.format, args.limit)
    return 0


def cmd_requeue(args: argparse.Namespace) -> int:
    """Put dead letters back in their queue, attempts reset: the ones named, or --all (of --queue)."""
    if not args.ids and not args.all:
        raise InvalidInputError("name the dead letters to requeue (their ids), or pass --all")
    if args.ids and args.all:
        raise InvalidInputError("pass dead-letter ids or --all, not both")
    with _opened(args.dir) as store, QueueManager(store) as qm:
        if args.all:
            count = qm.requeue_dead_letters(args.queue)
        else:
            for message_id in args.ids:
                qm.requeue(message_id)
            count = len(args.ids)
    print(f"requeued {count} message{'' if count == 1 else 's'}")
    return 0


def cmd_saga_list(args: argparse.Namespace) -> int:
    """Every saga of the store: id, type, status, when it last changed (and its state with --state)."""
    with _opened(args.dir) as store:
        frame = list_sagas(store, status=args.status, active=args.active)
    if not args.state:
        frame = frame.drop(columns="state")
    print_frame(frame, args.format, args.limit)
    return 0


def add_parsers(subparsers: Any) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Add ``queue`` (stats, dead-letters, requeue) and ``saga`` (list) to the ``eventador`` subcommands."""
    queue: argparse.ArgumentParser = subparsers.add_parser(
        "queue",
        help="the durable queues of a store: stats, dead letters, requeue",
        description="The durable queues of a store. The commands need the store to themselves: stop its writer first.",
    )
    actions = queue.add_subparsers(dest="queue_command", required=True, metavar="ACTION")

    stats = actions.add_parser(
        "stats", help="per queue: depth, delayed, in flight, dead, oldest age", description=cmd_stats.__doc__
    )
    stats.add_argument("dir", help="the store directory")
    add_output_options(stats)
    stats.set_defaults(run=cmd_stats)

    dead = actions.add_parser(
        "dead-letters",
        help="messages that failed every delivery, with the reason",
        description=cmd_dead_letters.__doc__,
    )
    dead.add_argument("dir", help="the store directory")
    dead.add_argument("--queue", help="only this queue (default: all)")
    dead.add_argument("--messages", action="store_true", help="show the messages too")
    add_output_options(dead)
    dead.set_defaults(run=cmd_dead_letters)

    requeue = actions.add_parser(
        "requeue", help="put dead letters back in their queue", description=cmd_requeue.__doc__
    )
    requeue.add_argument("dir", help="the store directory")
    requeue.add_argument("ids", nargs="*", type=int, metavar="ID", help="dead-letter ids (see dead-letters)")
    requeue.add_argument("--all", action="store_true", help="every dead letter (of --queue)")
    requeue.add_argument("--queue", help="with --all: only this queue")
    requeue.set_defaults(run=cmd_requeue)

    saga: argparse.ArgumentParser = subparsers.add_parser(
        "saga",
        help="the sagas of a store",
        description="The sagas of a store. The commands need the store to themselves: stop its writer first.",
    )
    saga_actions = saga.add_subparsers(dest="saga_command", required=True, metavar="ACTION")
    listing = saga_actions.add_parser(
        "list", help="every saga: id, type, status, last change", description=cmd_saga_list.__doc__
    )
    listing.add_argument("dir", help="the store directory")
    listing.add_argument(
        "--status",
        action="append",
        type=str.upper,
        choices=[s.value for s in SagaStatus],
        help="only sagas with this status (repeatable)",
    )
    listing.add_argument("--active", action="store_true", help="only RUNNING and COMPENSATING sagas")
    listing.add_argument("--state", action="store_true", help="show each saga's last saved state (JSON)")
    add_output_options(listing)
    listing.set_defaults(run=cmd_saga_list)
    return queue, saga
