"""Shared test helpers: waiting on real conditions with deadlines (never bare sleeps)."""

from __future__ import annotations

import time
from typing import Callable

from twisted.internet import reactor, task


async def eventually(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll ``predicate`` on the running reactor until it is truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")
        await task.deferLater(reactor, 0.01, lambda: None)


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Blocking variant for code outside the reactor (subprocess-driven tests)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")
        time.sleep(0.02)
