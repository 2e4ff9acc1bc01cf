"""Exponential backoff: how long to wait after the n-th failure, for every retry policy.

One vocabulary and one computation for the queue's ``RetryPolicy``, the projections'
``Retry`` and the actors' restart backoff: after the n-th failure (1 for the first)
wait ``initial_delay * multiplier ** (n - 1)`` seconds, at most ``max_delay``; give up
after ``max_attempts`` attempts.
"""

from __future__ import annotations

import random

from eventador.errors import InvalidInputError

__all__ = ["backoff_delay", "check_backoff", "jittered"]

# multiplier ** 200 with any multiplier >= 1 that is not absurd is past any max_delay:
# capping the exponent keeps a long run of failures from overflowing a float.
_MAX_EXPONENT = 200


def backoff_delay(failures: int, *, initial_delay: float, max_delay: float, multiplier: float = 2.0) -> float:
    """Returns the seconds to wait after the `failures`-th failure (1 for the first).

    >>> [backoff_delay(n, initial_delay=0.5, max_delay=3.0) for n in (1, 2, 3, 4, 5)]
    [0.5, 1.0, 2.0, 3.0, 3.0]
    """
    exponent = min(max(failures, 1) - 1, _MAX_EXPONENT)
    try:
        return float(min(max_delay, initial_delay * multiplier**exponent))
    except OverflowError:  # a huge multiplier: the cap holds
        return float(max_delay)


def jittered(delay: float, rng: random.Random | None = None) -> float:
    """Returns a uniformly random time between half of `delay` and all of it, so that
    consumers that failed together do not retry together."""
    return delay / 2 + delay / 2 * (rng or random).random()


def check_backoff(what: str, *, max_attempts: int, initial_delay: float, max_delay: float, multiplier: float) -> None:
    """Checks one policy's numbers (`what` names it in the message).

    Raises:
        InvalidInputError: `max_attempts` is not an int >= 1, the delays do not satisfy
            0 <= initial_delay <= max_delay, or `multiplier` is below 1.
    """
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidInputError(f"{what}: max_attempts must be an int >= 1, got {max_attempts!r}")
    if not 0 <= initial_delay <= max_delay:
        raise InvalidInputError(
            f"{what}: delays must satisfy 0 <= initial_delay <= max_delay, got {initial_delay}, {max_delay}"
        )
    if not multiplier >= 1:
        raise InvalidInputError(f"{what}: multiplier must be >= 1, got {multiplier}")

