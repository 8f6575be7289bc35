"""Slow and stuck peers on the registration socket and the wss:// endpoint, and a frozen
(SIGSTOPped) target: each is cut off or bounded, and nobody else waits for it.

(The IPC socket's slowloris and stuck-reader cases are in tests/test_ipc_hostile.py, a relay
that never acks in tests/test_registration_heartbeat.py, a browser that never reads in
tests/relay/test_relay_sessions.py, and a hung target in tests/relay/test_relay_link_units.py
and test_relay_session_units.py.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
from typing import Any

import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from rel_support import TargetProcess
from relay_faketarget import registration_payload
from relay_helpers import eventually


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Raw(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True


async def raw_unix(path: str) -> Raw:
    proto = Raw()
    await UNIXClientEndpoint(reactor, path, timeout=5).connect(Factory.forProtocol(lambda: proto))
    return proto


async def raw_tcp(port: int) -> Raw:
    from twisted.internet.endpoints import TCP4ClientEndpoint

    proto = Raw()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5).connect(
        Factory.forProtocol(lambda: proto))
    return proto


async def trickle(proto: Raw, data: bytes, every: float) -> int:
    """Send ``data`` one byte at a time until the peer closes; returns bytes sent."""
    for index in range(len(data)):
        if proto.closed:
            return index
        proto.transport.write(data[index:index + 1])
        await task.deferLater(reactor, every, lambda: None)
    return len(data)


# registration socket ---------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_registration_slowloris_is_cut_off_and_stalls_nobody(relay):
    relay.start(timeouts={"registration_read_seconds": 0.5})
    target = relay.target()
    other = relay.target("other-target")
    await relay.service.audit_ready  # the audit database's files are open
    baseline = open_fds()
    line = json.dumps(registration_payload(target.target_id, target.path)).encode() + b"\n"
    slow = await raw_unix(relay.registration_path)
    trickling = ensureDeferred(trickle(slow, line, 0.05))
    # meanwhile a well-behaved target registers at once
    assert (await relay.register(other))["ok"] is True
    sent = await trickling
    assert sent < len(line), "cut off before the line was complete"
    ack = json.loads(slow.data)
    assert ack["error"]["code"] == "registration_timeout" and ack["retryable"] is True
    assert relay.service.registry.get(target.target_id) is None
    await eventually(lambda: relay.service.registration.factory.active == 0, 5)
    await eventually(lambda: open_fds() <= baseline, 5, f"fds back to {baseline}")


@pytest_twisted.ensureDeferred
async def test_half_open_registration_connections_are_bounded(relay):
    cap = 6
    relay.start(limits={"max_registration_connections": cap},
                timeouts={"registration_read_seconds": 0.5})
    factory = relay.service.registration.factory
    stuck = [await raw_unix(relay.registration_path) for _ in range(cap - 1)]
    await eventually(lambda: factory.active == cap - 1, 5)
    target = relay.target()
    assert (await relay.register(target))["ok"] is True, "one slot left: served"
    stuck.append(await raw_unix(relay.registration_path))
    await eventually(lambda: factory.active == cap, 5)
    # every slot held by a silent peer: a newcomer is closed at once (no unbounded backlog),
    # and is served again as soon as the silent ones time out
    refused = await raw_unix(relay.registration_path)
    await eventually(lambda: refused.closed, 5, "over-cap connection closed")
    assert refused.data == b""
    await eventually(lambda: all(p.closed for p in stuck), 5, "silent peers timed out")
    for proto in stuck:
        assert json.loads(proto.data)["error"]["code"] == "registration_timeout"
    assert factory.active == 0
    assert (await relay.register(target))["ok"] is True


# wss:// endpoint ---------------------------------------------------------------------------

def _client_hello_bytes() -> bytes:
    """The first flight of a real TLS client (a ClientHello), produced in memory."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


@pytest_twisted.ensureDeferred
async def test_half_open_tcp_and_slow_tls_handshakes_are_timed_out(relay):
    relay.start(timeouts={"http_idle_seconds": 0.5})
    port = relay.service.https_port
    silent = await raw_tcp(port)  # connects, never says anything
    hello = _client_hello_bytes()
    slow = await raw_tcp(port)  # a ClientHello one byte every 100 ms: never completes
    trickling = ensureDeferred(trickle(slow, hello, 0.1))
    # a normal session opens and works meanwhile
    ws = await relay.session()
    await ws.hello()
    await eventually(lambda: silent.closed, 5, "half-open TCP connection closed")
    sent = await trickling
    assert slow.closed and sent < len(hello), (sent, len(hello))
    assert ws.transport.connected and len(relay.service.hub.sessions) == 1


