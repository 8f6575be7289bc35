"""A reader that never reads, fed 8 KB log lines: the relay's session queue and the target's
IPC push queue stay within their byte bounds, and so does the process's resident memory.

Real ``twistd`` processes; the flood is a process child writing long lines to its stdout,
released by the test through a FIFO once the stuck reader is in place. Each test waits for
the target to have logged every line (and, for the relay, for a later command's answer, which
travels behind every push) before it reads the queued bytes from ``/metrics`` and the RSS
from ``/proc``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.request
from typing import Any

from rel_support import (
    RawWS,
    RelayProcess,
    TargetProcess,
    client_context,
    rss_kb,
)
from tests.demo_configs import free_port
from tests.waiting import wait_until

LINES = 20000
LINE_CHARS = 8000  # each line about 8 KB, below observability.max_output_line_bytes
BYTE_LIMIT = 1024 * 1024
MIB = 1024 * 1024
#: what a process may grow by besides its queue: its 64-line log journal of 8 KB records,
#: the encoded copies of what it is working on, allocator slack. Either queue unbounded in
#: bytes would hold its 4,096 or 10,000 lines: 32 or 80 MiB.
ALLOWANCE = 16 * MIB
JOURNAL = {"log_journal_capacity": 64}

_FLOOD = (
    "import sys, signal\n"
    "open(sys.argv[1]).read()\n"
    "out = sys.stdout\n"
    "pad = 'x' * int(sys.argv[3])\n"
    "for i in range(int(sys.argv[2])):\n"
    "    out.write('flood %06d %s\\n' % (i, pad))\n"
    "out.flush()\n"
    "signal.pause()\n"
)


def flood_children(fifo: str, lines: int = LINES) -> list[dict[str, Any]]:
    """A ``flood`` child that writes ``lines`` long lines once ``fifo`` is opened, and a
    quiet ``spare`` that commands can be aimed at."""
    os.mkfifo(fifo)
    return [
        {"name": "flood", "kind": "process",
         "command": [sys.executable, "-c", _FLOOD, fifo, str(lines), str(LINE_CHARS)]},
        {"name": "spare", "kind": "task", "callable": "supervisor.demo:steady_worker"},
    ]


def release(fifo: str) -> None:
    """Open the FIFO the flood child waits on, and close it: the child starts writing."""
    fd = os.open(fifo, os.O_WRONLY)
    os.close(fd)


def ipc_call(path: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One request on a fresh IPC connection; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(json.dumps({"request_id": "q", "method": method,
                              "params": params}).encode() + b"\n")
        buffer = b""
        while True:
            chunk = s.recv(1 << 20)
            assert chunk, "the target closed the connection"
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                answer = json.loads(line)
                if answer.get("request_id") == "q":
                    return answer


def all_logged(target: TargetProcess, lines: int = LINES) -> bool:
    """Whether the target's log journal holds the flood's last line."""
    answer = ipc_call(target.ipc_path, "state", {"target_id": target.target_id})
    logs = answer["result"]["state"]["recent_logs"]
    return any(log["message"].startswith(f"flood {lines - 1:06d} ") for log in logs)


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` as ``{'name{labels}': value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def stuck_ipc_subscriber(target: TargetProcess) -> socket.socket:
    """A connection that follows the logs and then never reads again."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(target.ipc_path)
    s.sendall(json.dumps({"request_id": "s", "method": "logs.tail", "params": {
        "target_id": target.target_id, "session_established": True, "lines": 0}}).encode()
        + b"\n")
    buffer = b""
    while b'"subscription"' not in buffer:
        chunk = s.recv(65536)
        assert chunk, "the target closed the subscription"
        buffer += chunk
    return s


