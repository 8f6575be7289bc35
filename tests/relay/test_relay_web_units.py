"""The WebSocket and HTTP layer's own logic: messages prepared once for a fan-out, and the
request-headers deadline, on in-memory transports and a fake clock."""

from __future__ import annotations

import json

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import pages

from relay_memory import MemoryRelay
from supervisor.relay.web.protocol import DashboardServerFactory, _WSTransport
from supervisor.relay.web.site import RelaySite, build_site
from supervisor.wire.turns import WRITE_BATCH_BYTES


def factory() -> DashboardServerFactory:
    relay = MemoryRelay()
    return DashboardServerFactory(relay.config, relay.hub, reactor=relay.clock)


class Peer:
    """A WebSocket connection as the session transport uses it."""

    def __init__(self, state=WebSocketServerProtocol.STATE_OPEN, compress=None):
        self.state = state
        self.websocket_extensions_in_use = [] if compress is None else [compress]
        self.transport = StringTransport()
        self.prepared = []  # messages that went through autobahn's sendPreparedMessage

    def sendPreparedMessage(self, message):
        self.prepared.append(message)


def test_a_message_fanned_out_is_prepared_once_and_framed_as_autobahn_frames_it():
    ws = factory()
    text = '{"type":"event","note":"é"}'
    peers = [Peer() for _ in range(3)]
    for peer in peers:
        _WSTransport(peer, ws).send_text(text)
    ws.reactor.advance(0)
    expected = ws.prepareMessage(text.encode("utf-8")).payloadHybi
    assert expected[0] == 0x81 and expected[1] & 0x80 == 0  # unmasked
    assert [p.transport.value() for p in peers] == [expected] * 3
    assert ws.prepared(text) is ws.prepared(text)  # prepared once for every session
    other = "".join(['{"type":', '"log"}'])
    _WSTransport(peers[0], ws).send_text(other)
    ws.reactor.advance(0)
    assert peers[0].transport.value() == expected + ws.prepareMessage(other.encode()).payloadHybi


def test_the_frame_bytes_are_written_straight_to_the_transport():
    ws = factory()
    peer = Peer()
    _WSTransport(peer, ws).send_text('{"type":"log"}')
    ws.reactor.advance(0)
    assert peer.prepared == []  # not through autobahn's per-write calls
    assert peer.transport.value().endswith(b'{"type":"log"}')


class CountingTransport(StringTransport):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)


def test_the_frames_of_one_reactor_turn_reach_the_transport_as_one_write():
    ws = factory()
    peers = [Peer() for _ in range(2)]
    for peer in peers:
        peer.transport = CountingTransport()
    sessions = [_WSTransport(peer, ws) for peer in peers]
    texts = [f'{{"type":"log","n":{i}}}' for i in range(5)]
    for text in texts:
        for session in sessions:
            session.send_text(text)
    assert [p.transport.writes for p in peers] == [0, 0]  # held until the turn ends
    ws.reactor.advance(0)
    for peer in peers:
        assert peer.transport.writes == 1
        assert frames(peer.transport.value()) == [t.encode() for t in texts]
    sessions[0].send_text(texts[0])  # the next turn starts over
    ws.reactor.advance(0)
    assert peers[0].transport.writes == 2 and peers[1].transport.writes == 1


def test_held_frames_are_written_once_a_batch_is_full():
    ws = factory()
    peer = Peer()
    peer.transport = CountingTransport()
    session = _WSTransport(peer, ws)
    text = '{"type":"log","x":"' + "x" * 1000 + '"}'
    sent = 0
    while peer.transport.writes == 0:
        session.send_text(text)
        sent += 1
    assert sent * len(ws.prepared(text).payloadHybi) >= WRITE_BATCH_BYTES
    assert len(frames(peer.transport.value())) == sent  # no reactor turn needed


