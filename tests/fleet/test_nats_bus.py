"""NatsBus through a real TLS nats-server with the fleet's permissions: delivery on the reactor
thread, request/reply and its failures, reconnection, the outgoing bound, refused publishes and
refused clients."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from supervisor.certs import generate_ca, issue_client_cert
from supervisor.config.fleet import NatsConfig, NatsTLSConfig
from supervisor.fleet.bus import BusMessage
from supervisor.fleet.nats import (
    _BATCH,
    DISPATCH_DELAY_SECONDS,
    BusCollector,
    NatsBus,
    cancel_until_done,
)
from supervisor.fleet.subjects import heartbeat_subject, rpc_subject, stream_subject
from supervisor.wire.errors import WireError
from tests.waiting import eventually, wait_until

GATEWAY = "CN=fleet-gateway, O=Supervisor Fleet"


def scraped(bus: NatsBus, name: str, **labels: str) -> float | None:
    """One sample of the bus's metrics, as a scrape would read it."""
    registry = CollectorRegistry()
    registry.register(BusCollector(bus))
    return registry.get_sample_value(name, labels)


async def connected(*buses: NatsBus) -> None:
    await eventually(lambda: all(b.connected for b in buses), 10, "buses connected")


async def server_has_seen(gateway: NatsBus) -> None:
    """Once a gateway's request is answered, the server has what the gateway sent before it
    (its subscriptions included): one connection is processed in order."""
    with pytest.raises(WireError, match="no responders"):
        await gateway.request(rpc_subject("nobody", GATEWAY), b"", 5.0)


@pytest_twisted.ensureDeferred
async def test_publish_reaches_subscribers_on_the_reactor_thread(nats_server, make_bus):
    host = make_bus(nats_server.host_config("a"), "host-a")
    gateway = make_bus(nats_server.gateway_config(), "gateway")
    await connected(host, gateway)
    received: list[tuple[BusMessage, bool]] = []
    gateway.subscribe("fleet.host.>", lambda m: received.append(
        (m, threading.current_thread() is threading.main_thread())))
    await server_has_seen(gateway)
    for n in range(100):
        host.publish(stream_subject("a", "t1"), b"%d" % n)
    await eventually(lambda: len(received) == 100, 10, "100 messages")
    assert [m.data for m, _ in received] == [b"%d" % n for n in range(100)]  # in order
    assert all(on_reactor for _, on_reactor in received)
    assert {m.subject for m, _ in received} == {"fleet.host.a.stream.t1"}
    assert host.published >= 100 and host.dropped == 0


@pytest_twisted.ensureDeferred
async def test_request_and_reply(nats_server, make_bus):
    host = make_bus(nats_server.host_config("a"), "host-a")
    gateway = make_bus(nats_server.gateway_config(), "gateway")
    await connected(host, gateway)
    threads: list[bool] = []

    def serve(message: BusMessage) -> None:
        threads.append(threading.current_thread() is threading.main_thread())
        host.reply(message, b"re:" + message.data)

    host.subscribe("fleet.rpc.a.*", serve)
    subject = rpc_subject("a", GATEWAY)
    answer = None
    for _ in range(200):  # the host's SUB may still be on its way: no responders until then
        try:
            answer = await gateway.request(subject, b"ping", 2.0)
            break
        except WireError as e:
            assert e.code == "bus_unavailable", e
    assert answer == b"re:ping"
    assert await gateway.request(subject, b"again", 2.0) == b"re:again"
    assert threads and all(threads)


@pytest_twisted.ensureDeferred
async def test_request_without_responders_is_unavailable(nats_server, make_bus):
    gateway = make_bus(nats_server.gateway_config(), "gateway")
    await connected(gateway)
    with pytest.raises(WireError) as caught:
        await gateway.request(rpc_subject("b", GATEWAY), b"anyone?", 5.0)
    assert caught.value.code == "bus_unavailable"
    assert "no responders" in caught.value.message


@pytest_twisted.ensureDeferred
async def test_request_times_out_when_nobody_answers(nats_server, make_bus):
    host = make_bus(nats_server.host_config("a"), "host-a")
    gateway = make_bus(nats_server.gateway_config(), "gateway")
    await connected(host, gateway)
    heard: list[BusMessage] = []
    host.subscribe("fleet.rpc.a.*", heard.append)  # listens, never answers
    subject = rpc_subject("a", GATEWAY)
    while True:
        try:
            await gateway.request(subject, b"hello?", 0.3)
        except WireError as e:
            if e.code == "bus_timeout":
                break
            assert e.code == "bus_unavailable"  # SUB not at the server yet
    assert heard


