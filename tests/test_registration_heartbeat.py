"""The registration heartbeat (CONTRACTS.md §2): its schedule on a fake clock, and against a
fake relay on a real Unix socket."""

from __future__ import annotations

import json
import pathlib
import shutil
import tempfile

import random

import pytest
import pytest_twisted
from automat import NoTransition
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from supervisor._backoff import retry_policy
from supervisor.config.target import IpcConfig, RegistrationConfig
from supervisor.ipc.registration import RegistrationHeartbeat
from tests.ipc_support import contract_registration_payload as contract_payload
from tests.waiting import eventually

EXAMPLES = pathlib.Path(__file__).parent / "contract_examples"


def config(path: str = "/tmp/relay.sock", interval: int = 15, timeout: float = 5.0,
           jitter: float = 0.2) -> IpcConfig:
    return IpcConfig(
        enabled=True, target_id="payments-worker-a", path="/tmp/supervisor-demo/payments-worker-a.sock",
        registration=RegistrationConfig(
            enabled=True, relay_registration_path=path, display_name="payments worker a",
            lease_seconds=30, registration_heartbeat_interval_seconds=interval,
            timeout_seconds=timeout, retry_jitter_ratio=jitter),
    )


class Draws(random.Random):
    """Every jitter draw is the same number."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


class Attempts:
    """A heartbeat on a MemoryReactorClock; each attempt is one ``connectUNIX`` to answer."""

    def __init__(self, **kw) -> None:
        self.clock = MemoryReactorClock()
        self.hb = RegistrationHeartbeat(config(**kw), self.clock, rng=Draws(0.0))
        self.hb.startService()
        self.answered = 0

    @property
    def made(self) -> int:
        return len(self.clock.unixClients)

    def _connect(self):
        path, factory, timeout, _ = self.clock.unixClients[self.answered]
        self.answered += 1
        return factory

    def ack(self, ack: dict) -> bytes:
        """Accept the pending attempt, answer ``ack``; returns what the target wrote."""
        protocol = self._connect().buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(json.dumps(ack).encode() + b"\n")
        return transport.value()

    def refuse(self) -> None:
        """The relay's socket is not there."""
        factory = self._connect()
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))

    def next_delay(self) -> float:
        (call,) = self.clock.getDelayedCalls()
        return call.getTime() - self.clock.seconds()

    def wait(self) -> None:
        self.clock.advance(self.next_delay())


def test_registers_at_once_then_every_interval():
    attempts = Attempts(interval=15)
    attempts.hb.begin()
    assert attempts.made == 1 and attempts.clock.unixClients[0][0] == "/tmp/relay.sock"
    sent = attempts.ack(OK)
    assert json.loads(sent) == contract_payload()
    assert attempts.hb.phase == "registered" and attempts.hb.acks == 1
    assert attempts.next_delay() == 15
    attempts.wait()
    assert attempts.made == 2


def test_failures_back_off_from_one_second_to_the_interval_and_reset_after_an_ack():
    attempts = Attempts(interval=10, jitter=0.2)  # every draw 0: each delay × (1 - 0.2)
    attempts.hb.begin()
    delays = []
    for _ in range(6):
        attempts.refuse()
        delays.append(attempts.next_delay())
        attempts.wait()
    policy = retry_policy(1.0, 10.0, 0.2, floor=1.0, rand=lambda: 0.0)
    assert delays == [pytest.approx(policy(n)) for n in range(1, 7)]
    assert delays == [pytest.approx(d) for d in (1.0, 1.6, 3.2, 6.4, 8.0, 8.0)]
    attempts.ack(OK)
    assert attempts.hb.failures == 0 and attempts.next_delay() == 10
    attempts.wait()
    attempts.refuse()
    assert attempts.next_delay() == pytest.approx(1.0)


