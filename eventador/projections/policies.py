"""What a projection does when applying an event fails: stop, skip, or retry with backoff."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from eventador.errors import InvalidInputError

__all__ = ["ErrorPolicy", "Retry", "check_policy"]


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again after `initial_delay` seconds, doubling up to `max_delay`, `attempts` times in all.

    When every attempt failed, do `then`: "stop" (the default) or "skip".

    >>> ev.Retry(attempts=5, initial_delay=0.5, then="skip").delay(3)
    2.0
    """

    attempts: int = 3
    initial_delay: float = 0.1
    max_delay: float = 30.0
    multiplier: float = 2.0
    then: Literal["stop", "skip"] = "stop"

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidInputError(f"Retry needs attempts >= 1, got {self.attempts}")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise InvalidInputError("Retry needs delays >= 0 and a multiplier >= 1")
        if self.then not in ("stop", "skip"):
            raise InvalidInputError(f"Retry(then=...) must be 'stop' or 'skip', got {self.then!r}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failed attempt (1-based)."""
        return float(min(self.max_delay, self.initial_delay * self.multiplier ** (failures - 1)))


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
        return f"retry x{policy.attempts} then {policy.then}"
    return policy
