"""The WebSocket end of a dashboard session (autobahn), carrying a :class:`Session`.

Identity is settled in the opening handshake: in mTLS mode from the verified peer
certificate, in trusted-proxy mode from the configured header, accepted only when the TCP
peer is a listed proxy address. A browser's ``Origin`` must be ``public_url``'s or one of
``listen.allowed_origins`` (browsers send client certificates with cross-site requests too,
so this is what stops another site's page from opening a session as the user). Refusals are
HTTP 403/503 answers to the handshake.

A message fanned out to many sessions is prepared once (``factory.prepareMessage``) and sent
to each with ``sendPreparedMessage``: server frames are not masked, so its bytes are the same
for every session. Writes then reach the transport without autobahn's per-write debug
formatting (see :meth:`DashboardServerProtocol.sendData`), and a session's frames of one
reactor turn reach TLS as one write (see :class:`_WSTransport`).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.logger import Logger

from supervisor.config.relay import RelayConfig
from supervisor.relay.auth import Identity, identity_from_certificate, identity_from_proxy_header
from supervisor.relay.session import CLOSE_PROTOCOL_ERROR, Session
from supervisor.wire.errors import WireError
from supervisor.wire.turns import WRITE_BATCH_BYTES, EndOfTurn

__all__ = ["DashboardServerProtocol", "DashboardServerFactory"]


class FrameClock:
    """Follows the frame boundaries of a client's byte stream (RFC 6455 §5.2 headers and
    lengths only) to say whether a frame has begun and not yet ended.

    autobahn waits for a frame as long as the connection lives; a frame that never completes
    would hold its session until the ping timeout or longer. The protocol arms a deadline when
    a frame begins and clears it when the frame ends."""

    def __init__(self) -> None:
        self._header = bytearray()  # of the frame being read, until it is complete
        self._payload_left = 0  # payload bytes of the current frame still to come

    @property
    def inside_frame(self) -> bool:
        return bool(self._header) or self._payload_left > 0

    def feed(self, data: bytes) -> int:
        """Consume ``data``; returns how many frames it completed."""
        completed, view, i = 0, memoryview(data), 0
        while i < len(view):
            if self._payload_left:
                step = min(self._payload_left, len(view) - i)
                self._payload_left -= step
                i += step
                if not self._payload_left:
                    completed += 1
                continue
            self._header.append(view[i])
            i += 1
            need = _header_length(self._header)
            if need is not None and len(self._header) == need:
                self._payload_left = _payload_length(self._header)
                self._header.clear()
                if not self._payload_left:
                    completed += 1
        return completed


def _header_length(header: bytearray) -> int | None:
    """The full header length once its first two bytes are known."""
    if len(header) < 2:
        return None
    size = header[1] & 0x7F
    return 2 + (2 if size == 126 else 8 if size == 127 else 0) + (4 if header[1] & 0x80 else 0)


def _payload_length(header: bytearray) -> int:
    size = header[1] & 0x7F
    if size == 126:
        return int.from_bytes(header[2:4], "big")
    if size == 127:
        return int.from_bytes(header[2:10], "big")
    return size


class DashboardServerProtocol(WebSocketServerProtocol):
    """Adapts autobahn callbacks to the session and paces writes by transport back-pressure;
    a frame from the client must end ``timeouts.websocket_frame_seconds`` after it began."""

    # no ``log`` attribute here: autobahn's txaio logger (level-filtered) must stay in place
    factory: "DashboardServerFactory"
    _relay_identity: Identity | None = None
    _relay_session: Session | None = None
    _frame_clock: FrameClock | None = None  # from the first byte after the handshake
    _frame_timer: Any = None
    _ws_transport: "_WSTransport | None" = None

    def dataReceived(self, data: bytes) -> None:
        opened_before = self._frame_clock is not None
        super().dataReceived(data)
        if not opened_before:
            if self.state != _OPEN:
                return
            # the handshake ended in this chunk: frames start after the request's blank line
            self._frame_clock = FrameClock()
            end = data.find(b"\r\n\r\n")
            data = data[end + 4:] if end >= 0 else b""
        clock = self._frame_clock
        assert clock is not None
        if clock.feed(data) and self._frame_timer is not None:
            self._cancel_frame_timer()
        if clock.inside_frame and self._frame_timer is None and self.state == _OPEN:
            self._frame_timer = self.factory.reactor.callLater(
                self.factory.relay_config.timeouts.websocket_frame_seconds,
                self._frameTimedOut)

    def _cancel_frame_timer(self) -> None:
        timer, self._frame_timer = self._frame_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _frameTimedOut(self) -> None:
        self._frame_timer = None
        seconds = self.factory.relay_config.timeouts.websocket_frame_seconds
        self.factory.relay_log.info(
            "session {session_id}: a frame from {peer} still incomplete after {seconds:g} s;"
            " closing", session_id=getattr(self._relay_session, "session_id", None),
            peer=self.transport.getPeer() if self.transport is not None else None,
            seconds=seconds)
        if self.state == _OPEN:
            self.sendClose(CLOSE_PROTOCOL_ERROR, f"frame incomplete after {seconds:g} s")
        if self.transport is not None:
            self.transport.loseConnection()

    def onConnect(self, request: ConnectionRequest) -> None:
        hub = self.factory.hub
        origin = request.origin
        if origin and not self.factory.relay_config.listen.admits_origin(origin):
            # a missing Origin is a non-browser client: no page of another site behind it
            self.factory.relay_log.warn(
                "WebSocket handshake from origin {origin} refused: not public_url's origin "
                "nor in listen.allowed_origins", origin=origin[:200])
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "origin not allowed")
        if not hub.can_accept_session():
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, "too many sessions")
        self._relay_identity = self.factory.identify(self, request)
        return None  # no subprotocol

    _hello_timer: Any = None

    def onOpen(self) -> None:
        assert self._relay_identity is not None
        self._ws_transport = _WSTransport(self, self.factory)
        session = self.factory.hub.open_session(self._relay_identity, self._ws_transport)
        self._relay_session = session
        # a peer that opens the WebSocket but never says client_hello would hold a session
        # slot (limits.max_sessions) for as long as it answers pings: bound it
        self._hello_timer = self.factory.reactor.callLater(
            self.factory.relay_config.timeouts.websocket_open_handshake_seconds,
            self._helloTimedOut)
        # twisted.web's HTTPChannel registered itself on this transport before the upgrade
        try:
            self.transport.unregisterProducer()
        except Exception:
            pass
        self.transport.registerProducer(session.outbox, True)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """Write ``data`` to the transport. autobahn's own ``sendData`` builds the arguments
        of a debug log line on every write, whatever the log level: some 30 times the cost
        of the write, and most of a fan-out's. The relay never asks for synchronous or
        chopped writes; those keep autobahn's queueing. Frames the session holds for the
        end of the turn go first."""
        if self._ws_transport is not None:
            self._ws_transport.flush()
        if sync or chopsize:
            super().sendData(data, sync, chopsize)
        else:
            self.transport.write(data)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._relay_session is not None:
            self._relay_session.receive(payload, isBinary)

    def _helloTimedOut(self) -> None:
        self._hello_timer = None
        session = self._relay_session
        if session is None or session.established or session.closed:
            return
        seconds = self.factory.relay_config.timeouts.websocket_open_handshake_seconds
        session.send_error(WireError("protocol_error", "session",
                                     f"no client_hello within {seconds:g} s"))
        session.transport.close(CLOSE_PROTOCOL_ERROR, "no client_hello")

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        timer, self._hello_timer = self._hello_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self._cancel_frame_timer()
        session, self._relay_session = self._relay_session, None
        if session is not None:
            session.lost()


_OPEN = WebSocketServerProtocol.STATE_OPEN

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(host: Any) -> Address | None:
    """``host`` as an IP address, IPv4-mapped IPv6 ones as IPv4; None if it is none."""
    if not isinstance(host, str):
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class _WSTransport:
    """The SessionTransport of one WebSocket connection.

    Frames sent during a reactor turn are joined and handed to the transport once, at the
    end of the turn (or as soon as :data:`WRITE_BATCH_BYTES` of them wait): TLS turns every
    write into a record of its own, and a fan-out of k messages per turn would otherwise
    encrypt k records per session. Anything autobahn itself writes (pings, close frames)
    flushes them first, so the order on the wire stays the order of sending."""

    def __init__(self, protocol: WebSocketServerProtocol,
                 factory: "DashboardServerFactory") -> None:
        self._protocol = protocol
        self._factory = factory
        self._prepared = factory.prepared
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def send_text(self, text: str) -> None:
        """One message to this session. Without per-message compression (the relay never
        negotiates it) the prepared frame's bytes are all there is to write: this runs once
        per message and session, so autobahn's two calls per write are skipped."""
        protocol = self._protocol
        if protocol.state != _OPEN:
            return
        prepared = self._prepared(text)
        if protocol.websocket_extensions_in_use:  # per-message compression frames per session
            self.flush()
            protocol.sendPreparedMessage(prepared)
            return
        data = prepared.payloadHybi
        if not self._pending:
            self._factory.end_of_turn.add(self)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= WRITE_BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the frames held for this turn, joined."""
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        self._pending = []
        self._pending_bytes = 0
        transport = self._protocol.transport
        if transport is not None:
            transport.write(data)

    def close(self, code: int, reason: str) -> None:
        if self._protocol.state == _OPEN:
            self._protocol.sendClose(code, reason)  # flushes first (sendData)


class DashboardServerFactory(WebSocketServerFactory):
    """Holds the hub and the identity rules for :class:`DashboardServerProtocol`."""

    protocol = DashboardServerProtocol
    relay_log = Logger()

    def __init__(self, config: RelayConfig, hub: Any, *, reactor: Any) -> None:
        super().__init__(url=config.listen.public_url, reactor=reactor)
        self.hub = hub
        self.relay_config = config
        self._prepared_text: str | None = None
        self._prepared = self.prepareMessage(b"")
        #: flushes the frames each session holds at the end of the turn they were sent in
        self.end_of_turn = EndOfTurn(reactor)
        self._proxy_addresses = frozenset(
            a for a in map(_address, config.trusted_proxy.allowed_remote_addrs) if a is not None)
        t = config.timeouts
        max_bytes = config.limits.max_message_bytes
        self.setProtocolOptions(
            # origins are checked in onConnect (exact, 403 and a log line), not by autobahn
            allowedOrigins=["*"],
            allowNullOrigin=True,
            maxMessagePayloadSize=max_bytes,
            maxFramePayloadSize=max_bytes,
            autoPingInterval=t.auto_ping_interval_seconds,
            autoPingTimeout=t.auto_ping_timeout_seconds,
            openHandshakeTimeout=t.websocket_open_handshake_seconds,
            closeHandshakeTimeout=t.websocket_close_handshake_seconds,
        )

    def _trusted_peer(self, host: Any) -> bool:
        """Whether ``host`` is a listed proxy, compared as an address (``::1`` is
        ``0:0:0:0:0:0:0:1``; an IPv4-mapped IPv6 peer is its IPv4 address)."""
        address = _address(host)
        return address is not None and address in self._proxy_addresses

    def prepared(self, text: str) -> PreparedMessage:
        """``text`` as a prepared WebSocket message. A fan-out hands every session the same
        str object, so remembering the last one prepares each message once."""
        if text is not self._prepared_text:
            self._prepared = self.prepareMessage(text.encode("utf-8"))
            self._prepared_text = text
        return self._prepared

    def identify(self, protocol: WebSocketServerProtocol, request: ConnectionRequest
                 ) -> Identity:
        """The session identity, or ConnectionDeny."""
        proxy = self.relay_config.trusted_proxy
        if proxy.enabled:
            peer = protocol.transport.getPeer()
            host = getattr(peer, "host", None)
            if not self._trusted_peer(host):
                self.relay_log.warn("identity header from unlisted peer {peer} refused",
                                    peer=host)
                raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "peer is not a trusted proxy")
            value = request.headers.get(proxy.identity_header)
            if not isinstance(value, str) or not value.strip():
                raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "missing identity header")
            try:
                # autobahn reads header bytes as ISO-8859-1 (one character per byte): undo
                # that and read them as the UTF-8 the proxy writes
                value = value.encode("iso-8859-1").decode("utf-8")
            except UnicodeError:
                self.relay_log.warn("identity header from {peer} is not UTF-8; refused",
                                    peer=host)
                raise ConnectionDeny(ConnectionDeny.FORBIDDEN,
                                     "identity header is not UTF-8") from None
            return identity_from_proxy_header(value)
        get_cert = getattr(protocol.transport, "getPeerCertificate", None)
        cert = get_cert() if get_cert is not None else None
        if cert is None:
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "client certificate required")
        return identity_from_certificate(cert.to_cryptography())
