"""A lean wss:// dashboard-session client process for the relay fan-out benchmark.

It opens ``--sessions`` sessions to the relay (TLS with the operator's client certificate,
a plain RFC 6455 client: opening handshake, masked ``client_hello``, pong for pings), and
for every ``log`` message of window ``--window`` extracts ``fields.bench_t`` (the target's
``time.time()`` at emission) to record ``receipt - emission``. Frames are parsed by hand
and only the two numbers needed are pulled out of each message, so the client costs a
fraction of what a full autobahn client costs per message; the relay's work is unchanged
(it cannot tell this client from a browser).

Line protocol on stdin/stdout (driven by bench_relay.py):
- the client prints ``ready`` once every session has its first ``state`` (``error ...``
  and exit 1 if a session cannot be opened);
- ``count`` → ``count <messages of the window received> <dropped_count messages seen>``;
- ``report PATH`` → latencies (seconds, float64) written to PATH, then
  ``report {json}`` and the process exits.
"""

from __future__ import annotations

import argparse
import array
import base64
import json
import os
import resource
import struct
import sys
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, reactor, stdio
from twisted.internet.endpoints import SSL4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.protocols.basic import LineReceiver

STATE_PREFIX = b'{"type":"state"'
LOG_PREFIX = b'{"type":"log"'
DROPPED_PREFIX = b'{"type":"dropped_count"'
T_KEY = b'"bench_t":'
W_KEY = b'"bench_w":'


def mask_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (FIN set)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class Stats:
    def __init__(self, window: bytes) -> None:
        self.window = b'"' + window + b'"'  # matched right after ``"bench_w":``
        self.latencies = array.array("d")
        self.received = 0
        self.other_logs = 0
        self.dropped_messages = 0
        self.dropped_last: dict[str, Any] = {}
        self.ready = 0
        self.closed = 0


class LeanSession(Protocol):
    def __init__(self, stats: Stats, host: str, origin: str, opened: defer.Deferred) -> None:
        self.stats = stats
        self.host = host
        self.origin = origin
        self.opened = opened
        self.buf = b""
        self.upgraded = False
        self.got_state = False
        self.fragments: list[bytes] = []

    def connectionMade(self) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write((
            "GET /supervisor HTTP/1.1\r\n"
            f"Host: {self.host}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {self.origin}\r\n\r\n").encode())

    def dataReceived(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            status = buf[:buf.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                if not self.opened.called:
                    self.opened.errback(ConnectionError(status.decode(errors="replace")))
                self.transport.abortConnection()
                return
            self.upgraded = True
            buf = buf[end + 4:]
            self.transport.write(mask_frame(1, json.dumps(
                {"type": "client_hello", "client_store_id": "relaybench",
                 "resume_cursor": {}}).encode()))
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if b1 & 0x80:  # servers never mask; tolerate it anyway
                head += 4
            end = pos + head + n
            if end > size:
                break
            payload = buf[pos + head:end]
            pos = end
            opcode = b0 & 0x0F
            if not b0 & 0x80 or opcode == 0:  # fragmented message
                self.fragments.append(payload)
                if not b0 & 0x80:
                    continue
                payload = b"".join(self.fragments)
                self.fragments = []
                opcode = 1
            if opcode == 1:
                self.message(payload)
            elif opcode == 9:
                self.transport.write(mask_frame(10, payload))
            elif opcode == 8:
                self.transport.write(mask_frame(8, payload[:2]))
                self.transport.loseConnection()
        self.buf = buf[pos:] if pos < size else b""

    def message(self, payload: bytes) -> None:
        stats = self.stats
        if payload.startswith(LOG_PREFIX):
            now = time.time()
            i = payload.find(W_KEY)
            if i < 0 or not payload.startswith(stats.window, i + len(W_KEY)):
                stats.other_logs += 1
                return
            i = payload.find(T_KEY)
            j = i + len(T_KEY)
            k = j
            while payload[k] not in b",}":
                k += 1
            stats.latencies.append(now - float(payload[j:k]))
            stats.received += 1
        elif payload.startswith(STATE_PREFIX):
            if not self.got_state:
                self.got_state = True
                stats.ready += 1
        elif payload.startswith(DROPPED_PREFIX):
            stats.dropped_messages += 1
            stats.dropped_last = json.loads(payload)

    def connectionLost(self, reason: Any = None) -> None:
        self.stats.closed += 1
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"closed before open: {reason}"))


