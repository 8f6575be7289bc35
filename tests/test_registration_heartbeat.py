"""The registration heartbeat against a fake relay on a real Unix socket (CONTRACTS.md §2)."""

from __future__ import annotations

import json
import pathlib
import shutil
import tempfile

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol

from supervisor.config.target import IpcConfig, RegistrationConfig
from supervisor.ipc.registration import RegistrationHeartbeat
from tests.waiting import eventually

EXAMPLES = pathlib.Path(__file__).parent / "contract_examples"


class FakeRelay(Factory):
    """Records registration lines and answers each with the next scripted ack (or nothing)."""

    def __init__(self, acks: list[dict | None]) -> None:
        self.acks = acks
        self.received: list[dict] = []

    def buildProtocol(self, addr):
        relay = self

        class One(Protocol):
            def dataReceived(self, data: bytes) -> None:
                for line in data.splitlines():
                    relay.received.append(json.loads(line))
                    ack = relay.acks[min(len(relay.received), len(relay.acks)) - 1]
                    if ack is not None:
                        self.transport.write(json.dumps(ack).encode() + b"\n")
                        self.transport.loseConnection()

        return One()


def heartbeat(path: str, interval: int = 1, timeout: float = 0.5) -> RegistrationHeartbeat:
    config = IpcConfig(
        enabled=True, target_id="payments-worker-a", path="/tmp/supervisor-demo/payments-worker-a.sock",
        registration=RegistrationConfig(
            enabled=True, relay_registration_path=path, display_name="payments worker a",
            lease_seconds=30, registration_heartbeat_interval_seconds=interval, timeout_seconds=timeout),
    )
    hb = RegistrationHeartbeat(config, reactor)
    hb.startService()
    hb.begin()
    return hb


async def with_relay(acks, body):
    folder = tempfile.mkdtemp(prefix="reg", dir="/tmp")
    path = f"{folder}/relay.sock"
    relay = FakeRelay(acks)
    port = reactor.listenUNIX(path, relay)
    try:
        await body(path, relay)
    finally:
        await defer.maybeDeferred(port.stopListening)
        shutil.rmtree(folder, ignore_errors=True)


OK = json.loads((EXAMPLES / "registration.ack-ok.json").read_text())
FATAL = json.loads((EXAMPLES / "registration.ack-error.json").read_text())


@pytest_twisted.ensureDeferred
async def test_sends_the_contract_payload_then_heartbeats_every_interval():
    async def body(path, relay):
        hb = heartbeat(path, interval=1)
        try:
            await eventually(lambda: len(relay.received) >= 2, what="two registrations")
            assert relay.received[0] == json.loads((EXAMPLES / "registration.request.json").read_text())
            assert hb.acks >= 1 and not hb.stopped_for_good
        finally:
            hb.stopService()

    await with_relay([OK], body)


@pytest_twisted.ensureDeferred
async def test_a_retryable_failure_is_retried():
    retry = {"ok": False, "error": {"code": "busy", "message": "try later"}, "retryable": True}

    async def body(path, relay):
        hb = heartbeat(path, interval=5)
        try:
            await eventually(lambda: hb.acks == 1, what="success after a retry")
            assert len(relay.received) == 2
        finally:
            hb.stopService()

    await with_relay([retry, OK], body)


@pytest_twisted.ensureDeferred
async def test_a_non_retryable_failure_stops_the_heartbeat_for_good():
    async def body(path, relay):
        hb = heartbeat(path, interval=1)
        try:
            await eventually(lambda: hb.stopped_for_good, what="gave up")
            assert hb._call is None and hb._attempt is None, "nothing scheduled any more"
            assert hb.last_ack == FATAL and len(relay.received) == 1
        finally:
            hb.stopService()

    await with_relay([FATAL], body)


@pytest_twisted.ensureDeferred
async def test_an_absent_relay_is_retried_and_found_when_it_appears():
    folder = tempfile.mkdtemp(prefix="reg", dir="/tmp")
    path = f"{folder}/relay.sock"
    hb = heartbeat(path, interval=2)
    try:
        await eventually(lambda: hb._failures >= 1, what="a failed attempt")
        assert not hb.stopped_for_good and hb._call is not None and hb._call.active()
        relay = FakeRelay([OK])
        port = reactor.listenUNIX(path, relay)
        try:
            await eventually(lambda: hb.acks == 1, timeout=10, what="registered once the relay is up")
        finally:
            await defer.maybeDeferred(port.stopListening)
    finally:
        hb.stopService()
        shutil.rmtree(folder, ignore_errors=True)


@pytest_twisted.ensureDeferred
async def test_a_relay_that_never_acks_times_out_and_is_retried():
    async def body(path, relay):
        hb = heartbeat(path, interval=2, timeout=0.3)
        try:
            await eventually(lambda: len(relay.received) >= 2, timeout=10, what="a second attempt")
            assert hb.acks == 0 and hb._failures >= 1
        finally:
            hb.stopService()

    await with_relay([None], body)