def test_retries_never_wait_longer_than_the_interval_so_a_returning_relay_is_found_in_one():
    for draw in (0.0, 0.5, 0.999):
        attempts = Attempts(interval=2, jitter=0.5)
        attempts.hb = RegistrationHeartbeat(config(interval=2, jitter=0.5), attempts.clock,
                                            rng=Draws(draw))
        attempts.hb.startService()
        attempts.hb.begin()
        for _ in range(8):
            attempts.refuse()
            assert 1.0 <= round(attempts.next_delay(), 9) <= 2.0
            attempts.wait()


def test_a_retryable_refusal_is_retried_and_a_final_one_ends_the_heartbeat():
    attempts = Attempts()
    attempts.hb.begin()
    attempts.ack({"ok": False, "error": {"code": "registry_full", "message": "full"},
                  "retryable": True})
    assert attempts.hb.phase == "retrying" and attempts.next_delay() == pytest.approx(1.0)
    attempts.wait()
    attempts.ack(FATAL)
    assert attempts.hb.stopped_for_good and attempts.hb.last_ack == FATAL
    assert attempts.clock.getDelayedCalls() == []
    attempts.clock.advance(3600)
    attempts.hb.begin()  # refused for good means until the process restarts
    assert attempts.made == 2


def test_an_attempt_has_a_deadline():
    attempts = Attempts(timeout=5.0)
    attempts.hb.begin()
    attempts.clock.advance(5.0)  # the connection never completes
    assert attempts.hb.phase == "retrying" and attempts.hb.failures == 1


def test_stopping_cancels_what_is_pending_and_illegal_inputs_raise():
    attempts = Attempts()
    attempts.hb.begin()
    with pytest.raises(NoTransition):
        attempts.hb.begin()  # already sending
    attempts.hb.stopService()
    assert attempts.hb.phase == "idle" and attempts.clock.getDelayedCalls() == []
    attempts.answered += 1  # that attempt was cancelled
    attempts.hb.startService()
    attempts.hb.begin()
    attempts.ack(OK)
    attempts.hb.stopService()
    assert attempts.hb.phase == "idle" and attempts.clock.getDelayedCalls() == []
    attempts.clock.advance(3600)
    assert attempts.made == 2


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
            assert relay.received[0] == contract_payload()
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
            assert hb.phase == "gave_up" and hb.last_ack == FATAL and len(relay.received) == 1
        finally:
            hb.stopService()

    await with_relay([FATAL], body)


@pytest_twisted.ensureDeferred
async def test_an_absent_relay_is_retried_and_found_when_it_appears():
    folder = tempfile.mkdtemp(prefix="reg", dir="/tmp")
    path = f"{folder}/relay.sock"
    hb = heartbeat(path, interval=2)
    try:
        await eventually(lambda: hb.failures >= 1, what="a failed attempt")
        assert hb.phase == "retrying"
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
            assert hb.acks == 0 and hb.failures >= 1
        finally:
            hb.stopService()

    await with_relay([None], body)


CONTESTED = {"ok": False, "error": {"code": "target_id_owner_mismatch",
                                    "message": "target id payments-worker-a belongs to another owner"},
             "retryable": False}


def test_a_contested_target_id_is_logged_as_an_error_and_retried_with_backoff():
    from twisted.logger import LogLevel, globalLogPublisher

    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        attempts = Attempts(interval=10, jitter=0.2)  # every draw 0: each delay × (1 - 0.2)
        attempts.hb.begin()
        delays = []
        for _ in range(5):
            attempts.ack(CONTESTED)
            assert attempts.hb.phase == "retrying" and not attempts.hb.stopped_for_good
            assert attempts.hb.contested == CONTESTED["error"]["message"]
            delays.append(attempts.next_delay())
            attempts.wait()
        assert delays == [pytest.approx(d) for d in (1.0, 1.6, 3.2, 6.4, 8.0)]
        errors = [e for e in logged if e.get("log_level") == LogLevel.error
                  and "target_id_owner_mismatch" in e.get("why", "")]
        assert len(errors) == 5  # one per refusal, not only the first
        attempts.ack(OK)  # released: the id is this uid's again
        assert attempts.hb.phase == "registered" and attempts.hb.contested is None
        assert attempts.hb.failures == 0
    finally:
        globalLogPublisher.removeObserver(logged.append)
