"""Fixtures for fleet tests: a real TLS nats-server and NatsBus clients of it, all stopped
after the test (see tests/fleet/nats_support.py)."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor

from supervisor.config.fleet import NatsConfig
from supervisor.fleet.nats import NatsBus
from tests.fleet.nats_support import NatsServer


@pytest.fixture
def nats_dir() -> Any:
    path = tempfile.mkdtemp(prefix="nats", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def nats_server(nats_dir: str) -> Any:
    """A started nats-server for hosts ``a`` and ``b`` and the gateway ``fleet-gateway``."""
    server = NatsServer(nats_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest_twisted.async_yield_fixture
async def make_bus() -> Any:
    """``make_bus(config, name, **options)``: a started NatsBus, stopped after the test."""
    buses: list[NatsBus] = []

    def make(config: NatsConfig, name: str, **options: Any) -> NatsBus:
        bus = NatsBus(config, reactor, name, **options)
        buses.append(bus)
        bus.start()
        return bus

    made: Callable[..., NatsBus] = make
    try:
        yield made
    finally:
        for bus in buses:
            await bus.stop()