@pytest_twisted.ensureDeferred
async def test_request_when_disconnected_fails_at_once(nats_server, make_bus):
    nats_server.stop()
    gateway = make_bus(nats_server.gateway_config(), "gateway")
    with pytest.raises(WireError) as caught:
        await gateway.request(rpc_subject("a", GATEWAY), b"x", 5.0)
    assert caught.value.code == "bus_unavailable"


@pytest_twisted.ensureDeferred
async def test_start_returns_while_nats_is_down_and_connects_later(nats_server, make_bus):
    nats_server.stop()
    changes: list[bool] = []
    bus = make_bus(nats_server.host_config("a"), "host-a")
    bus.on_connection(changes.append)
    await eventually(lambda: bus.errors > 0, 10, "a refused connection attempt")
    assert not bus.connected
    nats_server.start()
    await bus.when_connected()
    assert changes == [True]


@pytest_twisted.ensureDeferred
async def test_connection_callbacks_across_a_server_restart(nats_server, make_bus):
    host = make_bus(nats_server.host_config("a"), "host-a")
    gateway = make_bus(nats_server.gateway_config(), "gateway")
    await connected(host, gateway)
    changes: list[tuple[bool, bool]] = []
    host.on_connection(lambda up: changes.append(
        (up, threading.current_thread() is threading.main_thread())))
    received: list[BusMessage] = []
    gateway.subscribe("fleet.host.a.heartbeat", received.append)
    await eventually(lambda: (host.publish(heartbeat_subject("a"), b"probe"),
                              bool(received))[1], 10, "subscription in place")

    nats_server.stop()
    await eventually(lambda: not host.connected and not gateway.connected, 10, "disconnected")
    nats_server.start()
    await connected(host, gateway)
    assert changes == [(False, True), (True, True)]
    received.clear()
    # the gateway's subscription was replayed on reconnection: publishing works again
    await eventually(lambda: (host.publish(heartbeat_subject("a"), b"after"),
                              any(m.data == b"after" for m in received))[1], 10,
                     "a message after the restart")
    assert host.reconnects == 1 and host.disconnects == 1


@pytest_twisted.ensureDeferred
async def test_outgoing_queue_is_bounded_and_drops_oldest_droppable(nats_server, make_bus):
    gateway = make_bus(nats_server.gateway_config(), "gateway")
    await connected(gateway)
    received: list[BusMessage] = []
    gateway.subscribe("fleet.host.a.>", received.append)
    # a host that has not connected yet queues; 64 KiB hold about 60 of these
    host = NatsBus(nats_server.host_config("a", max_pending_bytes=64 * 1024), reactor, "host-a")
    try:
        payload = b"x" * 1000
        host.publish(heartbeat_subject("a"), b"kept")
        for n in range(200):
            host.publish(stream_subject("a", "t1"), b"%04d" % n + payload)
        assert host.pending_bytes <= 64 * 1024
        dropped = host.dropped
        assert dropped == host.dropped_overflow > 100
        assert host.pending_messages == 201 - dropped
        await server_has_seen(gateway)
        host.start()
        await eventually(lambda: len(received) == 201 - dropped, 10, "the kept messages")
        assert received[0].data == b"kept"  # not droppable: it stayed although oldest
        numbers = [int(m.data[:4]) for m in received[1:]]
        assert numbers == list(range(200 - len(numbers), 200))  # the oldest went first
        assert scraped(host, "fleet_bus_dropped_total", why="overflow") == dropped
        assert scraped(host, "fleet_bus_connected") == 1
    finally:
        await host.stop()


