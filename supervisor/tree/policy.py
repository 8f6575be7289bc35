"""Restart-intensity windows (OTP intensity/period): how many restarts or failures lately."""

from __future__ import annotations

import collections


class IntensityWindow:
    """Counts occurrences in a sliding window; more than ``limit`` of them is too many.

    :func:`supervisor.tree.decisions.decide_exit` reads :meth:`count`; the supervisor
    records an occurrence when the decision says it counts.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: collections.deque[float] = collections.deque()

    def record(self, now: float) -> None:
        """Record one occurrence at ``now``."""
        times = self._times
        times.append(now)
        # never keep more than the limit needs to decide (old ones go in :meth:`count`)
        while len(times) > self.limit + 1:
            times.popleft()

    def count(self, now: float) -> int:
        """Occurrences within the window that ends at ``now``."""
        times, oldest = self._times, now - self.window
        while times and times[0] <= oldest:
            times.popleft()
        return len(times)

    def fresh(self) -> "IntensityWindow":
        """An empty window with the same limit and length."""
        return IntensityWindow(self.limit, self.window)

    def resized(self, limit: int, window: float) -> "IntensityWindow":
        """The same occurrences counted against a new limit and length (a reloaded policy)."""
        resized = IntensityWindow(limit, window)
        resized._times.extend(self._times)
        while len(resized._times) > limit + 1:
            resized._times.popleft()
        return resized