class Control(LineReceiver):
    delimiter = b"\n"

    def __init__(self, stats: Stats, sessions: list[LeanSession]) -> None:
        self.stats = stats
        self.sessions = sessions

    def lineReceived(self, line: bytes) -> None:
        words = line.decode().split()
        if not words:
            return
        if words[0] == "count":
            self.sendLine(f"count {self.stats.received} {self.stats.dropped_messages}".encode())
        elif words[0] == "report":
            with open(words[1], "wb") as f:
                self.stats.latencies.tofile(f)
            s = self.stats
            self.sendLine(b"report " + json.dumps({
                "received": s.received, "other_logs": s.other_logs,
                "dropped_count_messages": s.dropped_messages,
                "dropped_last": s.dropped_last, "closed": s.closed}).encode())
            for session in self.sessions:
                if session.transport is not None:
                    session.transport.abortConnection()
            reactor.callLater(0.05, reactor.stop)

    def say(self, text: str) -> None:
        self.sendLine(text.encode())

    def connectionLost(self, reason: Any = None) -> None:
        # the driver went away (stdin closed): do not linger
        if reactor.running:
            reactor.stop()


async def main(args: argparse.Namespace, stats: Stats, sessions: list[LeanSession],
               control: Control) -> None:
    with open(args.ca, "rb") as f:
        trust = Certificate.loadPEM(f.read())
    with open(args.cert, "rb") as f, open(args.key, "rb") as g:
        # cryptography objects: pyOpenSSL's X509 and PKey are deprecated
        mine = {"certificate": x509.load_pem_x509_certificate(f.read()),
                "privateKey": serialization.load_pem_private_key(g.read(), None)}
    tls = optionsForClientTLS("localhost", trustRoot=trust, extraCertificateOptions=mine)
    host = args.origin.split("://", 1)[1]
    sem = defer.DeferredSemaphore(8)

    async def open_one() -> None:
        opened: defer.Deferred = defer.Deferred()
        proto = LeanSession(stats, host, args.origin, opened)
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", args.port, tls, timeout=30)
        await endpoint.connect(Factory.forProtocol(lambda: proto))
        sessions.append(proto)

    await defer.gatherResults([sem.run(lambda: defer.ensureDeferred(open_one()))
                               for _ in range(args.sessions)], consumeErrors=True)
    deadline = time.monotonic() + args.timeout
    while stats.ready < args.sessions:
        if time.monotonic() > deadline or stats.closed:
            raise RuntimeError(f"only {stats.ready}/{args.sessions} sessions got a state")
        await deferLater(0.01)
    control.say("ready")


def deferLater(seconds: float) -> defer.Deferred:
    from twisted.internet import task
    return task.deferLater(reactor, seconds, lambda: None)


def raise_nofile(needed: int) -> None:
    """Room for ``needed`` descriptors (soft RLIMIT_NOFILE up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def run() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--window", required=True)
    parser.add_argument("--origin", default="https://localhost:9443")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    raise_nofile(args.sessions + 64)
    stats = Stats(args.window.encode())
    sessions: list[LeanSession] = []
    status = [0]

    control = Control(stats, sessions)

    def start() -> None:
        d = defer.ensureDeferred(main(args, stats, sessions, control))

        def failed(f: Any) -> None:
            control.say(f"error {f.getErrorMessage()}")
            status[0] = 1
            reactor.callLater(0.05, reactor.stop)

        d.addErrback(failed)

    # stdout is the control channel: the Control protocol writes its answers through it
    stdio.StandardIO(control)
    reactor.callWhenRunning(start)
    reactor.run()
    sys.exit(status[0])


if __name__ == "__main__":
    run()
