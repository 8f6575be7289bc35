"""The one exponential backoff of the project: child restarts and every reconnecting client.

:func:`backoff_delay` is a pure function of the attempt number; :func:`retry_policy` turns
it into the ``retryPolicy`` that ``twisted.application.internet.ClientService`` takes.
"""

from __future__ import annotations

import random
from typing import Callable


def backoff_delay(
    attempt: int,
    initial: float,
    maximum: float,
    jitter_ratio: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry ``attempt`` (0 for the first retry).

    ``initial · 2**attempt``, capped at ``maximum``, then scaled by a uniform factor in
    ``[1 - jitter_ratio, 1 + jitter_ratio]`` (``rand()`` is uniform in [0, 1)).
    """
    base = min(maximum, initial * 2 ** min(max(attempt, 0), 62))
    if jitter_ratio and base:
        base *= 1 + jitter_ratio * (2 * rand() - 1)
    return max(0.0, base)


def retry_policy(
    initial: float,
    maximum: float,
    jitter_ratio: float = 0.0,
    *,
    floor: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> Callable[[int], float]:
    """A ``ClientService`` retry policy: ``failedAttempts`` (1, 2, …) → seconds, never below
    ``floor`` and never above ``maximum``."""

    def policy(failed_attempts: int) -> float:
        delay = backoff_delay(failed_attempts - 1, initial, maximum, jitter_ratio, rand)
        return max(floor, min(maximum, delay))

    return policy