@pytest_twisted.ensureDeferred
async def test_a_host_cannot_publish_under_another_hosts_prefix(nats_server, make_bus):
    host_a = make_bus(nats_server.host_config("a"), "host-a")
    gateway = make_bus(nats_server.gateway_config(), "gateway")
    await connected(host_a, gateway)
    received: list[BusMessage] = []
    gateway.subscribe("fleet.host.>", received.append)
    await server_has_seen(gateway)
    host_a.publish(heartbeat_subject("b"), b"forged")  # host a posing as host b
    host_a.publish(heartbeat_subject("a"), b"own")
    await eventually(lambda: host_a.permission_violations >= 1, 10, "the refusal")
    await eventually(lambda: any(m.data == b"own" for m in received), 10, "its own message")
    assert [m.subject for m in received if m.data == b"forged"] == []
    assert any("fleet.host.b.heartbeat" in e for e in host_a.recent_errors)
    assert host_a.connected  # a refusal does not end the connection


@pytest_twisted.ensureDeferred
async def test_a_gateway_can_only_send_requests_under_its_own_token(nats_server, make_bus):
    gateway = make_bus(nats_server.gateway_config(), "gateway")
    await connected(gateway)
    gateway.publish(rpc_subject("a", "CN=someone else"), b"forged")
    await eventually(lambda: gateway.permission_violations >= 1, 10, "the refusal")


def _connect_without_certificate(url: str, context) -> str:
    """In a thread of its own: a plain nats-py client with no client certificate."""
    import nats

    async def attempt() -> str:
        async def quiet(_: Exception) -> None:
            pass
        try:
            nc = await nats.connect(url, tls=context, allow_reconnect=False,
                                    connect_timeout=2, error_cb=quiet)
        except Exception as e:
            return f"refused: {type(e).__name__}"
        await nc.close()
        return "connected"
    return asyncio.run(attempt())


@pytest_twisted.ensureDeferred
async def test_a_client_without_a_certificate_cannot_connect(nats_server):
    outcome = await deferToThread(_connect_without_certificate, nats_server.url,
                                  nats_server.ssl_context())
    assert outcome.startswith("refused"), outcome
    # while the same context with a gateway certificate gets in
    cert, key = nats_server.certs.gateways["fleet-gateway"]
    outcome = await deferToThread(_connect_without_certificate, nats_server.url,
                                  nats_server.ssl_context(cert, key))
    assert outcome == "connected"


@pytest_twisted.ensureDeferred
async def test_certificates_of_another_ca_or_no_user_get_no_connection(nats_server, nats_dir,
                                                                      make_bus):
    stranger_ca = generate_ca("stranger CA")
    foreign = issue_client_cert(stranger_ca, (("CN", "host-a"), ("O", "Supervisor Fleet")))
    foreign.write(f"{nats_dir}/foreign.pem", f"{nats_dir}/foreign-key.pem")
    unmapped = issue_client_cert(_fleet_ca(nats_server), (("CN", "nobody"),))
    unmapped.write(f"{nats_dir}/nobody.pem", f"{nats_dir}/nobody-key.pem")
    buses = [make_bus(nats_server.client_config(f"{nats_dir}/{n}.pem", f"{nats_dir}/{n}-key.pem"),
                      n) for n in ("foreign", "nobody")]
    good = make_bus(nats_server.host_config("a"), "host-a")
    await connected(good)
    await eventually(lambda: all(b.errors >= 2 for b in buses), 10, "refused attempts")
    assert not any(b.connected for b in buses)
    await eventually(lambda: any("Authorization Violation" in e
                                 for e in buses[1].recent_errors), 10, "the server's refusal")
    assert not any("Authorization Violation" in e for e in buses[0].recent_errors)


