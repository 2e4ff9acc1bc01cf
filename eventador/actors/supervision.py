"""Supervision: what becomes of an actor whose handler raised.

There is no actor hierarchy: every actor's parent is the system. ``escalate``
therefore hands the failure to the system, whose only policy is to record it in
``system.failures`` and stop the actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from eventador.backoff import backoff_delay
from eventador.errors import InvalidInputError

__all__ = ["Directive", "Supervisor"]

Directive = Literal["restart", "resume", "stop", "escalate"]


@dataclass(frozen=True, slots=True, repr=False)
class Supervisor:
    """A failure policy for one actor; build it with a class method, not the constructor.

    - ``Supervisor.restart(...)``: drop the failing message, build a fresh instance with
      the factory (after a backoff), keep the mailbox. More than ``max_restarts``
      restarts ``within`` seconds and it gives up: the failure is recorded in
      ``system.failures`` and the actor stops. This is the default, with no backoff.
    - ``Supervisor.resume()``: drop the failing message, keep the instance and its state.
    - ``Supervisor.stop()``: stop the actor (logged, not recorded as a system failure).
    - ``Supervisor.escalate()``: record the failure in ``system.failures`` and stop.

    >>> Supervisor.restart(max_restarts=5, within=10.0, backoff=(0.1, 1.0))
    Supervisor.restart(max_restarts=5, within=10, backoff=(0.1, 1))
    """

    directive: Directive = "restart"
    max_restarts: int = 3
    within: float = 60.0
    min_backoff: float = 0.0
    max_backoff: float = 0.0

    def __post_init__(self) -> None:
        if self.directive not in ("restart", "resume", "stop", "escalate"):
            raise InvalidInputError(
                f"unknown directive {self.directive!r}; use Supervisor.restart(), .resume(), .stop() or .escalate()"
            )
        if self.max_restarts < 0:
            raise InvalidInputError(f"max_restarts must be 0 or more, got {self.max_restarts}")
        if self.within <= 0:
            raise InvalidInputError(f"within must be a positive number of seconds, got {self.within}")
        if not 0 <= self.min_backoff <= self.max_backoff:
            raise InvalidInputError(
                f"backoff must satisfy 0 <= min <= max, got ({self.min_backoff}, {self.max_backoff})"
            )
        if self.min_backoff == 0 < self.max_backoff:
            raise InvalidInputError("backoff=(min, max) doubles from min, so min must be above 0")

    @classmethod
    def restart(
        cls,
        *,
        max_restarts: int = 3,
        within: float = 60.0,
        backoff: float | tuple[float, float] = 0.0,
    ) -> Supervisor:
        """Returns a policy that rebuilds the actor; `backoff` is seconds, or (min, max) doubling.

        A float waits the same time before every restart; ``(min, max)`` waits ``min``
        before the first of a run of consecutive restarts and doubles up to ``max``.
        A message handled without error ends the run.
        """
        low, high = (backoff, backoff) if isinstance(backoff, int | float) else backoff
        return cls("restart", max_restarts, float(within), float(low), float(high))

    @classmethod
    def resume(cls) -> Supervisor:
        """Returns a policy that keeps the instance and goes on with the next message."""
        return cls("resume")

    @classmethod
    def stop(cls) -> Supervisor:
        """Returns a policy that stops the actor on its first failure."""
        return cls("stop")

    @classmethod
    def escalate(cls) -> Supervisor:
        """Returns a policy that records the failure in ``system.failures`` and stops the actor."""
        return cls("escalate")

    def backoff_delay(self, attempt: int) -> float:
        """Returns the seconds to wait before the `attempt`-th consecutive restart (from 1).

        >>> [Supervisor.restart(backoff=(0.1, 0.5)).backoff_delay(n) for n in (1, 2, 3, 4)]
        [0.1, 0.2, 0.4, 0.5]
        """
        if self.max_backoff == 0:
            return 0.0
        return backoff_delay(attempt, initial_delay=self.min_backoff, max_delay=self.max_backoff)

    def __repr__(self) -> str:
        if self.directive != "restart":
            return f"Supervisor.{self.directive}()"
        if self.min_backoff == self.max_backoff:
            backoff = f"{self.min_backoff:g}"
        else:
            backoff = f"({self.min_backoff:g}, {self.max_backoff:g})"
        return f"Supervisor.restart(max_restarts={self.max_restarts}, within={self.within:g}, backoff={backoff})"
