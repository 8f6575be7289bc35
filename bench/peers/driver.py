"""Clients run under each supervisor's own interpreter: status timing and event subscribers.

Standard library only, except ``circus`` (which needs pyzmq and runs in circus's venv).

    driver.py status ours SOCKET TARGET_ID N        -> prints {"samples": [...seconds], ...}
    driver.py status supervisord SOCKET - N
    driver.py status circus ENDPOINT - N
    driver.py events ours SOCKET TARGET_ID HUB       -> prints "ready", then for every child
    driver.py events circus PUB_ENDPOINT - HUB          exit it sees sends "ev NAME T" to HUB
    driver.py supervisord-listener HUB               (supervisord runs this as its event listener)

Each status sample is one call timed in-process: send the request, read the whole reply and
decode it (JSON for ours and circus, XML-RPC for supervisord), as a client library would.
"""
import http.client
import json
import os
import socket
import sys
import time
import xmlrpc.client

WARMUP = 20


def _send(hub, text):
    sock = _send.sock
    try:
        sock.sendto(text.encode(), hub)
    except OSError:
        pass


_send.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


class _Lines:
    """Newline-framed reader over a stream socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def line(self):
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line, self.buffer = self.buffer[:end], self.buffer[end + 1:]
                return line
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("connection closed")
            self.buffer += data


def _ours_connect(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock, _Lines(sock)


def status_ours(path, target_id):
    sock, lines = _ours_connect(path)
    counter = [0]

    def call():
        counter[0] += 1
        request = {"request_id": "s%d" % counter[0], "method": "status", "params": {"target_id": target_id}}
        sock.sendall(json.dumps(request).encode() + b"\n")
        reply = json.loads(lines.line())
        if not reply.get("ok"):
            raise RuntimeError("status failed: %r" % (reply,))
        return len(reply["result"]["rows"])

    return call


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.unix_path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path):
        super().__init__()
        self.unix_path = path

    def make_connection(self, host):
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        self._connection = host, _UnixHTTPConnection(self.unix_path)
        return self._connection[1]


def status_supervisord(path, _target):
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(path))

    def call():
        return len(proxy.supervisor.getAllProcessInfo())

    return call


def status_circus(endpoint, _target):
    from circus.client import CircusClient, make_message

    client = CircusClient(endpoint=endpoint, timeout=10)

    def call():
        reply = client.call(make_message("status"))
        if reply.get("status") != "ok":
            raise RuntimeError("status failed: %r" % (reply,))
        return len(reply["statuses"])

    return call


def status(kind, address, target_id, n):
    call = {"ours": status_ours, "supervisord": status_supervisord, "circus": status_circus}[kind](
        address, target_id)
    rows = 0
    for _ in range(WARMUP):
        rows = call()
    samples = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        call()
        samples.append(clock() - t0)
    print(json.dumps({"samples": samples, "rows": rows}))


def events_ours(path, target_id, hub):
    sock, lines = _ours_connect(path)
    request = {"request_id": "sub", "method": "events.subscribe",
               "params": {"target_id": target_id, "session_established": True,
                          "since_sequence": (1 << 53) - 1}}
    sock.sendall(json.dumps(request).encode() + b"\n")
    reply = json.loads(lines.line())
    if not reply.get("ok"):
        raise RuntimeError("subscribe failed: %r" % (reply,))
    print("ready", flush=True)
    while True:
        message = json.loads(lines.line())
        if message.get("type") != "event":
            continue
        event = message["event"]
        if event.get("event_type") == "child_exited":
            _send(hub, "ev %s %.9f" % (event.get("child_id"), time.monotonic()))


def events_circus(endpoint, _target, hub):
    import zmq

    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"watcher.")
    sub.connect(endpoint)
    print("ready", flush=True)
    while True:
        topic, body = sub.recv_multipart()
        parts = topic.decode().split(".")
        if len(parts) == 3 and parts[2] == "reap":
            json.loads(body)
            _send(hub, "ev %s %.9f" % (parts[1], time.monotonic()))


def supervisord_listener(hub):
    """supervisord's event listener protocol: READY, header line, payload, RESULT."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        stdout.write(b"READY\n")
        stdout.flush()
        header_line = stdin.readline()
        if not header_line:
            return
        header = dict(token.split(":", 1) for token in header_line.decode().split())
        payload = stdin.read(int(header["len"]))
        if header.get("eventname") == "PROCESS_STATE_EXITED":
            fields = dict(token.split(":", 1) for token in payload.decode().split("\n")[0].split())
            _send(hub, "ev %s %.9f" % (fields.get("processname"), time.monotonic()))
        stdout.write(b"RESULT 2\nOK")
        stdout.flush()


def main(argv):
    if argv[0] == "status":
        status(argv[1], argv[2], argv[3], int(argv[4]))
    elif argv[0] == "events":
        {"ours": events_ours, "circus": events_circus}[argv[1]](argv[2], argv[3], argv[4])
    elif argv[0] == "supervisord-listener":
        supervisord_listener(argv[1])
    else:
        raise SystemExit("unknown driver command %r" % argv[0])


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (KeyboardInterrupt, BrokenPipeError, EOFError):
        os._exit(0)
