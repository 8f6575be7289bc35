"""Fixtures for relay tests: short socket dirs, a PKI, an in-process relay, fake targets."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any, Callable

import pytest
import pytest_twisted

sys.path.insert(0, os.path.dirname(__file__))

from relay_helpers import PKI, RelayHarness, make_pki  # noqa: E402


@pytest.fixture
def sockdir() -> Any:
    """A short directory under /tmp (AF_UNIX paths must stay under 108 bytes)."""
    path = os.path.realpath(tempfile.mkdtemp(prefix="rly", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pki() -> Any:
    path = tempfile.mkdtemp(prefix="rlypki", dir="/tmp")
    yield make_pki(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest_twisted.async_yield_fixture
async def relay(sockdir: str, pki: PKI) -> Any:
    harness = RelayHarness(sockdir, pki)
    yield harness
    await harness.close()


@pytest.fixture
def relay_factory(sockdir: str, pki: PKI) -> Callable[..., RelayHarness]:
    """For tests that need a relay object without starting it."""
    def make() -> RelayHarness:
        return RelayHarness(sockdir, pki)
    return make
