"""Periodic calls that share wake-ups: each falls on a multiple of its interval of the clock.

An idle target is woken only by its periodic work, and on a virtual machine each wake-up of a
Python process costs milliseconds of CPU however little it does (cold caches and memory). Two
loops of the same interval started at different moments wake it twice per interval; on a
common grid, one wake-up serves both. (:class:`~twisted.internet.task.LoopingCall` keeps the
grid of the moment it started, so loops started apart never meet.)
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

#: A call found this close before a grid point (float rounding) belongs to that point.
_EARLY = 1e-6


class GridLoop:
    """Calls ``f`` (synchronous) at every multiple of ``interval`` seconds of ``clock`` from
    :meth:`start` until :meth:`stop`; a call that raises ends the loop and is handed to
    ``on_failure``. Multiples missed while the clock's thread was busy are skipped."""

    def __init__(self, f: Callable[[], Any], clock: IReactorTime,
                 on_failure: Callable[[Failure], None] | None = None) -> None:
        self._f = f
        self._clock = clock
        self._on_failure = on_failure
        self._interval = 0.0
        self._pending: IDelayedCall | None = None

    def __repr__(self) -> str:
        return f"<GridLoop of {self._f!r}>"

    @property
    def running(self) -> bool:
        return self._pending is not None

    def start(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        if self._pending is None:
            self._interval = interval
            self._schedule()

    def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _schedule(self) -> None:
        delay = self._interval - self._clock.seconds() % self._interval
        if delay < _EARLY:
            delay += self._interval
        self._pending = self._clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._schedule()
        try:
            self._f()
        except Exception:
            self.stop()
            if self._on_failure is None:
                raise
            self._on_failure(Failure())