def test_a_never_reading_ipc_subscriber_holds_at_most_the_byte_bound(sockdir, procs):
    fifo = os.path.join(sockdir, "go")
    metrics_port = free_port()
    target = TargetProcess(
        sockdir, "flooded", os.path.join(sockdir, "no-relay.sock"),
        children=flood_children(fifo),
        ipc={"max_pending_push_bytes": BYTE_LIMIT, "registration": {"enabled": False}},
        observability={**JOURNAL,
                       "prometheus": {"listen": f"tcp:{metrics_port}:interface=127.0.0.1"}})
    procs.append(target)
    target.start_and_wait()
    stuck = stuck_ipc_subscriber(target)
    try:
        before = rss_kb(target.pid) * 1024
        release(fifo)
        wait_until(lambda: all_logged(target), 60, "every flood line logged", interval=0.1)
        samples = scrape(metrics_port)
        queued = samples['supervisor_ipc_push_queue_bytes{aggregate="max"}']
        dropped = samples['supervisor_ipc_pushes_dropped_total{kind="log"}']
        growth = rss_kb(target.pid) * 1024 - before
        assert queued <= BYTE_LIMIT, queued
        # all but what the queue and the socket's kernel buffers (well under 1 MiB) hold
        assert dropped >= LINES - (BYTE_LIMIT + MIB) // LINE_CHARS, dropped
        assert growth < BYTE_LIMIT + ALLOWANCE, f"the target grew by {growth / MIB:.1f} MiB"
        assert target.alive(), target.output()
    finally:
        stuck.close()


def _open(port: int, ctx: Any, *, rcvbuf: int | None = None) -> RawWS:
    ws = RawWS(port, ctx)
    if rcvbuf is not None:
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    ws.upgrade()
    assert ws.recv_json()["type"] == "server_hello"
    ws.send_json({"type": "client_hello", "client_store_id": "bytes", "resume_cursor": {}})
    return ws


def _until(ws: RawWS, predicate: Any) -> dict[str, Any]:
    while True:
        message = ws.recv_json()
        if predicate(message):
            return message


def test_a_never_reading_session_holds_at_most_the_byte_bound(sockdir, pki, procs):
    fifo = os.path.join(sockdir, "go")
    metrics_port = free_port()
    relay = RelayProcess(sockdir, pki,
                         limits={"session_queue": 10000, "session_queue_bytes": BYTE_LIMIT},
                         metrics={"listen": f"tcp:{metrics_port}"})
    procs.append(relay)
    relay.start_and_wait()
    target = TargetProcess(sockdir, "flooded", relay.registration_path, interval=2, lease=30,
                           children=flood_children(fifo), observability=JOURNAL)
    procs.append(target)
    target.start_and_wait()
    wait_until(lambda: "flooded" in relay_targets(metrics_port), 30, "target registered")
    ctx = client_context(pki, pki.operator, sockdir)
    stuck = _open(relay.port, ctx, rcvbuf=4096)
    reader = _open(relay.port, ctx)
    try:
        for ws in (stuck, reader):
            _until(ws, lambda m: m["type"] == "state" and m["target_id"] == "flooded")
        # the reader follows only the spare child: the flood is not for it
        reader.send_json({"type": "log_event_filter_conditions", "target_ids": [],
                          "child_paths": ["/root/spare"], "lifecycle_states": [],
                          "event_types": [], "severities": [], "sequence_min": None,
                          "correlation_id": None})
        before = rss_kb(relay.pid) * 1024
        release(fifo)
        wait_until(lambda: all_logged(target), 60, "every flood line logged", interval=0.1)
        # a command's answer travels behind every push the target sent before it
        reader.send_json({"type": "command", "command_id": "barrier", "correlation_id": None,
                          "target_id": "flooded", "command": "pause_child",
                          "target": {"child_path": "/root/spare"}, "reason": "barrier",
                          "confirmed": False, "requested_by": None})
        result = _until(reader, lambda m: m["type"] == "command_result")
        assert result["result"]["status"] == "completed", result
        samples = scrape(metrics_port)
        queued = samples['relay_session_queue_bytes{aggregate="max"}']
        dropped = samples['relay_session_dropped_total{kind="log"}']
        growth = rss_kb(relay.pid) * 1024 - before
        assert queued <= BYTE_LIMIT, queued
        assert dropped > 0, dropped
        assert growth < BYTE_LIMIT + ALLOWANCE, f"the relay grew by {growth / MIB:.1f} MiB"
        assert relay.alive(), relay.output()
    finally:
        stuck.close()
        reader.close()


def relay_targets(metrics_port: int) -> str:
    """The relay's metrics text (a registered target shows in ``relay_targets_registered``)."""
    samples = scrape(metrics_port)
    return "flooded" if samples.get("relay_targets_registered", 0) >= 1 else ""