def test_a_connection_with_per_message_compression_keeps_autobahn_framing():
    ws = factory()
    peer = Peer(compress=object())
    _WSTransport(peer, ws).send_text('{"type":"log"}')
    assert peer.transport.value() == b""
    assert [m.payload for m in peer.prepared] == [b'{"type":"log"}']


def test_nothing_is_sent_on_a_connection_that_is_not_open():
    ws = factory()
    closing = Peer(WebSocketServerProtocol.STATE_CLOSING)
    _WSTransport(closing, ws).send_text("{}")
    assert closing.prepared == [] and closing.transport.value() == b""


def channel(clock, deadline=0.6):
    site = RelaySite(pages.notFound(), headers_deadline=deadline, reactor=clock, timeout=30)
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_request_headers_must_be_complete_before_their_deadline():
    clock = Clock()
    protocol, transport = channel(clock)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n")
    clock.advance(0.599)
    protocol.dataReceived(b"X-Slow: 1\r\n")  # bytes keep coming: the deadline does not move
    assert not transport.disconnecting
    clock.advance(0.001)
    assert transport.disconnected  # aborted


def test_each_request_gets_its_own_headers_deadline():
    clock = Clock()
    protocol, transport = channel(clock)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # complete in time
    clock.advance(10)
    assert not transport.disconnecting and b"404" in transport.value()
    transport.clear()
    protocol.dataReceived(b"GET / HTTP/1.1\r\n")  # the next request starts its own
    clock.advance(0.6)
    assert transport.disconnected


UPGRADE = (b"GET /supervisor HTTP/1.1\r\nHost: localhost:9443\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\nOrigin: https://localhost:9443\r\n"
           b"X-Client-Identity: alice\r\n\r\n")


def frames(data: bytes) -> list[bytes]:
    """The payloads of the unmasked text frames in ``data``."""
    out = []
    while data:
        assert data[0] == 0x81 and data[1] & 0x80 == 0, data[:2]
        length, start = data[1], 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        out.append(data[start:start + length])
        data = data[start + length:]
    return out


def test_a_session_on_an_in_memory_websocket_gets_whole_frames_written_through():
    relay = MemoryRelay(trusted_proxy={"enabled": True, "allowed_remote_addrs": ["192.168.1.1"],
                                       "identity_header": "x-client-identity"})
    target = relay.target()
    relay.register(target)
    ws = DashboardServerFactory(relay.config, relay.hub, reactor=relay.clock)
    protocol = ws.buildProtocol(None)
    transport = StringTransport()  # its peer is 192.168.1.1, the listed proxy
    protocol.makeConnection(transport)
    protocol.dataReceived(UPGRADE)
    relay.clock.advance(0)
    response, rest = transport.value().split(b"\r\n\r\n", 1)
    assert b" 101 " in response.split(b"\r\n")[0]
    (hello,) = frames(rest)
    assert json.loads(hello)["type"] == "server_hello"
    (session,) = relay.hub.sessions.values()
    assert session.identity.principal == "alice"
    transport.clear()
    session.receive(json.dumps({"type": "client_hello", "client_store_id": "s",
                                "resume_cursor": {}}).encode(), False)
    relay.settle()
    event = target.emit_event()
    relay.settle()
    messages = [json.loads(f) for f in frames(transport.value())]
    assert messages[-1] == {"type": "event", "target_id": target.target_id, "event": event}
    assert "state" in [m["type"] for m in messages]


def proxied_upgrade(*identity_lines: bytes) -> bytes:
    """UPGRADE with the given ``X-Client-Identity`` header lines in place of its own."""
    head = UPGRADE.split(b"X-Client-Identity")[0]
    return head + b"".join(b"X-Client-Identity: " + v + b"\r\n" for v in identity_lines) + b"\r\n"


def proxied_relay(*allowed: str) -> MemoryRelay:
    return MemoryRelay(trusted_proxy={"enabled": True, "allowed_remote_addrs": list(allowed),
                                      "identity_header": "x-client-identity"})


