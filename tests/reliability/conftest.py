"""Fixtures for the reliability suite (see docs/reliability.md).

``FUZZ_EXAMPLES`` scales every hypothesis test in this folder: unset, each runs its modest
default; ``FUZZ_EXAMPLES=5000`` (``make fuzz``) runs that many examples per test.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

import pytest
import pytest_twisted

sys.path.insert(0, os.path.dirname(__file__))

from rel_support import PKI, short_dir  # noqa: E402
from relay_helpers import RelayHarness, make_pki  # noqa: E402


@pytest.fixture(scope="module")
def pki() -> Any:
    path = tempfile.mkdtemp(prefix="relpki", dir="/tmp")
    yield make_pki(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sockdir() -> Any:
    path = short_dir("rel")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def procs() -> Any:
    """Processes a test started; each is stopped (process group SIGKILLed) afterwards."""
    started: list[Any] = []
    yield started
    for proc in reversed(started):
        proc.stop(timeout=5)


__all__ = ["PKI", "short_dir"]


@pytest_twisted.async_yield_fixture
async def relay(sockdir: str, pki: PKI) -> Any:
    harness = RelayHarness(sockdir, pki)
    yield harness
    await harness.close()


@pytest.fixture
def captured_logs() -> Any:
    """Every twisted.logger event emitted while the test runs."""
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)