def _fleet_ca(server):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from supervisor.certs import CertKey

    with open(server.certs.ca_cert, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(server.certs.ca_key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return CertKey(cert=cert, key=key)


@pytest_twisted.ensureDeferred
async def test_stop_closes_the_connection_and_ends_the_thread(nats_server):
    bus = NatsBus(nats_server.host_config("a"), reactor, "host-a")
    bus.start()
    await bus.when_connected()
    thread = bus._thread
    bus.publish(heartbeat_subject("a"), b"last words")
    await bus.stop()
    assert not bus.connected
    assert thread is not None and not thread.is_alive()
    assert bus.published == 1


def test_the_config_needs_servers_and_tls():
    with pytest.raises(ValueError):
        NatsBus(NatsConfig(), reactor, "x")


@pytest_twisted.ensureDeferred
async def test_deliveries_waiting_for_a_busy_reactor_are_bounded(nats_server, make_bus):
    host = make_bus(nats_server.host_config("a"), "host-a")
    gateway = make_bus(nats_server.gateway_config(max_pending_bytes=64 * 1024), "gateway")
    await connected(host, gateway)
    received: list[BusMessage] = []

    def busy(message: BusMessage) -> None:
        if not received:  # the reactor is held up until the bus has had to drop
            wait_until(lambda: gateway.dropped_incoming > 0, 10, "incoming drops")
        received.append(message)

    gateway.subscribe("fleet.host.a.>", busy)
    await server_has_seen(gateway)
    for n in range(200):
        host.publish(stream_subject("a", "t1"), b"%04d" % n + b"x" * 1000)
    await eventually(lambda: len(received) + gateway.dropped_incoming == 200, 10,
                     "every message delivered or counted")
    assert not any("SlowConsumer" in e for e in gateway.recent_errors)
    numbers = [int(m.data[:4]) for m in received]
    assert numbers == sorted(numbers) and numbers[-1] == 199  # the oldest went


@pytest_twisted.ensureDeferred
async def test_no_delivery_after_unsubscribe(nats_server, make_bus):
    host = make_bus(nats_server.host_config("a"), "host-a")
    gateway = make_bus(nats_server.gateway_config(), "gateway")
    await connected(host, gateway)
    gone: list[BusMessage] = []
    kept: list[BusMessage] = []
    subscription = gateway.subscribe("fleet.host.a.heartbeat", gone.append)
    gateway.subscribe("fleet.host.a.>", kept.append)
    await server_has_seen(gateway)
    subscription.unsubscribe()
    await server_has_seen(gateway)
    host.publish(heartbeat_subject("a"), b"beat")
    await eventually(lambda: kept, 10, "the other subscription's copy")
    assert gone == []


class _Turns:
    """A fake reactor for the bus's reactor side: what ``callFromThread`` or ``callLater(0)``
    asks for runs when the test takes the next turn."""

    def __init__(self) -> None:
        self.due: list[Any] = []
        self.delays: list[float] = []

    def callFromThread(self, f, *args):  # noqa: N802 - the reactor's names
        self.due.append(lambda: f(*args))

    def callLater(self, delay, f, *args):  # noqa: N802
        self.delays.append(delay)
        self.due.append(lambda: f(*args))

    def turn(self) -> None:
        due, self.due = self.due, []
        for call in due:
            call()


def test_a_burst_of_deliveries_is_handed_over_a_batch_per_reactor_turn():
    turns = _Turns()
    config = NatsConfig(servers=("tls://127.0.0.1:4222",), tls=NatsTLSConfig(
        ca_path="ca.pem", certificate_path="c.pem", private_key_path="k.pem"))
    bus = NatsBus(config, turns, "gateway")
    received: list[bytes] = []
    subscription = bus.subscribe("fleet.host.a.>", lambda m: received.append(m.data))
    burst = 2 * _BATCH + 100
    for n in range(burst):  # what the loop thread queued while the reactor was busy
        bus._deliver(subscription, BusMessage(stream_subject("a", "t1"), b"%05d" % n, None))
    handed = []
    while turns.due:
        turns.turn()
        handed.append(len(received))
    # the wake-up lets more arrive first, then other work runs between the batches
    assert handed == [0, _BATCH, 2 * _BATCH, burst]
    assert turns.delays == [DISPATCH_DELAY_SECONDS, 0, 0]
    assert received == [b"%05d" % n for n in range(burst)]


def test_a_cancellation_a_task_loses_is_repeated_until_the_task_ends():
    """What nats-py's connection attempts do on Python 3.11 when a cancellation arrives as an
    attempt ends (``asyncio.wait_for`` loses it): the bus's shutdown must not wait for ever."""

    async def main() -> int:
        lost = 0

        async def retrying() -> None:
            nonlocal lost
            while True:
                try:
                    await asyncio.sleep(1)
                except asyncio.CancelledError:
                    if lost == 2:
                        raise
                    lost += 1  # the attempt "ended" and the cancellation went with it

        task = asyncio.get_running_loop().create_task(retrying())
        await asyncio.sleep(0)
        await cancel_until_done(task, recheck=0.01)
        assert task.cancelled()
        return lost

    lost: list[int] = []
    # in a thread of its own: the test run's reactor thread may already run an asyncio loop
    thread = threading.Thread(target=lambda: lost.append(asyncio.run(main())))
    thread.start()
    thread.join(30)
    assert lost == [2]
