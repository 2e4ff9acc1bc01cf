"""The small frozen values an actor system reports: dead letters, failures, metrics."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["ActorMetrics", "DeadLetter", "Failure"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that reached no handler: whom it was for, why, and when (the system's clock).

    `reason` is ``"stopped"`` (the actor was stopped, or stopped with the message still
    in its mailbox), ``"unknown actor"`` (no actor by that name), ``"unhandled"`` (the
    actor called ``unhandled()``) or ``"failed: <error>"`` (its handler raised).
    """

    recipient: str
    message: object
    reason: str
    time: datetime


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure the system took over as every actor's parent, and what came of it.

    `message` is None when the actor failed while starting rather than on a message.
    """

    actor: str
    message: object
    error: BaseException
    outcome: str
    time: datetime


@dataclass(frozen=True, slots=True)
class ActorMetrics:
    """One actor's counters since it was spawned, across restarts and passivation.

    `processed` counts every message its handler finished, `failures` those that
    raised (plus failed starts); times are the handler's wall time in seconds.
    `state` is one of starting, running, passivating, passivated, stopping, stopped.
    """

    name: str
    state: str
    processed: int
    failures: int
    restarts: int
    mailbox_depth: int
    total_seconds: float
    mean_seconds: float