def handshake(relay: MemoryRelay, data: bytes, peer=None) -> bytes:
    """The status line the relay's Site answers ``data`` with (peer 192.168.1.1 by default)."""
    site = build_site(relay.config, relay.hub, reactor=relay.clock)
    protocol = site.buildProtocol(None)
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    transport.protocol = protocol  # as a real transport has it (the WebSocket takes it over)
    protocol.dataReceived(data)
    return transport.value().split(b"\r\n", 1)[0]


def test_more_than_one_identity_header_is_refused_not_merged():
    relay = proxied_relay("192.168.1.1")
    assert b" 403 " in handshake(relay, proxied_upgrade(b"CN=alice", b"CN=bob"))
    assert relay.hub.sessions == {}
    assert b" 101 " in handshake(relay, proxied_upgrade(b"CN=alice, O=Ops"))
    (session,) = relay.hub.sessions.values()
    assert session.identity.principal == "CN=alice, O=Ops"


def test_identity_header_is_read_as_utf8_and_refused_when_it_is_not():
    relay = proxied_relay("192.168.1.1")
    assert b" 101 " in handshake(relay, proxied_upgrade("CN=Zoë Šimková".encode("utf-8")))
    (session,) = relay.hub.sessions.values()
    assert session.identity.principal == "CN=Zoë Šimková"
    assert session.identity.client_identity == "trusted_proxy:CN=Zoë Šimková"
    assert b" 403 " in handshake(relay, proxied_upgrade(b"CN=Zo\xeb"))  # Latin-1, not UTF-8
    assert len(relay.hub.sessions) == 1


@pytest.mark.parametrize("allowed, peer, admitted", [
    ("::1", IPv6Address("TCP", "0:0:0:0:0:0:0:1", 5000), True),
    ("0:0:0:0:0:0:0:1", IPv6Address("TCP", "::1", 5000), True),
    ("127.0.0.1", IPv6Address("TCP", "::ffff:127.0.0.1", 5000), True),
    ("::ffff:10.0.0.7", IPv4Address("TCP", "10.0.0.7", 5000), True),
    ("2001:db8::1", IPv6Address("TCP", "2001:DB8:0::1", 5000), True),
    ("::1", IPv6Address("TCP", "::2", 5000), False),
    ("127.0.0.1", IPv6Address("TCP", "::ffff:127.0.0.2", 5000), False),
    ("10.0.0.7", IPv4Address("TCP", "10.0.0.70", 5000), False),
])
def test_allowed_remote_addrs_are_compared_as_addresses(allowed, peer, admitted):
    relay = proxied_relay(allowed)
    status = handshake(relay, proxied_upgrade(b"CN=alice"), peer)
    assert (b" 101 " in status) is admitted, status
    assert len(relay.hub.sessions) == (1 if admitted else 0)


def test_every_response_refuses_to_be_framed():
    relay = MemoryRelay()
    for path in (b"/", b"/index.html", b"/missing.js", b"/js/"):
        # no static files: the placeholder page and 404s are written at once
        site = build_site(relay.config, relay.hub, reactor=relay.clock,
                          static_dir="/nonexistent")
        protocol = site.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head = transport.value().split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
        assert b"content-security-policy: frame-ancestors 'none'" in head, (path, head)
        assert b"x-frame-options: deny" in head, (path, head)


@pytest.mark.parametrize("headers", [
    b"X-Big: " + b"a" * 17000 + b"\r\n",  # one line over the limit
    b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(200)),  # many lines
], ids=["one_long_line", "many_lines"])
def test_oversized_request_headers_get_431_at_once(headers):
    clock = Clock()
    protocol, transport = channel(clock)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers)
    status = transport.value().split(b"\r\n", 1)[0]
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert transport.disconnecting
    protocol.dataReceived(b"\r\n")  # whatever follows is not read as a request
    assert transport.value().count(b"HTTP/1.1") == 1


