"""What a projection does when applying an event fails: stop, skip, or retry with backoff."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

from eventador.backoff import backoff_delay, check_backoff
from eventador.errors import InvalidInputError

__all__ = ["ErrorPolicy", "Retry", "check_policy"]


@dataclass(frozen=True, slots=True, init=False)
class Retry:
    """Try again after `initial_delay` seconds, times `multiplier` each time up to `max_delay`,
    `max_attempts` times in all (the queue's ``RetryPolicy`` speaks the same words).

    When every attempt failed, do `then`: "stop" (the default) or "skip". ``attempts=``
    is the former name of `max_attempts` (accepted, with a DeprecationWarning).

    >>> ev.Retry(max_attempts=5, initial_delay=0.5, then="skip").delay(3)
    2.0
    """

    max_attempts: int
    initial_delay: float
    max_delay: float
    multiplier: float
    then: Literal["stop", "skip"]

    def __init__(
        self,
        max_attempts: int = 3,
        initial_delay: float = 0.1,
        max_delay: float = 30.0,
        multiplier: float = 2.0,
        then: Literal["stop", "skip"] = "stop",
        *,
        attempts: int | None = None,
    ) -> None:
        if attempts is not None:
            warnings.warn("Retry(attempts=...) is now Retry(max_attempts=...)", DeprecationWarning, stacklevel=2)
            max_attempts = attempts
        check_backoff(
            "Retry", max_attempts=max_attempts, initial_delay=initial_delay, max_delay=max_delay, multiplier=multiplier
        )
        if then not in ("stop", "skip"):
            raise InvalidInputError(f"Retry(then=...) must be 'stop' or 'skip', got {then!r}")
        for name, value in (
            ("max_attempts", max_attempts),
            ("initial_delay", initial_delay),
            ("max_delay", max_delay),
            ("multiplier", multiplier),
            ("then", then),
        ):
            object.__setattr__(self, name, value)

    @property
    def attempts(self) -> int:
        """The former name of ``max_attempts`` (warns)."""
        warnings.warn("Retry.attempts is now Retry.max_attempts", DeprecationWarning, stacklevel=2)
        return self.max_attempts

    def delay(self, failures: int) -> float:
        """Returns the seconds to wait after the `failures`-th failed attempt (1 for the first)."""
        return backoff_delay(
            failures, initial_delay=self.initial_delay, max_delay=self.max_delay, multiplier=self.multiplier
        )


ErrorPolicy = Literal["stop", "skip", "retry"] | Retry
"""``"stop"``: the projection stops before the failing event (the default); ``"skip"``:
the event and the error go to the table ``projection_errors`` and the projection
goes on; ``"retry"``: ``Retry()``; or a ``Retry`` of your own."""


def check_policy(policy: object) -> Retry | Literal["stop", "skip"]:
    """The policy in its working form (``"retry"`` becomes ``Retry()``).

    Raises:
        InvalidInputError: not one of the policies.
    """
    if isinstance(policy, Retry):
        return policy
    if policy == "retry":
        return Retry()
    if policy == "stop":
        return "stop"
    if policy == "skip":
        return "skip"
    raise InvalidInputError(f"on_error must be 'stop', 'skip', 'retry' or ev.Retry(...), got {policy!r}")


def describe(policy: Retry | Literal["stop", "skip"]) -> str:
    if isinstance(policy, Retry):
        return f"retry x{policy.max_attempts} then {policy.then}"
    return policy