@pytest_twisted.ensureDeferred
async def test_slowloris_request_headers_hit_the_headers_deadline(relay, sockdir):
    # one byte every 100 ms keeps resetting a 1 s idle timeout forever; the headers deadline
    # (0.6 s from the first byte) ends it
    relay.start(timeouts={"http_idle_seconds": 1, "http_request_headers_seconds": 0.6})
    port = relay.service.https_port
    pki = relay.pki
    request = (b"GET /supervisor HTTP/1.1\r\nHost: localhost:9443\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Origin: https://localhost:9443\r\n\r\n")

    def slowloris() -> int:
        ctx = ssl.create_default_context(cafile=pki.ca_path)
        path = os.path.join(sockdir, "slow-client.pem")
        with open(path, "wb") as f:
            f.write(pki.operator.cert_pem() + pki.operator.key_pem())
        ctx.load_cert_chain(path)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                for index in range(len(request)):
                    try:
                        tls.sendall(request[index:index + 1])
                        tls.settimeout(0.1)
                        if tls.recv(1) == b"":
                            return index
                    except (socket.timeout, TimeoutError):
                        continue
                    except (ConnectionError, ssl.SSLError, OSError):
                        return index
                return len(request)

    from twisted.internet.threads import deferToThread

    slow = deferToThread(slowloris)
    ws = await relay.session()  # others are served meanwhile
    await ws.hello()
    sent = await slow
    assert sent < len(request), "the request never completed: the relay gave up first"
    assert len(relay.service.hub.sessions) == 1


@pytest_twisted.ensureDeferred
async def test_open_websocket_without_client_hello_is_closed(relay):
    relay.start(timeouts={"websocket_open_handshake_seconds": 0.5})
    ws = await relay.session()
    await ws.next("server_hello")  # ... and never client_hello, though it answers pings
    code, _ = await ws.closed_d
    assert code == 4002
    error = await ws.next("error")
    assert error["error"]["code"] == "protocol_error"
    assert relay.service.hub.sessions == {}
    late = await relay.session()
    assert (await late.hello())["type"] == "target_list"  # a prompt session is unaffected


@pytest_twisted.ensureDeferred
async def test_a_browser_that_never_reads_does_not_stall_another(relay):
    relay.start(limits={"session_queue": 50})
    target = relay.target()
    await relay.register(target)
    stuck, other = await relay.session(), await relay.session()
    for ws in (stuck, other):
        await ws.hello()
        await ws.next("state")
    await eventually(lambda: "logs.tail" in target.methods())
    stuck.transport.pauseProducing()
    emitted = [target.emit_event(payload={"blob": "x" * 2000}) for _ in range(3000)]
    await eventually(lambda: len(other.of_type("event")) == len(emitted), 20,
                     "the reading session got every event")
    sessions = {s.session_id: s for s in relay.service.hub.sessions.values()}
    stuck_session = min(sessions.values(), key=lambda s: s.outbox.sent)
    assert stuck_session.outbox.pending <= 51
    assert sum(stuck_session.outbox.dropped.get(target.target_id, [0, 0])) > 0
    stuck.transport.resumeProducing()


# a frozen target -------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_a_sigstopped_target_is_unavailable_others_flow_and_it_recovers(relay, procs):
    relay.start(timeouts={"ipc_request_seconds": 1, "ipc_keepalive_seconds": 0.5,
                          "reconnect_initial_ms": 100, "reconnect_max_ms": 500})
    frozen = TargetProcess(relay.sockdir, "frozen", relay.registration_path, interval=2,
                           lease=30)
    lively = TargetProcess(relay.sockdir, "lively", relay.registration_path, interval=2,
                           lease=30)
    procs.extend([frozen, lively])
    frozen.start()
    lively.start()
    await eventually(lambda: relay.service.registry.get("frozen")
                     and relay.service.registry.get("lively"), 30, "targets registered")
    ws = await relay.session()
    await ws.hello()
    for _ in range(2):
        await ws.next("state", timeout=10)
    links = relay.service.hub.links
    await eventually(lambda: links["frozen"].state == links["lively"].state == "connected", 10)
    frozen.send(signal.SIGSTOP)
    try:
        # its socket stays open but nothing answers: the link keepalive misses its deadline
        # and the link is unavailable; the other target keeps streaming
        message = await ws.next("connection_state", target_id="frozen", timeout=5)
        assert message["state"] == "unavailable"
        before = len([m for m in ws.received if m.get("target_id") == "lively"
                      and m["type"] == "log"])
        await eventually(lambda: len([m for m in ws.received if m.get("target_id") == "lively"
                                      and m["type"] == "log"]) > before, 10,
                         "the lively target still streams")
    finally:
        frozen.send(signal.SIGCONT)
    assert (await ws.next("connection_state", target_id="frozen", timeout=15))["state"] in (
        "connected", "unavailable")
    await eventually(lambda: links["frozen"].state == "connected", 15, "frozen target back")
    await ws.next("state", target_id="frozen", timeout=10)  # a fresh state after recovery
