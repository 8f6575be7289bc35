"""A lean wss:// dashboard-session client process for the relay fan-out benchmark.

It opens ``--sessions`` sessions to the relay (TLS with the operator's client certificate,
a plain RFC 6455 client: opening handshake, masked ``client_hello``, pong for pings), and
for every ``log`` message of window ``--window`` extracts ``fields.bench_t`` (the target's
``time.time()`` at emission) to record ``receipt - emission``. Frames are parsed by hand
and only the two numbers needed are pulled out of each message; TLS is the standard
library's ``ssl`` on non-blocking sockets under one ``selectors`` loop (no Twisted, no
pyOpenSSL memory BIO), so the clients' own cost per message, which shares the machine's
cores with the relay and shows in the latencies, stays a fraction of a full client's. The
relay's work is unchanged (it cannot tell this client from a browser).

Line protocol on stdin/stdout (driven by bench_relay.py):
- the client prints ``ready`` once every session has its first ``state`` (``error ...``
  and exit 1 if a session cannot be opened);
- with ``--expect-targets N`` it also records, per session, the seconds from sending
  ``client_hello`` to the first ``target_list`` holding at least N targets (sessions are
  opened one after the other, each read alone until its list is complete);
- ``count`` → ``count <messages of the window received> <dropped_count messages seen>
  <state messages received>``;
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
import selectors
import socket
import ssl
import struct
import sys
import time
from typing import Any

STATE_PREFIX = b'{"type":"state"'
LOG_PREFIX = b'{"type":"log"'
DROPPED_PREFIX = b'{"type":"dropped_count"'
LIST_PREFIX = b'{"type":"target_list"'
T_KEY = b'"bench_t":'
W_KEY = b'"bench_w":'
READ_SIZE = 262144


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
    def __init__(self, window: bytes, expect_targets: int = 0) -> None:
        self.window = b'"' + window + b'"'  # matched right after ``"bench_w":``
        self.expect_targets = expect_targets
        self.list_delays: list[float] = []
        self.latencies = array.array("d")
        self.received = 0
        self.other_logs = 0
        self.dropped_messages = 0
        self.dropped_last: dict[str, Any] = {}
        self.ready = 0
        self.states = 0
        self.closed = 0


class LeanSession:
    """One established WebSocket over a non-blocking TLS socket."""

    def __init__(self, stats: Stats, sock: ssl.SSLSocket, rest: bytes, hello_at: float
                 ) -> None:
        self.stats = stats
        self.sock = sock
        self.buf = b""
        self.got_state = False
        self.closed = False
        self.hello_at = hello_at  # when client_hello went out
        self.listed = False
        self.fragments: list[bytes] = []
        if rest:
            self.feed(rest)

    def write(self, data: bytes) -> None:
        """Rare control frames (pong, close): written blocking, then back to non-blocking."""
        try:
            self.sock.setblocking(True)
            self.sock.sendall(data)
            self.sock.setblocking(False)
        except OSError:
            self.lost()

    def readable(self) -> None:
        chunks = []
        while True:
            try:
                chunk = self.sock.recv(READ_SIZE)
            except (ssl.SSLWantReadError, BlockingIOError):
                break
            except (ssl.SSLError, OSError):
                chunk = b""
            if not chunk:
                if chunks:
                    self.feed(b"".join(chunks))
                self.lost()
                return
            chunks.append(chunk)
        if chunks:
            self.feed(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def lost(self) -> None:
        if not self.closed:
            self.closed = True
            self.stats.closed += 1

    def feed(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, size = 0, len(buf)
        message = self.message
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
                message(payload)
            elif opcode == 9:
                self.write(mask_frame(10, payload))
            elif opcode == 8:
                self.write(mask_frame(8, payload[:2]))
                self.lost()
        self.buf = buf[pos:] if pos < size else b""

    def message(self, payload: bytes) -> None:
        stats = self.stats
        if payload.startswith(LOG_PREFIX):
            now = time.time()
            i = payload.find(W_KEY)
            if i < 0 or not payload.startswith(stats.window, i + len(W_KEY)):
                stats.other_logs += 1
                return
            j = payload.find(T_KEY) + len(T_KEY)
            k = payload.find(b",", j)
            m = payload.find(b"}", j)
            if k < 0 or 0 <= m < k:
                k = m
            stats.latencies.append(now - float(payload[j:k]))
            stats.received += 1
        elif payload.startswith(STATE_PREFIX):
            stats.states += 1
            if not self.got_state:
                self.got_state = True
                stats.ready += 1
        elif payload.startswith(LIST_PREFIX):
            if not self.listed and stats.expect_targets:
                now = time.time()
                if len(json.loads(payload)["targets"]) >= stats.expect_targets:
                    self.listed = True
                    stats.list_delays.append(now - self.hello_at)
        elif payload.startswith(DROPPED_PREFIX):
            stats.dropped_messages += 1
            stats.dropped_last = json.loads(payload)


def open_session(args: argparse.Namespace, context: ssl.SSLContext, stats: Stats,
                 host: str) -> LeanSession:
    """Connect, TLS handshake, WebSocket upgrade and ``client_hello``, all blocking."""
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=30)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((
        "GET /supervisor HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {args.origin}\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before open")
        buf += chunk
    end = buf.find(b"\r\n\r\n")
    status = buf[:buf.find(b"\r\n")]
    if b" 101 " not in status + b" ":
        sock.close()
        raise ConnectionError(status.decode(errors="replace"))
    sock.sendall(mask_frame(1, json.dumps(
        {"type": "client_hello", "client_store_id": "relaybench",
         "resume_cursor": {}}).encode()))
    hello_at = time.time()
    sock.setblocking(False)
    session = LeanSession(stats, sock, buf[end + 4:], hello_at)
    if stats.expect_targets:  # read this session alone until its list is complete
        deadline = time.monotonic() + args.timeout
        with selectors.DefaultSelector() as one:
            one.register(sock, selectors.EVENT_READ)
            while not session.listed and not session.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectionError("no complete target_list in time")
                if one.select(left):
                    session.readable()
    return session


def raise_nofile(needed: int) -> None:
    """Room for ``needed`` descriptors (soft RLIMIT_NOFILE up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


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
    parser.add_argument("--expect-targets", type=int, default=0)
    args = parser.parse_args()
    raise_nofile(args.sessions + 64)
    stats = Stats(args.window.encode(), args.expect_targets)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(args.ca)
    context.load_cert_chain(args.cert, args.key)
    host = args.origin.split("://", 1)[1]
    selector = selectors.DefaultSelector()
    sessions: list[LeanSession] = []
    try:
        for _ in range(args.sessions):
            session = open_session(args, context, stats, host)
            sessions.append(session)
            selector.register(session.sock, selectors.EVENT_READ, session)
    except (OSError, ConnectionError) as e:
        say(f"error {e}")
        sys.exit(1)
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
    control = b""
    deadline = time.monotonic() + args.timeout
    announced = False
    while True:
        if not announced:
            if stats.ready >= args.sessions:
                say("ready")
                announced = True
            elif time.monotonic() > deadline or stats.closed:
                say(f"error only {stats.ready}/{args.sessions} sessions got a state")
                sys.exit(1)
        for key, _ in selector.select(0.1 if not announced else None):
            session = key.data
            if session is not None:
                session.readable()
                if session.closed:
                    selector.unregister(session.sock)
                    session.sock.close()
                continue
            chunk = os.read(sys.stdin.fileno(), 4096)
            if not chunk:  # the driver went away: do not linger
                sys.exit(0)
            control += chunk
            while b"\n" in control:
                line, control = control.split(b"\n", 1)
                words = line.decode().split()
                if not words:
                    continue
                if words[0] == "count":
                    say(f"count {stats.received} {stats.dropped_messages} {stats.states}")
                elif words[0] == "report":
                    with open(words[1], "wb") as f:
                        stats.latencies.tofile(f)
                    say("report " + json.dumps({
                        "received": stats.received, "other_logs": stats.other_logs,
                        "dropped_count_messages": stats.dropped_messages,
                        "dropped_last": stats.dropped_last, "closed": stats.closed,
                        "target_list_s": stats.list_delays}))
                    for s in sessions:
                        s.sock.close()
                    sys.exit(0)


if __name__ == "__main__":
    run()
