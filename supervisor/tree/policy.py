"""Backoff with jitter and restart-intensity windows (OTP intensity/period)."""

from __future__ import annotations

import collections
import random as _random

from supervisor._backoff import backoff_delay


class Backoff:
    """Exponential delay from ``initial`` to ``maximum`` seconds, ± ``jitter_ratio``."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        jitter_ratio: float,
        rng: _random.Random | None = None,
    ) -> None:
        self._initial = initial
        self._maximum = maximum
        self._jitter = jitter_ratio
        self._rng = rng or _random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next restart; each call doubles the base, up to the cap."""
        delay = backoff_delay(self.attempt, self._initial, self._maximum, self._jitter,
                              self._rng.random)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Forget past failures, after a child ran stably."""
        self.attempt = 0


class IntensityWindow:
    """Counts occurrences in a sliding window; more than ``limit`` of them is too many."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: collections.deque[float] = collections.deque()

    def record(self, now: float) -> bool:
        """Record one occurrence at ``now``; return True when the limit is exceeded."""
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        # never keep more than the limit needs to decide
        while len(self._times) > self.limit + 1:
            self._times.popleft()
        return len(self._times) > self.limit

    def count(self, now: float) -> int:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        return len(self._times)