def test_request_headers_within_the_limit_are_served():
    clock = Clock()
    protocol, transport = channel(clock)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nX-Ok: " + b"c" * 15000 + b"\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 404")
    assert not transport.disconnecting


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One masked (all-zero key) final frame from a client."""
    size = len(payload)
    head = bytes([0x80 | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def opened_session(deadline: float = 10.0):
    relay = MemoryRelay(trusted_proxy={"enabled": True, "allowed_remote_addrs": ["192.168.1.1"],
                                       "identity_header": "x-client-identity"},
                        timeouts={"websocket_frame_seconds": deadline})
    ws = DashboardServerFactory(relay.config, relay.hub, reactor=relay.clock)
    protocol = ws.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(UPGRADE)
    assert b" 101 " in transport.value().split(b"\r\n", 1)[0]
    return relay, protocol, transport


HELLO_FRAME = client_frame(json.dumps({"type": "client_hello", "client_store_id": "s",
                                       "resume_cursor": {}}).encode())


def test_a_frame_that_never_completes_closes_the_session_at_its_deadline():
    relay, protocol, transport = opened_session(deadline=3)
    protocol.dataReceived(HELLO_FRAME)
    relay.clock.advance(1)
    protocol.dataReceived(b"\x88\x9c")  # a close frame whose 28 bytes never come
    relay.clock.advance(2.9)
    assert not transport.disconnecting and len(relay.hub.sessions) == 1
    protocol.dataReceived(b"\0\0")  # bytes keep coming: the deadline does not move
    relay.clock.advance(0.1)
    assert transport.disconnecting
    assert b"frame incomplete after 3 s" in transport.value()
    protocol.connectionLost(Failure(ConnectionDone()))
    assert relay.hub.sessions == {}


@pytest.mark.parametrize("size", [0, 125, 126, 5000, 60000])
def test_frames_that_complete_in_time_in_any_pieces_keep_the_session(size):
    relay, protocol, transport = opened_session(deadline=3)
    protocol.dataReceived(HELLO_FRAME)
    frame = client_frame(json.dumps({"type": "nonsense", "pad": "x" * size}).encode())
    for _ in range(3):  # each frame gets its own deadline
        for index in range(0, len(frame), max(1, len(frame) // 7)):
            protocol.dataReceived(frame[index:index + max(1, len(frame) // 7)])
            relay.clock.advance(0.3)
        relay.clock.advance(5)  # between frames nothing is pending
    assert not transport.disconnecting and len(relay.hub.sessions) == 1
    assert transport.value().count(b"unsupported_message_type") == 3


def test_frame_clock_follows_boundaries_of_every_header_form():
    from supervisor.relay.web.protocol import FrameClock

    clock = FrameClock()
    stream = b"".join(client_frame(b"a" * n) for n in (0, 1, 125, 126, 65535, 65536))
    assert clock.feed(stream) == 6 and not clock.inside_frame
    for cut in (1, 2, 3, 9, 14):
        frame = client_frame(b"z" * 70000)
        assert clock.feed(frame[:cut]) == 0 and clock.inside_frame
        assert clock.feed(frame[cut:]) == 1 and not clock.inside_frame
    unmasked = b"\x81\x05hello"
    assert clock.feed(unmasked) == 1 and not clock.inside_frame


def test_frames_held_for_the_turn_go_out_before_a_close_frame():
    relay = MemoryRelay(trusted_proxy={"enabled": True, "allowed_remote_addrs": ["192.168.1.1"],
                                       "identity_header": "x-client-identity"})
    ws = DashboardServerFactory(relay.config, relay.hub, reactor=relay.clock)
    protocol = ws.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(UPGRADE)
    relay.clock.advance(0)
    (session,) = relay.hub.sessions.values()
    transport.clear()
    session.send_text("log", None, '{"type":"log","n":1}')
    session.transport.close(1000, "bye")  # in the same turn
    data = transport.value()
    assert data.startswith(b'\x81\x14{"type":"log","n":1}')
    assert data[22] == 0x88  # then the close frame
    relay.clock.advance(0)
    assert transport.value() == data  # nothing held back to come after it
