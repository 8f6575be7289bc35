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
        self._times.append(now)
        self._forget(now)
        # never keep more than the limit needs to decide
        while len(self._times) > self.limit + 1:
            self._times.popleft()

    def count(self, now: float) -> int:
        """Occurrences within the window that ends at ``now``."""
        self._forget(now)
        return len(self._times)

    def _forget(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()

    def fresh(self) -> "IntensityWindow":
        """An empty window with the same limit and length."""
        return IntensityWindow(self.limit, self.window)
