"""Fixtures for relay tests: short socket dirs, a PKI, an in-process relay, fake targets."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor

sys.path.insert(0, os.path.dirname(__file__))

from relay_faketarget import FakeTarget, registration_payload  # noqa: E402
from relay_helpers import PKI, WSClient, close_ws, connect_ws, make_config, make_pki, \
    register  # noqa: E402

from supervisor.relay.service import RelayService  # noqa: E402


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


class RelayHarness:
    """A RelayService on the real reactor plus the targets and sessions a test opened."""

    def __init__(self, sockdir: str, pki: PKI) -> None:
        self.sockdir = sockdir
        self.pki = pki
        self.service: RelayService | None = None
        self.targets: list[FakeTarget] = []
        self.sessions: list[WSClient] = []

    def start(self, **sections: Any) -> RelayService:
        config = make_config(self.sockdir, self.pki, **sections)
        self.service = RelayService(config, reactor=reactor)
        self.service.startService()
        return self.service

    @property
    def registration_path(self) -> str:
        assert self.service is not None
        return self.service.config.registration.listen_path

    def target(self, target_id: str = "payments-worker-a", **kw: Any) -> FakeTarget:
        path = os.path.join(self.sockdir, f"{target_id}.sock")
        target = FakeTarget(reactor, target_id, path, **kw).start()
        self.targets.append(target)
        return target

    async def register(self, target: FakeTarget, lease: int = 30) -> dict[str, Any]:
        return await register(self.registration_path,
                              registration_payload(target.target_id, target.path, lease))

    async def session(self, client: Any = None, **kw: Any) -> WSClient:
        assert self.service is not None
        cert = self.pki.operator if client is None else (client or None)
        ws = await connect_ws(self.service.https_port, self.pki, cert, **kw)
        self.sessions.append(ws)
        return ws

    async def close(self) -> None:
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
    harness = RelayHarness(sockdir, pki)
    yield harness
    await harness.close()


@pytest.fixture
def relay_factory(sockdir: str, pki: PKI) -> Callable[..., RelayHarness]:
    """For tests that need a relay object without starting it."""
    def make() -> RelayHarness:
        return RelayHarness(sockdir, pki)
    return make
