"""IPC connections' outbound queues bounded in bytes as well as in lines (fakes only: a
StringTransport whose producer the test pauses as a full socket buffer would)."""

from __future__ import annotations

import json

from twisted.internet.testing import StringTransport

import pytest

from supervisor.config._common import ConfigError
from supervisor.config.target import IpcConfig, parse_target_config
from supervisor.ipc.server import IpcServer
from supervisor.testing import ManualTask, TreeHarness
from supervisor.tree.spec import ChildKind, ChildSpec, SupervisorSpec
from supervisor.wire.ndjson import OutboundQueue
from tests.ipc_support import SocketBackedTransport

LIMIT = 65536


def queue(max_bytes: int = 1000, max_pending: int = 100):
    transport = StringTransport()
    dropped: list[str] = []
    out = OutboundQueue(transport, max_pending, dropped.append, max_pending_bytes=max_bytes)
    out.pauseProducing()
    return out, transport, dropped


def test_over_the_byte_bound_the_oldest_pushes_go_first():
    out, transport, dropped = queue()
    out.send(b"r" * 99 + b"\n")  # a response: never dropped
    for i in range(5):
        out.send(str(i).encode() * 299 + b"\n", "log")
    assert dropped == ["log", "log"] and out.pending_bytes == 100 + 3 * 300 <= 1000
    out.resumeProducing()
    assert transport.value().split(b"\n")[:-1] == [b"r" * 99] + [
        str(i).encode() * 299 for i in (2, 3, 4)]
    assert out.pending_bytes == 0


def test_only_responses_over_the_byte_bound_close_the_connection():
    out, transport, dropped = queue()
    out.send(b"a" * 600 + b"\n")
    out.send(b"e" * 300 + b"\n", "event")
    out.send(b"b" * 300 + b"\n")  # over: the event goes
    assert dropped == ["event"] and not transport.disconnecting
    out.send(b"c" * 300 + b"\n")  # still over, nothing to drop
    assert transport.disconnecting and out.pending == 0 and out.pending_bytes == 0


def test_one_line_larger_than_the_byte_bound_waits_alone():
    out, transport, dropped = queue()
    out.send(b"s" * 5000 + b"\n")  # a large answer, alone: it waits
    out.send(b"l" * 2000 + b"\n", "log")  # a push that large behind it is dropped
    assert dropped == ["log"] and out.pending == 1 and not transport.disconnecting
    out.resumeProducing()
    assert transport.value() == b"s" * 5000 + b"\n"


def subscribed_connection(**ipc):
    harness = TreeHarness(
        SupervisorSpec(children=[ChildSpec("w", ChildKind.TASK, factory=ManualTask())]),
        target_id="bytes",
    ).start()
    config = IpcConfig(enabled=True, target_id="bytes", path="/unused", **ipc)
    server = IpcServer(harness.supervisor, config, None, harness.clock)
    protocol = server.buildProtocol(None)
    transport = SocketBackedTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(json.dumps({"request_id": "s", "method": "logs.tail", "params": {
        "target_id": "bytes", "session_established": True, "lines": 0}}).encode() + b"\n")
    assert b'"subscription"' in transport.value()
    transport.clear()
    return harness, server, protocol, transport


def test_a_reader_that_stops_reading_holds_at_most_max_pending_push_bytes():
    harness, server, connection, transport = subscribed_connection(
        max_pending_pushes=4096, max_pending_push_bytes=LIMIT)
    transport.producer.pauseProducing()  # the socket buffer is full: the reader stopped
    lines = 200
    for i in range(lines):
        harness.supervisor.tree.log("info", f"{i:04d} " + "z" * 8000, {})
        assert connection.out.pending_bytes <= LIMIT
    assert connection.out.pending < 4096
    assert connection.dropped_logs == lines - connection.out.pending > 0
    assert server.dropped_pushes == {"event": 0, "log": connection.dropped_logs}
    transport.producer.resumeProducing()
    received = [json.loads(line) for line in transport.value().splitlines()]
    logs = [r for r in received if r["type"] == "log"]
    report = received[-1]
    assert report["type"] == "dropped_count"
    assert report["dropped_log_count"] == connection.dropped_logs
    assert len(logs) + report["dropped_log_count"] == lines
    assert logs[-1]["log"]["message"].startswith(f"{lines - 1:04d} ")  # the newest kept


def test_max_pending_push_bytes_is_configured_and_validated():
    ipc = {"enabled": True, "target_id": "t", "path": "/tmp/x.sock"}
    assert parse_target_config({"ipc": ipc}, "/tmp").ipc.max_pending_push_bytes == 8 * 1024 * 1024
    config = parse_target_config({"ipc": {**ipc, "max_pending_push_bytes": 1 << 20}}, "/tmp")
    assert config.ipc.max_pending_push_bytes == 1 << 20
    for bad, rule in ((1000, "must be >= 65536"), ("lots", "must be an integer")):
        with pytest.raises(ConfigError) as e:
            parse_target_config({"ipc": {**ipc, "max_pending_push_bytes": bad}}, "/tmp")
        assert e.value.key == "ipc.max_pending_push_bytes" and rule in str(e.value)
