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
from relay_helpers import make_pki  # noqa: E402


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


class InProcessRelay:
    """A RelayService on the test's reactor, plus fake targets and sessions it opened."""

    def __init__(self, sockdir: str, pki: PKI) -> None:
        self.sockdir, self.pki = sockdir, pki
        self.service: Any = None
        self.targets: list[Any] = []
        self.sessions: list[Any] = []

    def start(self, **sections: Any) -> Any:
        from twisted.internet import reactor

        from relay_helpers import make_config
        from supervisor.relay.service import RelayService

        self.service = RelayService(make_config(self.sockdir, self.pki, **sections),
                                    reactor=reactor)
        self.service.startService()
        return self.service

    @property
    def registration_path(self) -> str:
        return self.service.config.registration.listen_path

    def target(self, target_id: str = "payments-worker-a", **kw: Any) -> Any:
        from twisted.internet import reactor

        from relay_faketarget import FakeTarget

        target = FakeTarget(reactor, target_id, os.path.join(self.sockdir, f"{target_id}.sock"),
                            **kw).start()
        self.targets.append(target)
        return target

    async def register(self, target: Any, lease: int = 30) -> dict[str, Any]:
        from relay_faketarget import registration_payload
        from relay_helpers import register

        return await register(self.registration_path,
                              registration_payload(target.target_id, target.path, lease))

    async def session(self, client: Any = None, **kw: Any) -> Any:
        from relay_helpers import connect_ws

        ws = await connect_ws(self.service.https_port, self.pki,
                              self.pki.operator if client is None else client, **kw)
        self.sessions.append(ws)
        return ws

    async def close(self) -> None:
        from relay_helpers import close_ws

        for ws in self.sessions:
            await close_ws(ws)
        for target in self.targets:
            d = target.stop()
            if d is not None:
                await d
        if self.service is not None and self.service.running:
            await self.service.stopService()


@pytest_twisted.async_yield_fixture
async def relay(sockdir: str, pki: PKI) -> Any:
    harness = InProcessRelay(sockdir, pki)
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
