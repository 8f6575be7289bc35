"""Waiting on real conditions with deadlines: the suite's only way to wait (never bare sleeps)."""

from __future__ import annotations

import time
from typing import Any, Callable

from twisted.internet import reactor, task


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "",
                     interval: float = 0.005) -> Any:
    """Poll ``predicate`` on the running reactor until it is truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")
        await task.deferLater(reactor, interval, lambda: None)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "",
               interval: float = 0.02) -> Any:
    """Blocking variant for code outside the reactor (subprocess-driven tests)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")
        time.sleep(interval)
