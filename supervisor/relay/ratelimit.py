"""Per-session rate limits: token buckets on an injected clock.

A bucket holds at most ``burst`` tokens and gains ``rate`` per second; each message of its
kind takes one. A session keeps one bucket per kind it limits (commands, refused commands,
filter changes); a message that finds its bucket empty closes the session with
``rate_limited`` (see :meth:`supervisor.relay.session.Session.rate_limited`).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime

__all__ = ["TokenBucket", "SessionRates"]


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second of ``clock``; :meth:`take` spends one."""

    def __init__(self, clock: IReactorTime, rate: float, burst: int) -> None:
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = clock.seconds()
        #: messages refused because the bucket was empty
        self.refused = 0

    def take(self) -> bool:
        """Spend one token; False (and counted) when there is none."""
        now = self._clock.seconds()
        if now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.refused += 1
        return False

    def exceeded(self, what: str) -> str:
        """Why a message of ``what`` (``"commands"``, ...) found this bucket empty."""
        return f"more than {self.burst} {what} at once or {self.rate:g} per second"


@attrs.frozen
class SessionRates:
    """The buckets of one session, built from the relay's ``limits``."""

    commands: TokenBucket
    rejected: TokenBucket
    filter_changes: TokenBucket

    @classmethod
    def from_limits(cls, clock: IReactorTime, limits: Any) -> "SessionRates":
        return cls(
            commands=TokenBucket(clock, limits.commands_per_second, limits.commands_burst),
            rejected=TokenBucket(clock, limits.rejected_per_second, limits.rejected_burst),
            filter_changes=TokenBucket(clock, limits.filter_changes_per_second,
                                       limits.filter_changes_burst),
        )
